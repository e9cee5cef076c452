#!/usr/bin/env python
"""What a multi-objective run's Pareto front buys: each front member's test metric and inference latency, and the
speed-up of the fastest network within a tolerance of the most accurate (MENNDL's was 16x on cancer pathology at
equal accuracy, Patton et al. 2019).

For each network in RUN/pareto/ (and best/), in this one process: the test-split metric (with the network's own
calibration, as `menndl predict` reads it) and the latency re-timed here, on the CPU with `--threads` torch threads,
on the task's latency batch (ElemNet: 256 compositions; STEM: 4 images of 256x256), the median of `--repeats`
timings of `train.latency.seconds_per_sample` each. The latency the search measured (on a busy node, during the
search) is printed beside it. The most accurate member is the best test metric; the fastest within `--tolerance`
of it is the quickest member whose test metric is at most that much worse; the speed-up is their latency ratio.

    python benchmarks/pareto_speedup.py runs/stem_pareto --tolerance 0.02
    python benchmarks/pareto_speedup.py runs/elemnet_pareto --tolerance 0.005
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import code_version, table  # noqa: E402 (puts this checkout first on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.02, help="in the task's metric (default 0.02)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from menndl_py import config as config_module
    from menndl_py.commands.common import ensure_data, task_of
    from menndl_py.rundir import RunDir
    from menndl_py.rundir.networks import calibrated, load_network
    from menndl_py.train.latency import seconds_per_sample
    from menndl_py.train.trainer import score_split

    torch.set_num_threads(args.threads)
    run = RunDir(args.run)
    cfg = config_module.load(run.config)
    task = task_of(cfg)
    ensure_data(task)
    space = task.space().restricted(cfg.search.space)
    per, what = task.latency_per
    hib = task.higher_is_better
    members = {str(i): run.pareto / str(i) for i in run.member_ids(run.pareto)}
    best_id = None
    if run.has_trained_network():
        best_id = str(load_network(run.best, space)[2].get("id"))
        members.setdefault(best_id, run.best)
    rows = []
    for name, where in sorted(members.items(), key=lambda item: int(item[0])):
        genome, model, record = load_network(where, space)
        calibrated(task, where, record, lambda note: None)
        test = score_split(model, task, "test", cfg.training.eval_batch_size)[task.metric]
        batch = task.latency_batch(genome)
        latency = statistics.median(seconds_per_sample(model, batch) for _ in range(args.repeats))
        rows.append({"id": name, "params": record.get("params"), "val": record.get(f"val_{task.metric}"),
                     "test": test, "latency": latency * per, "searched": (record.get("latency") or float("nan")) * per,
                     "front": name in {str(i) for i in run.member_ids(run.pareto)}, "default": name == best_id})
    front = [r for r in rows if r["front"]] or rows
    accurate = max(front, key=lambda r: r["test"] if hib else -r["test"])
    within = [r for r in front if (accurate["test"] - r["test"] if hib else r["test"] - accurate["test"])
              <= args.tolerance]
    fastest = min(within, key=lambda r: r["latency"])
    print(table(["id", "params", f"val {task.metric}", f"test {task.metric}", f"s per {what} (here)",
                 f"s per {what} (in the search)", "front", "default"],
                [[r["id"], f"{r['params']:,}", f"{r['val']:.4f}", f"{r['test']:.4f}", f"{r['latency']:.3g}",
                  f"{r['searched']:.3g}", "yes" if r["front"] else "", "yes" if r["default"] else ""] for r in rows],
                title=f"{run.path}: the Pareto front ({len(front)} networks), {args.threads} thread(s), "
                      f"{code_version()}"))
    print(f"most accurate: id {accurate['id']}, test {task.metric} {accurate['test']:.4f}, "
          f"{accurate['latency']:.3g} s per {what}")
    print(f"fastest within {args.tolerance:g} {task.unit} of it: id {fastest['id']}, test {task.metric} "
          f"{fastest['test']:.4f}, {fastest['latency']:.3g} s per {what}: "
          f"speed-up {accurate['latency'] / fastest['latency']:.1f}x")


if __name__ == "__main__":
    main()
