#!/usr/bin/env python
"""What storing a 2-D conv net's weights channels-last (NHWC) gains on this CPU, in training and inference.

Random networks of a config's search space (and the task's hand-made ones) are built twice, once as PyTorch lays
them out (NCHW) and once as training and `menndl predict` lay them out on a CPU (`device.laid_out`: channels-last),
from the same weights. Each trains a few steps of its genome's batch size on random inputs of the task's shape
(Adam; the loss is the mean square of the outputs, whose backward pass costs what any loss's does), and runs
inference in batches of 256, the two layouts taking turns. Times are this process's CPU seconds on one torch
thread (`--threads`), so other users' load does not enter them. Prints each network's ratio (NCHW time /
channels-last time: above 1 means channels-last is faster) and the median. It reports; it does not assert.

    python benchmarks/channels_last.py configs/ebsd.yaml              # 8 random networks and the hand-made ones
    python benchmarks/channels_last.py configs/stem_defects.yaml --networks 4
"""
from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time

from common import code_version, machine_load, table  # noqa: E402 (puts this checkout first on sys.path)

INFER_BATCH = 256


def seconds(model, x, steps: int, train: bool) -> float:
    """CPU seconds per step of training on x (or per pattern of inference), after one step to warm up."""
    import torch

    model.train(train)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4) if train else None

    def step():
        if train:
            loss = model(x).float().pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    step()
    started = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - started) / steps / (1 if train else len(x))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a config whose task takes 2-D images (ebsd, stem_defects, images, ...)")
    parser.add_argument("--networks", type=int, default=8, help="random networks of the space (default 8)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps of each layout, each network")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from menndl_py.commands.common import task_of
    from menndl_py.config import load
    from menndl_py.errors import CandidateRefused
    from menndl_py.train.device import laid_out

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(code_version())
    cfg = load(args.config)
    task = task_of(cfg)
    full, space = task.space(), task.space().restricted(cfg.search.space)
    if len(space.input_shape) != 3:
        sys.exit(f"channels_last.py: {args.config}: the task's inputs are {space.input_shape}, not channels × H × W")
    rng = random.Random(args.seed)
    genomes = list(task.baseline_genomes().items())
    while len(genomes) < len(task.baseline_genomes()) + args.networks:
        genome = space.sample(rng)
        try:
            space.cost(genome)
        except CandidateRefused:
            continue
        genomes.append((f"random {len(genomes)}", genome))

    rows, ratios = [], {"train": [], "infer": []}
    for name, genome in genomes:
        nchw = full.build(genome)
        nhwc = laid_out(copy.deepcopy(nchw), torch.device("cpu"))
        batch = torch.randn(genome.training.get("batch_size", 32), *space.input_shape)
        many = torch.randn(INFER_BATCH, *space.input_shape)
        times = {}
        for kind, x, steps in (("train", batch, args.steps), ("infer", many, 2)):
            a = b = 0.0
            for _ in range(2):  # the layouts take turns, so a change in the machine's state falls on both
                a += seconds(nchw, x, steps, kind == "train")
                b += seconds(nhwc, x, steps, kind == "train")
            times[kind] = (a / 2, b / 2)
            ratios[kind].append(a / b)
        flops = full.cost(genome)[1]
        rows.append([name, f"{flops / 1e6:,.0f}", f"{times['train'][0] * 1e3:.0f}", f"{times['train'][1] * 1e3:.0f}",
                     f"{times['train'][0] / times['train'][1]:.2f}", f"{times['infer'][0] * 1e3:.3f}",
                     f"{times['infer'][1] * 1e3:.3f}", f"{times['infer'][0] / times['infer'][1]:.2f}"])
        print(f"  {name}: train {rows[-1][4]}x, inference {rows[-1][7]}x", flush=True)
    print(table(["network", "MFLOPs", "train ms NCHW", "NHWC", "ratio", "infer ms NCHW", "NHWC", "ratio"], rows,
                f"{args.config}: CPU ms per training step (genome's batch) and per sample of inference, "
                f"{args.threads} thread(s)"))
    print(f"median ratio (NCHW / channels-last): training {statistics.median(ratios['train']):.2f}, inference "
          f"{statistics.median(ratios['infer']):.2f}; {machine_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
