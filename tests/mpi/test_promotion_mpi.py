"""Multi-fidelity promotion under real MPI: two Horovod groups of two ranks, promotions handed to whichever group
is free, each training state sent back to the master and on to the group that continues it."""
import json

from launchers import MENNDL, mpirun
from search_jobs import rows, write_config

RUNGS = {"unit": "epochs", "min_budget": 0.5, "max_budget": 2.0, "eta": 2, "data": [0.5, 1.0, 1.0]}


def test_two_groups_promote_asynchronously_and_end_with_the_winner_at_the_top(elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 8},
                          training={"epochs": 2, "rungs": RUNGS})
    out = mpirun(5, MENNDL, "run", str(config), "--no-progress", timeout=420, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "job"
    stored = rows(run_dir)
    keys = [(int(r["id"]), int(r["rung"])) for r in stored]
    assert len(keys) == len(set(keys)) > 8
    assert sorted(i for i, rung in keys if rung == 0) == list(range(8))
    for i, rung in keys:
        assert rung == 0 or keys.index((i, rung - 1)) < keys.index((i, rung))
    promoted = [r for r in stored if r["rung"] != "0"]
    assert {r["group"] for r in promoted} == {"0", "1"} or len(promoted) == 1
    for r in promoted:  # continued from its lower rung's state, not from scratch
        assert r["status"] == "ok" and int(r["epochs"]) < float(r["budget"])
    record = json.loads((run_dir / "best" / "result.json").read_text())
    assert record["rung"] == 2 and record["status"] == "ok"
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["finished"] is True and summary["best_rung"] == 2
