#!/usr/bin/env python
"""Do short budgets rank networks as the full budget does? Each rung's fitness against the top rung's.

N networks of a config's search space (its seed genomes first, then random ones, seeded) are each trained through
every rung of the config's `training.rungs` (or `--budgets`), each rung continuing from the state the one below left,
exactly as a promoted candidate is, in this one process on the config's data with `cluster.threads_per_rank` threads
(or `--threads`). Printed: each network's fitness per rung; per rung, the Spearman rank correlation with the top
rung, whether the rung's best is the top rung's best, the top-rung regret of picking by that rung, and how many of
the rung's best 1/eta stay in the top rung's best 1/eta (what ASHA's promotion relies on). JSON in `--out`. Reports;
does not assert.

    python benchmarks/rung_ranking.py configs/elemnet.yaml --genomes 12 --budgets 5,15,45,135
    python benchmarks/rung_ranking.py configs/stem_defects.yaml --genomes 8
    python benchmarks/rung_ranking.py --quick     # 4 ElemNet networks on 2,000 rows, 1-3-9 epochs: under a minute
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from pathlib import Path

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)


def networks(space, seeds: list, n: int, seed: int) -> list:
    """The seed genomes, then distinct random genomes the space accepts, `n` in all."""
    from menndl_py.errors import CandidateRefused

    rng, chosen = random.Random(seed), list(seeds[:n])
    while len(chosen) < n:
        genome = space.sample(rng)
        try:
            space.cost(genome)
        except CandidateRefused:
            continue
        if genome not in chosen:
            chosen.append(genome)
    return chosen


def ranking(fitness: list[list[float]], eta: float, higher_is_better: bool) -> list[dict]:
    """Per rung: Spearman with the top rung, whether its best is the top's best, the top-rung regret of its pick,
    and the share of its best 1/eta that is in the top rung's best 1/eta (networks ok at every rung)."""
    from scipy.stats import spearmanr

    sign = -1.0 if higher_is_better else 1.0
    top = [f[-1] for f in fitness]
    keep = max(1, math.ceil(len(fitness) / eta))
    best_top = set(sorted(range(len(top)), key=lambda i: sign * top[i])[:keep])
    rows = []
    for k in range(len(fitness[0])):
        at = [f[k] for f in fitness]
        order = sorted(range(len(at)), key=lambda i: sign * at[i])
        rows.append({"rung": k, "spearman": float(spearmanr(at, top).statistic) if len(at) > 2 else float("nan"),
                     "picks_top_best": order[0] == min(range(len(top)), key=lambda i: sign * top[i]),
                     "regret": sign * (top[order[0]] - min(top, key=lambda v: sign * v)) + 0.0,  # not -0.0
                     "kept_share": len(best_top & set(order[:keep])) / keep})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", nargs="?", default=str(REPO / "configs" / "elemnet.yaml"))
    p.add_argument("--genomes", type=int, default=12, help="networks to train through every rung")
    p.add_argument("--budgets", help="rung budgets in the rungs' unit, comma-separated (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="which random networks")
    p.add_argument("--threads", type=int, help="torch threads (default: the config's cluster.threads_per_rank)")
    p.add_argument("--quick", action="store_true", help="4 ElemNet networks, 2,000 rows, 1-3-9 epochs")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)

    import torch

    from menndl_py import config
    from menndl_py.commands.common import ensure_data, task_of
    from menndl_py.engine.evaluator import make_trainer
    from menndl_py.records import Status
    from menndl_py.search.seeds import seed_genomes
    from menndl_py.train.device import set_threads
    from menndl_py.train.group import LocalGroup
    from menndl_py.train.trainer import Stage

    cfg = config.load(args.config)
    if args.quick:
        cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, options={
            **cfg.task.options, "train_size": 2000, "val_size": 1000}), training=dataclasses.replace(
            cfg.training, rungs=config.RungsConfig("epochs", 1, 9, 3)))
        args.genomes = 4
    rungs = cfg.training.rungs
    if rungs is None:
        raise SystemExit(f"{args.config}: training.rungs is not set; nothing to rank")
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else rungs.budgets
    shares = list(rungs.data) if rungs.data and not args.budgets else [1.0] * len(budgets)
    task = task_of(cfg)
    ensure_data(task)
    threads = set_threads(args.threads or cfg.cluster.threads_per_rank, 1)
    space = task.space().restricted(cfg.search.space)
    genomes = networks(space, seed_genomes(cfg.search.seed_genomes, task.baseline_genomes(), space),
                       args.genomes, args.seed)
    trainer = make_trainer(cfg, task, LocalGroup(), torch.device("cpu"))
    print(f"rung_ranking: {task.name}, {len(genomes)} networks, rungs {', '.join(f'{b:g}' for b in budgets)} "
          f"{rungs.unit}, data shares {shares}, {threads} threads\n  {code_version()}", flush=True)

    start, records = time.perf_counter(), []
    for i, genome in enumerate(genomes):
        state, fitness = None, []
        for k, (budget, share) in enumerate(zip(budgets, shares)):
            out = task.evaluate(genome, trainer, f"rank{i}", Stage(rungs.unit, budget, share, state,
                                                                  keep=k < len(budgets) - 1))
            if out.status != Status.OK:
                fitness = None
                print(f"  network {i}: {out.status} at rung {k}: {out.message}", flush=True)
                break
            state = out.state
            fitness.append(out.fitness)
        records.append({"genome": genome.to_json(), "fitness": fitness})
        if fitness:
            print(f"  network {i}: " + "  ".join(f"{f:.4f}" for f in fitness), flush=True)

    ok = [r["fitness"] for r in records if r["fitness"]]
    rows = ranking(ok, rungs.eta, task.higher_is_better) if len(ok) >= 2 else []
    print()
    print(table(["rung", "budget", "Spearman with top", "picks top's best", f"top-rung regret ({task.unit})",
                 f"best 1/{rungs.eta:g} kept"],
                [[r["rung"], f"{budgets[r['rung']]:g} {rungs.unit}", f"{r['spearman']:.2f}",
                  "yes" if r["picks_top_best"] else "no", f"{r['regret']:.4f}", f"{r['kept_share']:.0%}"]
                 for r in rows], f"{len(ok)} of {len(records)} networks ok at every rung"))
    print(f"\n{time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"rung_ranking_{task.name}{'_quick' if args.quick else ''}.json"
    (out / name).write_text(json.dumps({"config": args.config, "budgets": budgets, "unit": rungs.unit,
                                        "threads": threads, "networks": records, "ranking": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
