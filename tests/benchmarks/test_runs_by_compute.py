"""benchmarks/runs_by_compute.py: a run's best so far against the compute it spent."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from runs_by_compute import at, progress  # noqa: E402


def row(i, end, seconds, ranks, rung, fitness, status="ok"):
    return {"id": i, "end_time": end, "train_seconds": seconds, "ranks": ranks, "rung": rung, "fitness": fitness,
            "status": status}


def test_compute_is_summed_in_the_order_rows_ended_and_a_higher_rung_ranks_first():
    rows = [row(1, 30.0, 10.0, 2, 0, 0.5), row(0, 10.0, 10.0, 2, 0, 0.3), row(2, 40.0, 5.0, 4, 0, None, "error"),
            row(0, 50.0, 20.0, 2, 1, 0.4)]
    history = progress(rows, higher_is_better=False)
    assert [spent for spent, _ in history] == [20.0, 40.0, 60.0, 100.0]
    assert [best["id"] for _, best in history] == [0, 0, 0, 0]
    assert [best["rung"] for _, best in history] == [0, 0, 0, 1]  # 0.4 at rung 1 beats 0.3 at rung 0
    assert at(history, 10.0) is None and at(history, 60.0)["fitness"] == 0.3 and at(history, 1e9)["rung"] == 1
    assert progress(rows, higher_is_better=True)[1][1]["id"] == 1  # 0.5 beats 0.3 the other way
