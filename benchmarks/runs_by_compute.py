#!/usr/bin/env python
"""Searches compared by the compute they spent: best-so-far validation fitness against rank-seconds of training.

For each run directory, its rows in the order they ended; the compute after a row is the sum, over the rows ended
by then, of the seconds each trained (one rung's training, not counting the rungs below) times its group's ranks
(with `cluster.threads_per_rank` 1, as this project's configs set it here, CPU-seconds of training on a machine
with a core per thread). The best so far is the master's: a higher rung first, then the fitness. Printed at
shares of the smallest run's compute, so the runs are compared at equal compute; with `--also METRIC` a result
metric of that best row too (say `experimental_mean_disorientation` for EBSD). Reports; does not assert.

    python benchmarks/runs_by_compute.py runs/ebsd runs/ebsd_inherit --also experimental_mean_disorientation
"""
from __future__ import annotations

import argparse

from common import code_version, table  # noqa: E402 (puts this checkout first on sys.path)

from menndl_py.rundir.layout import RunDir  # noqa: E402
from menndl_py.rundir.results import read_rows  # noqa: E402

SHARES = (0.25, 0.5, 0.75, 1.0)


def progress(rows: list[dict], higher_is_better: bool) -> list[tuple[float, dict]]:
    """(compute so far, best row so far) after each of a run's rows, in the order they ended."""
    sign = 1.0 if higher_is_better else -1.0
    spent, best, out = 0.0, None, []
    for row in sorted(rows, key=lambda r: r["end_time"]):
        spent += row["train_seconds"] * row["ranks"]
        if row["status"] == "ok" and (best is None or (row["rung"], sign * row["fitness"]) >
                                      (best["rung"], sign * best["fitness"])):
            best = row
        out.append((spent, best))
    return out


def at(history: list[tuple[float, dict]], compute: float) -> dict | None:
    """The best row once `compute` was spent (the last before it)."""
    best = None
    for spent, row in history:
        if spent > compute * (1 + 1e-9):
            break
        best = row
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--also", action="append", default=[], metavar="METRIC", help="a result metric to show")
    args = parser.parse_args()
    hib = {RunDir(r).read_run_json()["higher_is_better"] for r in args.run_dirs}
    if len(hib) != 1:
        raise SystemExit("runs_by_compute: the runs must share their metric's direction")
    higher_is_better = hib.pop()
    histories = {r: progress(read_rows(RunDir(r).results), higher_is_better) for r in args.run_dirs}
    budget = min(h[-1][0] for h in histories.values() if h)
    print(f"runs_by_compute: {code_version()}\n  compared at shares of {budget:.0f} rank-seconds of training "
          f"(the smallest run's)")
    header = ["run", "rows", "rank-s in all", *(f"best at {s:g}" for s in SHARES), *args.also]
    lines = []
    for run_dir, history in histories.items():
        bests = [at(history, s * budget) for s in SHARES]
        cells = [f"{b['fitness']:.4g} (id {b['id']}, rung {b['rung']})" if b else "-" for b in bests]
        extra = [f"{bests[-1].get('m:' + m, float('nan')):.4g}" if bests[-1] else "-" for m in args.also]
        lines.append([run_dir, len(history), f"{history[-1][0]:.0f}" if history else "0", *cells, *extra])
    print(table(header, lines))


if __name__ == "__main__":
    main()
