"""`menndl retrain`: the best network of a run trained again from scratch (or on from its weights) into RUN/final/,
in one process or data-parallel over the ranks it was launched on, with clear errors."""
import json

import pytest
import yaml
from launchers import MENNDL, menndl, mpirun, one_line_error


@pytest.mark.slow
@pytest.mark.mpi
def test_retrain_writes_a_scored_final_network_on_one_or_two_ranks_and_bad_calls_are_one_line(tmp_path):
    options = {"size": 9, "train_volumes": 24, "val_volumes": 6, "test_volumes": 6}
    cfg = {"run": {"name": "h", "directory": "runs"}, "task": {"name": "homogenization", "options": options},
           "search": {"population": 2, "max_evaluations": 2, "space": {"depth": [1, 2]},
                      "seed_genomes": []},
           "training": {"epochs": 2, "eval_batch_size": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    out = menndl("retrain", "runs/h", "--budget", "30", "--epochs", "3", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    final = tmp_path / "runs" / "h" / "final"
    result = json.loads((final / "result.json").read_text())
    assert result["epochs"] == 3 and result["budget_seconds"] == 30 and result["test_mae_pct"] > 0
    assert json.loads((final / "genome.json").read_text()) == json.loads(
        (tmp_path / "runs" / "h" / "best" / "genome.json").read_text())
    assert (final / "model.pt").stat().st_size > 0
    assert "written to runs/h/final" in out.stdout + out.stderr
    # on from the search's weights: its first epoch starts where the search left the network (from scratch, the
    # same seed would give the very same first epoch)
    out = menndl("retrain", "runs/h", "--budget", "30", "--epochs", "1", "--warm-start", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    warm = json.loads((final / "result.json").read_text())
    assert warm["warm_start"] and not result["warm_start"]
    assert warm["curve"][0]["train_loss"] < result["curve"][0]["train_loss"]
    # launched on two ranks: one network trained by both (Horovod), written once by rank 0
    out = mpirun(2, MENNDL, "retrain", "runs/h", "--budget", "30", "--epochs", "2", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("retraining ") == 1 and "2 ranks with Horovod" in out.stdout
    assert out.stdout.count("written to runs/h/final") == 1
    both = json.loads((final / "result.json").read_text())
    assert both["ranks"] == 2 and both["epochs"] == 2 and both["test_mae_pct"] > 0 and not both["warm_start"]
    # a retrained network that validates worse than the search's is said to
    record = tmp_path / "runs" / "h" / "best" / "result.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "m:val_mae_pct": 1e-9}))
    out = menndl("retrain", "runs/h", "--budget", "30", "--epochs", "1", cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "is worse than the search's 0.0000 for this network" in out.stdout, out.stderr
    assert one_line_error(menndl("retrain", "runs/h", "--budget", "0", cwd=tmp_path)) == \
        "--budget: must be > 0 seconds, got 0.0"
    assert one_line_error(menndl("retrain", "elsewhere", cwd=tmp_path)).startswith("elsewhere/config.yaml: missing")
    assert one_line_error(menndl("retrain", "runs/h", "--network", "ensemble", cwd=tmp_path)) == \
        "runs/h/ensemble.json: missing; a search with search.keep_top (2 or more) writes it when it ends"


def test_predict_takes_the_retrained_network_when_there_is_one(tmp_path):
    from menndl_py.rundir import RunDir

    network_dir = lambda path: RunDir(path).network_to_use()  # noqa: E731
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "model.pt").write_bytes(b"x")
    assert network_dir(tmp_path) == tmp_path / "best"
    (tmp_path / "final").mkdir()
    assert network_dir(tmp_path) == tmp_path / "best"  # an unfinished retrain
    (tmp_path / "final" / "model.pt").write_bytes(b"x")
    assert network_dir(tmp_path) == tmp_path / "final"
