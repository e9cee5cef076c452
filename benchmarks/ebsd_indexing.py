#!/usr/bin/env python
"""A searched EBSD network against dictionary indexing on the same patterns, in one process on one thread: the mean
disorientation of each on the run's test patterns and on kikuchipy's experimental patterns, and the time each takes
per pattern (the network as `menndl predict` runs it: batch normalisations folded, in the task's batches of 64,
each batch's outputs read as orientations; the dictionary without the time to make it, which is printed apart),
and the arithmetic each needs per pattern: the network's FLOPs (as the search counts them), the dictionary's
2 FLOPs per pixel per dictionary pattern for its correlations. Their ratio is the speed-up the network can have at
equal efficiency, on any hardware. Then how each holds when the microscope is not the one simulated: the first
`--shifted` test orientations simulated again with one setting moved from the run's (fewer counts, a larger yield
variation, a weaker Kikuchi contrast, a drifting projection centre), all scored on each. Beside both, the two
together as `menndl predict --method network+dictionary` runs them (`EbsdTask.dictionary_orientations`): the
network's orientation, then the best match among the `--near` dictionary patterns nearest it (or in the whole
dictionary where the network's misfit is over DOUBTFUL_MISFIT), which keeps most of the network's speed and the
correlation's tolerance of patterns unlike the simulated ones.

Both are timed in this process, one after the other, in CPU seconds of the process (on one thread these are the
seconds of computing, whether or not others share the machine: waiting for a core is not counted), after the network
has run once. Threads are limited to one (numpy, numba, torch, dask's synchronous scheduler).

    python benchmarks/ebsd_indexing.py runs/ebsd                   # final/ (after retrain) or best/, 1,000 patterns
    python benchmarks/ebsd_indexing.py runs/ebsd --patterns 200 --resolution 4 --shifted 100
"""
from __future__ import annotations

import argparse
import os
import sys
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"

from common import code_version, table  # noqa: E402 (puts this checkout first on sys.path)

SHIFTS = (("counts", 0.33), ("counts", 0.11), ("yield_variation", 2.0), ("kikuchi_contrast", 0.75),
          ("pc_jitter", 2.5))  # (setting, factor on the run's value)


def network_orientations(task, model, patterns) -> tuple:
    """(orientations (N × 4) read from the network's outputs as the task reads them, how far to trust each, CPU
    seconds of the network, of reading its outputs) of patterns (N × 1 × H × W), in batches of the task's
    `image_batch`."""
    import numpy as np
    import torch

    found, ran, read = [], 0.0, 0.0
    for i in range(0, len(patterns), task.image_batch):
        started = time.process_time()
        with torch.no_grad():
            out = model(torch.as_tensor(patterns[i:i + task.image_batch]))
        done = time.process_time()
        found.append(task.orientations(out))
        ran, read = ran + done - started, read + time.process_time() - done
    return np.concatenate([q for q, _ in found]), np.concatenate([t for _, t in found]), ran, read


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory of the ebsd task")
    parser.add_argument("--network", default=None, help="final, best or a Pareto member's id (default: final if "
                                                        "retrained, else best)")
    parser.add_argument("--patterns", type=int, default=1000, help="test patterns to index (default 1,000)")
    parser.add_argument("--shifted", type=int, default=300, help="test orientations simulated again under each "
                                                                     "shifted setting (default 300; 0: none)")
    parser.add_argument("--near", type=int, default=100, help="dictionary patterns correlated with each pattern "
                                                                  "near the network's orientation (default 100, as "
                                                                  "menndl predict)")
    parser.add_argument("--resolution", type=float, default=None,
                        help="dictionary resolution in degrees (default: the run's dictionary_resolution)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from menndl_py.cli import config_of_run
    from menndl_py.commands.common import task_of
    from menndl_py.physics.ebsd_dictionary import Dictionary
    from menndl_py.physics.orientation import disorientation_degrees
    from menndl_py.rundir import RunDir
    from menndl_py.rundir.networks import load_network
    from menndl_py.train.device import laid_out

    torch.set_num_threads(1)
    print(code_version())
    cfg = config_of_run(args.run_dir)
    task = task_of(cfg)
    run = RunDir(cfg.run_dir)
    where = run.network_named(args.network) if args.network else run.network_to_use()
    genome, model, _ = load_network(where, task.space())
    laid_out(model, torch.device("cpu"), inference=True)  # as `menndl predict` runs it
    x, y = task.load("test")
    x, y = x[:args.patterns], y[:args.patterns]
    sets = {"test (simulated)": (x, y), "experimental": task.load("experimental")}
    resolution = args.resolution or task.options.dictionary_resolution
    dictionary = Dictionary(task.settings, resolution, args.near)
    print(f"network: {where} ({sum(p.numel() for p in model.parameters()):,} parameters); dictionary: "
          f"{resolution:g}°, {len(dictionary):,} patterns, made in {dictionary.seconds:.1f} s")
    flops = {"network": task.space().cost(genome)[1], "dictionary": 2 * len(dictionary) * x[0].size}

    network_orientations(task, model, x[:task.image_batch])  # once before timing
    task.dictionary = dictionary
    dictionary.index_near(x[:1, 0], y[:1])  # its k-d tree made before timing
    dictionary.index(x[:1, 0])  # and its kikuchipy signal
    rows, seconds, reading = [], {"network": 0.0, "near": 0.0, "dictionary": 0.0}, 0.0
    for name, (patterns, truth) in sets.items():
        found, trust, t, read = network_orientations(task, model, patterns)
        seconds["network"] += (t + read) * (name != "experimental")
        reading += read * (name != "experimental")
        started = time.process_time()
        narrowed, _ = task.dictionary_orientations(patterns[:, 0], found, trust)
        seconds["near"] += (time.process_time() - started) * (name != "experimental")
        started = time.process_time()
        indexed, _ = dictionary.index(patterns[:, 0])
        seconds["dictionary"] += (time.process_time() - started) * (name != "experimental")
        errors = [disorientation_degrees(q, truth) for q in (found, narrowed, indexed)]
        rows.append([f"{name}, {len(truth):,} patterns",
                     *(f"{f(e):.2f}" for e in errors for f in (np.mean, np.median))])
    print(table(["patterns", "network mean °", "median °", f"network, then {args.near} nearest mean °", "median °",
                 "dictionary mean °", "median °"], rows, "disorientation from the true orientation"))
    per = {k: v / len(x) * 1e3 for k, v in seconds.items()}
    both = per["network"] + per["near"]
    print(f"CPU ms per test pattern, one thread: network {per['network']:.4f}, dictionary {per['dictionary']:.3f}: "
          f"the network is {per['dictionary'] / per['network']:.0f}x faster ({reading / len(x) * 1e3:.4f} ms of its "
          f"time reading its outputs as orientations); the network, then its {args.near} nearest dictionary "
          f"patterns {both:.4f} ({per['dictionary'] / both:.0f}x faster than the dictionary)")
    rate = {k: flops[k] / per[k] / 1e6 for k in flops}  # GFLOP per CPU second
    print(f"FLOPs per pattern: network {flops['network'] / 1e6:.1f} M, dictionary {flops['dictionary'] / 1e6:.1f} M "
          f"({flops['dictionary'] / flops['network']:.1f}x); done at {rate['network']:.1f} and "
          f"{rate['dictionary']:.1f} GFLOP per CPU second")
    if args.shifted:
        print(table(["simulated with", "network mean °", "median °", f"network, then {args.near} nearest mean °",
                     "median °", "dictionary mean °", "median °"],
                    shifted_rows(task, model, y[:args.shifted]),
                    f"{min(args.shifted, len(y))} test orientations simulated again, one setting shifted"))
    return 0


def shifted_rows(task, model, orientations) -> list:
    """A row per shift of SHIFTS (and the run's settings first): the three indexers' disorientations on the
    orientations simulated again under it."""
    import dataclasses

    import numpy as np

    from menndl_py.physics import ebsd
    from menndl_py.physics.orientation import disorientation_degrees

    rows = []
    for name, factor in ((None, 1.0), *SHIFTS):
        settings = task.settings if name is None else \
            dataclasses.replace(task.settings, **{name: getattr(task.settings, name) * factor})
        patterns = ebsd.render(settings, orientations, np.random.default_rng(11)).patterns[:, None]
        found, trust = network_orientations(task, model, patterns)[:2]
        narrowed = task.dictionary_orientations(patterns[:, 0], found, trust)[0]
        indexed = task.dictionary.index(patterns[:, 0])[0]
        errors = [disorientation_degrees(q, orientations) for q in (found, narrowed, indexed)]
        rows.append([f"{name} {getattr(settings, name):g} (x{factor:g})" if name else "the run's settings",
                     *(f"{f(e):.2f}" for e in errors for f in (np.mean, np.median))])
    return rows


if __name__ == "__main__":
    sys.exit(main())
