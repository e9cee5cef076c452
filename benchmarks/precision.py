#!/usr/bin/env python
"""What bf16 costs in accuracy, and gains in time, on the quick start's network: ElemNet's hand-made MLP.

The hand-made MLP (512-512-256-128, SiLU, AdamW, batch 512; the quick start's seed network, as `menndl baseline`
trains it) is trained on the data and settings of `configs/elemnet.yaml` (all 239,121 training compounds, 10,000
validation, the whole test split; cosine learning rate), once with `training.precision: fp32` and once with
`bf16` (`--precision fp16` for fp16), for the same number of epochs (not seconds: a budget of seconds would let the
machine's load change how far each trains), from the same seed, on one torch thread (`--threads`; on a machine
shared with others, two threads that wait for each other at every operation measure the load more than the
arithmetic). Both are scored like a candidate (validation) and like `menndl baseline` scores its networks (test),
each in its own precision. Prints both MAEs and the time ratio (training wall clock, and this process's CPU
seconds, which other users' load does not enter). It reports; it does not assert.

    python benchmarks/precision.py                 # 8 epochs each: about 3 min
    python benchmarks/precision.py --quick         # 20,000 training rows, 2 epochs each: about 15 s
    python benchmarks/precision.py --inputs mat2vec
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)


def train(cfg, genome, precision: str) -> dict:
    """The hand-made MLP trained and scored with `cfg.training` at `precision`, as `menndl baseline` does."""
    from menndl_py.commands.common import task_of
    from menndl_py.engine.evaluator import make_trainer
    from menndl_py.train.device import pick_device
    from menndl_py.train.group import LocalGroup
    from menndl_py.train.trainer import score_split

    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, precision=precision))
    task = task_of(cfg)
    trainer = make_trainer(cfg, task, LocalGroup(), pick_device(0))
    cpu0 = time.process_time()
    outcome = task.evaluate(genome, trainer)
    cpu = time.process_time() - cpu0
    if outcome.status != "ok":
        raise RuntimeError(f"{precision}: {outcome.status}: {outcome.message}")
    test = score_split(outcome.model, task, "test", cfg.training.eval_batch_size, precision)
    return {"epochs": outcome.epochs, "train_seconds": outcome.train_seconds, "cpu_seconds": cpu,
            "val_mae": outcome.metrics["val_mae"], "test_mae": test["mae"],
            "last_loss": outcome.curve[-1]["train_loss"]}


def main(argv=None) -> int:
    from menndl_py.tasks.elemnet.descriptors import INPUTS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "elemnet.yaml"))
    p.add_argument("--epochs", type=int, default=None, help="epochs each (default 8; --quick 2)")
    p.add_argument("--quick", action="store_true", help="20,000 training rows, 2 epochs each")
    p.add_argument("--precision", choices=("bf16", "fp16"), default="bf16", help="set against fp32 (default bf16)")
    p.add_argument("--inputs", choices=INPUTS, default=None, help="the MLP's input (default its own: fractions)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", default=None, help="directory with elemnet.h5 (default: the config's task.data_dir "
                                                    "if it holds it, else the repository's data/)")
    args = p.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 8)

    import torch

    from menndl_py import config
    from menndl_py.commands.common import ensure_data, task_of
    from menndl_py.genome import Genome
    from menndl_py.tasks.elemnet.task import HAND_MLP
    from menndl_py.train.device import set_threads

    cfg = config.load(args.config)
    data_dir = args.data_dir or (cfg.task.data_dir if Path(cfg.task.data_dir, "elemnet.h5").exists()
                                 else str(REPO / "data"))
    options = {**cfg.task.options, **({"train_size": 20000} if args.quick else {})}
    cfg = dataclasses.replace(
        cfg, task=dataclasses.replace(cfg.task, data_dir=data_dir, options=options),
        training=dataclasses.replace(cfg.training, rungs=None, time_budget=None, epochs=epochs),
        cluster=dataclasses.replace(cfg.cluster, candidate_timeout=7 * 24 * 3600.0))
    task = task_of(cfg)
    ensure_data(task)
    genome = task.baseline_genomes()[HAND_MLP]
    if args.inputs:
        genome = Genome(genome.layers, {**genome.training, "inputs": args.inputs})
    threads = set_threads(args.threads, 1)
    print(f"precision: torch {torch.__version__}, {threads} threads, CPU\n  {code_version()}\n  {args.config}: "
          f"{HAND_MLP} on {genome.training['inputs']}, {epochs} epochs, {cfg.training.lr_schedule} learning rate, "
          f"data {task.data_path}", flush=True)
    results = {}
    for precision in ("fp32", args.precision):
        results[precision] = train(cfg, genome, precision)
        r = results[precision]
        print(f"  {precision}: {r['epochs']} epochs in {r['train_seconds']:.1f} s ({r['cpu_seconds']:.1f} CPU s), "
              f"validation MAE {r['val_mae']:.4f}, test MAE {r['test_mae']:.4f} eV/atom", flush=True)
    print()
    print(table(["precision", "epochs", "training s", "CPU s (whole evaluation)", "last train loss",
                 "val MAE (eV/atom)", "test MAE (eV/atom)"],
                [[k, r["epochs"], f"{r['train_seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['last_loss']:.4f}",
                  f"{r['val_mae']:.4f}", f"{r['test_mae']:.4f}"] for k, r in results.items()],
                f"== {HAND_MLP} on {genome.training['inputs']}, {epochs} epochs, fp32 against {args.precision} =="))
    fp32, low = results["fp32"], results[args.precision]
    print(f"\n{args.precision} / fp32: training time {low['train_seconds'] / fp32['train_seconds']:.3f}, CPU time "
          f"{low['cpu_seconds'] / fp32['cpu_seconds']:.3f}; MAE {args.precision} - fp32: validation "
          f"{low['val_mae'] - fp32['val_mae']:+.4f}, test {low['test_mae'] - fp32['test_mae']:+.4f} eV/atom")
    return 0


if __name__ == "__main__":
    sys.exit(main())
