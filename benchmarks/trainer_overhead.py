#!/usr/bin/env python
"""Training throughput of menndl's Trainer against a plain PyTorch loop, in one process, interleaved.

Both train the same ElemNet-sized network (a fixed genome: 4 dense layers of 256, ReLU, batch 128, Adam, lr 1e-3),
built by the task's search space from the same seed, on the same ElemNet training tensors (a subset), for the same
number of epochs and steps, on the CPU. menndl's side is ``Trainer(..., LocalGroup(), ...).evaluate(genome)``
with no time budget; the plain side is::

    for epoch: order = randperm; for batch: forward, L1 loss, zero_grad, backward, step

Samples/s = epochs x steps x batch / training seconds (menndl: the Trainer's own ``train_seconds``; plain: the
loop above timed with perf_counter). The two alternate (ABBA order), and the ratio menndl/plain is taken within
each pair; its median is compared with the target (>= 0.95). On a machine shared with others, the wall clock
also counts time the process waited for a core, so the script also prints the ratio of samples per CPU second of
this process (whole evaluation), which other users' load does not enter. Both also score the validation split, and
the two validation MAEs are printed: equal MAEs show that the two loops did the same arithmetic. The script reports; it
does not assert.

Then the Trainer in fp32 against the Trainer in bf16 (`training.precision`; `--precision fp16` for fp16 with its
gradient scaler): the same genome, data and seed, in interleaved pairs (ABBA) too; the paired median of the
throughput ratio bf16/fp32, wall clock and CPU time, and both validation MAEs (bf16 computes differently, so they
differ a little).

    python benchmarks/trainer_overhead.py            # 20,000 rows, 5 epochs, 9 + 9 pairs: about 2.5 min
    python benchmarks/trainer_overhead.py --quick    # 5,000 rows, 3 epochs, 3 + 3 pairs: about 25 s
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)

TARGET = 0.95


def find_data(data_dir: str | None, scratch: Path) -> Path:
    """A directory holding elemnet.h5: --data-dir, ./data, the repository's data/, a link to
    /tmp/elemnet_full.h5, or one made now."""
    for d in ([data_dir] if data_dir else ["data", REPO / "data"]):
        if (Path(d) / "elemnet.h5").exists():
            return Path(d)
    if data_dir:
        target = Path(data_dir)
    else:
        target = scratch / "data"
    target.mkdir(parents=True, exist_ok=True)
    full = Path("/tmp/elemnet_full.h5")
    if full.exists():
        os.symlink(full, target / "elemnet.h5")
        return target
    from menndl_py.tasks.elemnet.task import ElemNetTask

    print(f"making the ElemNet data set in {target} (about 10 s)", flush=True)
    print(ElemNetTask(data_dir=target).make_data(), flush=True)
    return target


def make_genome(width: int, depth: int, batch: int):
    from menndl_py.genome import Genome

    layers = [{"width": width, "activation": "relu", "dropout": 0.0, "batch_norm": False}] * depth
    return Genome(layers, {"learning_rate": 1e-3, "batch_size": batch, "optimizer": "adam", "weight_decay": 0.0})


def plain_pytorch(space, genome, data: dict, epochs: int, seed: int) -> dict:
    """The reference: the textbook loop, nothing else (on the data's device)."""
    import torch
    import torch.nn.functional as F

    from menndl_py.train.trainer import candidate_seed

    x, y = data["train"]
    genes = genome.training
    torch.manual_seed(candidate_seed(seed, genome.key))
    model = space.build(genome).to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=genes["learning_rate"], weight_decay=genes["weight_decay"])
    batch = genes["batch_size"]
    steps = len(x) // batch
    shuffle = torch.Generator().manual_seed(candidate_seed(seed, genome.key))
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=shuffle)
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            loss = F.l1_loss(model(x[idx]).squeeze(-1), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)  # the queued steps are part of the training
    seconds = time.perf_counter() - start
    model.eval()
    xv, yv = data["val"]
    with torch.no_grad():
        err = sum(float((model(xv[i:i + 4096]).squeeze(-1).double() - yv[i:i + 4096].double()).abs().sum())
                  for i in range(0, len(xv), 4096))
    return {"seconds": seconds, "samples": epochs * steps * batch, "val_mae": err / len(xv)}


def menndl_trainer(trainer, genome, epochs: int) -> dict:
    outcome = trainer.evaluate(genome)
    if outcome.status != "ok":
        raise RuntimeError(f"menndl's trainer failed: {outcome.status}: {outcome.message}")
    batch = genome.training["batch_size"]
    steps = len(trainer.data["train"][0]) // batch
    return {"seconds": outcome.train_seconds, "samples": epochs * steps * batch, "val_mae": outcome.fitness,
            "epochs": outcome.epochs, "model": outcome.model}


def precision_pairs(fp32, low, genome, epochs: int, repeats: int, title: str) -> None:
    """Interleaved pairs of the same training by Trainer `fp32` and Trainer `low` (bf16 or fp16): throughput,
    the paired ratio low/fp32, and the validation MAEs."""
    import torch

    names = ("fp32", low.budget.precision)
    trainers = dict(zip(names, (fp32, low)))
    samples = {n: [] for n in names}
    cpu_samples = {n: [] for n in names}
    maes = {n: [] for n in names}
    ratios, cpu_ratios = [], []
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        pair, cpu_pair = {}, {}
        for who in order:
            cpu0 = time.process_time()
            out = menndl_trainer(trainers[who], genome, epochs)
            cpu = time.process_time() - cpu0
            pair[who], cpu_pair[who] = out["samples"] / out["seconds"], out["samples"] / cpu
            samples[who].append(pair[who])
            cpu_samples[who].append(cpu_pair[who])
            maes[who].append(out["val_mae"])
        ratios.append(pair[names[1]] / pair["fp32"])
        cpu_ratios.append(cpu_pair[names[1]] / cpu_pair["fp32"])
        print(f"  pair {r + 1} ({' then '.join(order)}): fp32 {pair['fp32']:,.0f} samples/s, {names[1]} "
              f"{pair[names[1]]:,.0f} samples/s, ratio {ratios[-1]:.3f} (CPU time: {cpu_ratios[-1]:.3f})",
              flush=True)
    print()
    print(table(["Trainer precision", "median samples/s", "min", "max", "samples per CPU second",
                 "val MAE (eV/atom)"],
                [[who, f"{statistics.median(samples[who]):,.0f}", f"{min(samples[who]):,.0f}",
                  f"{max(samples[who]):,.0f}", f"{statistics.median(cpu_samples[who]):,.0f}", f"{maes[who][-1]:.6f}"]
                 for who in names],
                f"== Trainer in fp32 against {names[1]}: {title}, {torch.get_num_threads()} torch thread(s), "
                f"{repeats} interleaved pairs =="))
    print()
    print(table([f"{names[1]} / fp32", "median", "min", "max"],
                [["samples/s, training loop, wall clock", f"{statistics.median(ratios):.3f}", f"{min(ratios):.3f}",
                  f"{max(ratios):.3f}"],
                 ["samples per CPU second, whole evaluation", f"{statistics.median(cpu_ratios):.3f}",
                  f"{min(cpu_ratios):.3f}", f"{max(cpu_ratios):.3f}"]]))
    print(f"validation MAE: fp32 {maes['fp32'][-1]:.6f}, {names[1]} {maes[names[1]][-1]:.6f} eV/atom "
          f"({names[1]} - fp32: {maes[names[1]][-1] - maes['fp32'][-1]:+.6f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="5,000 rows, 3 epochs, 3 pairs")
    p.add_argument("--rows", type=int, default=None, help="training rows (default 20000)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training (default 5)")
    p.add_argument("--repeats", type=int, default=None, help="pairs of (menndl, plain) trainings, and of (fp32, "
                                                                   "bf16) ones (default 9)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the machine is "
                                                          "shared, one thread is the steadiest measurement)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("bf16", "fp16"), default="bf16",
                   help="the training.precision set against fp32 (default bf16)")
    p.add_argument("--data-dir", help="directory with elemnet.h5 (default: ./data or the repository's data/, else "
                                      "/tmp/elemnet_full.h5, else it is made)")
    args = p.parse_args(argv)
    rows = args.rows or (5000 if args.quick else 20000)
    epochs = args.epochs or (3 if args.quick else 5)
    repeats = args.repeats or (3 if args.quick else 9)

    import torch

    from menndl_py.tasks.elemnet.task import ElemNetTask
    from menndl_py.train.group import LocalGroup
    from menndl_py.train.trainer import Budget, Trainer

    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="menndl-trainer-overhead-"))
    try:
        data_dir = find_data(args.data_dir, scratch)
        task = ElemNetTask({"train_size": rows, "val_size": 5000}, data_dir=data_dir)
        data = {split: tuple(torch.as_tensor(a) for a in task.load(split)) for split in ("train", "val")}
        space = task.space()
        genome = make_genome(args.width, args.depth, args.batch)
        params, _ = space.cost(genome)
        trainer = Trainer(task, space, LocalGroup(), data, Budget(epochs, None, 1e9, 4096),
                          device=torch.device("cpu"), seed=args.seed)
        print(f"trainer_overhead: torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
              f"interop threads {torch.get_num_interop_threads()}, CPU\n  {code_version()}")
        print(f"  data {data_dir / 'elemnet.h5'}: {len(data['train'][0]):,} training rows, "
              f"{len(data['val'][0]):,} validation rows")
        print(f"  genome: {args.depth} x dense {args.width} relu, {params:,} parameters, batch {args.batch}, adam "
              f"lr 1e-3, {epochs} epochs ({len(data['train'][0]) // args.batch} steps each), {repeats} pairs",
              flush=True)

        # warm-up (allocator, kernels, first-call costs), not counted
        warm = Trainer(task, space, LocalGroup(), data, Budget(1, None, 1e9, 4096), device=torch.device("cpu"),
                       seed=args.seed)
        menndl_trainer(warm, genome, 1)
        plain_pytorch(space, genome, data, 1, args.seed)

        samples = {"menndl": [], "plain": []}  # training loop, wall clock
        cpu_samples = {"menndl": [], "plain": []}  # whole evaluation (build, train, score), this process's CPU time
        ratios, cpu_ratios, maes = [], [], {"menndl": [], "plain": []}
        for r in range(repeats):
            order = ("menndl", "plain") if r % 2 == 0 else ("plain", "menndl")
            pair, cpu_pair = {}, {}
            for who in order:
                cpu0 = time.process_time()
                out = menndl_trainer(trainer, genome, epochs) if who == "menndl" else \
                    plain_pytorch(space, genome, data, epochs, args.seed)
                cpu = time.process_time() - cpu0
                pair[who] = out["samples"] / out["seconds"]
                cpu_pair[who] = out["samples"] / cpu
                samples[who].append(pair[who])
                cpu_samples[who].append(cpu_pair[who])
                maes[who].append(out["val_mae"])
            ratios.append(pair["menndl"] / pair["plain"])
            cpu_ratios.append(cpu_pair["menndl"] / cpu_pair["plain"])
            print(f"  pair {r + 1} ({' then '.join(order)}): menndl {pair['menndl']:,.0f} samples/s, plain "
                  f"{pair['plain']:,.0f} samples/s, ratio {ratios[-1]:.3f} (CPU time: {cpu_ratios[-1]:.3f})",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    rows_out = []
    for who in ("menndl", "plain"):
        s = samples[who]
        rows_out.append([f"{who} ({'Trainer, LocalGroup' if who == 'menndl' else 'PyTorch loop'})",
                         f"{statistics.median(s):,.0f}", f"{min(s):,.0f}", f"{max(s):,.0f}",
                         f"{statistics.median(cpu_samples[who]):,.0f}", f"{maes[who][-1]:.6f}"])
    print(table(["training loop", "median samples/s", "min", "max", "samples per CPU second",
                 "val MAE (eV/atom)"], rows_out,
                f"== Trainer overhead: {args.depth} x dense {args.width}, batch {args.batch}, {epochs} epochs, "
                f"{torch.get_num_threads()} torch thread(s), {repeats} interleaved pairs =="))
    print()
    ratio = statistics.median(ratios)
    per_step_us = 1e6 * args.batch * (1 / statistics.median(samples["menndl"])
                                      - 1 / statistics.median(samples["plain"]))
    print(table(["menndl / plain", "median", "min", "max", "target", "met"],
                [["samples/s, training loop, wall clock", f"{ratio:.3f}", f"{min(ratios):.3f}", f"{max(ratios):.3f}",
                  f">= {TARGET:.2f}", "yes" if ratio >= TARGET else "NO"],
                 ["samples per CPU second, whole evaluation", f"{statistics.median(cpu_ratios):.3f}",
                  f"{min(cpu_ratios):.3f}", f"{max(cpu_ratios):.3f}", f">= {TARGET:.2f}",
                  "yes" if statistics.median(cpu_ratios) >= TARGET else "NO"]]))
    print("(ratios are paired: each pair of trainings ran back to back. The CPU-time row counts only this "
          "process's CPU seconds, so time taken by other users of the machine does not enter it; it covers the "
          "whole evaluation: build, train, score.)")
    print()
    same = all(abs(a - b) <= 1e-5 * max(abs(b), 1e-12) for a, b in zip(maes["menndl"], maes["plain"]))
    print(f"extra time per step in menndl's loop: {per_step_us:+.0f} us (of "
          f"{1e6 * args.batch / statistics.median(samples['plain']):.0f} us per plain step); validation MAEs "
          f"{'identical' if same else 'DIFFERENT'} (the two loops {'did' if same else 'did not do'} the same "
          f"arithmetic)")

    print()
    low = Trainer(task, space, LocalGroup(), data, Budget(epochs, None, 1e9, 4096, precision=args.precision),
                  device=torch.device("cpu"), seed=args.seed)
    warm = Trainer(task, space, LocalGroup(), data, Budget(1, None, 1e9, 4096, precision=args.precision),
                   device=torch.device("cpu"), seed=args.seed)
    menndl_trainer(warm, genome, 1)  # warm-up of the autocast kernels, not counted
    precision_pairs(trainer, low, genome, epochs, repeats,
                    f"{args.depth} x dense {args.width}, batch {args.batch}, {epochs} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
