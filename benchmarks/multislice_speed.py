#!/usr/bin/env python
"""Speed of the multislice (abTEM) STEM simulator: images per minute on one core, for the microscopes of a config.

Each image is ``multislice.simulate(settings, microscope, rng)`` as `menndl data make` makes them, one thread
(numpy, FFTW, BLAS), after one warm-up image (imports, FFT plans). A shared machine's load enters the wall clock,
so the script also prints images per CPU minute of this process. With the time per image it says how long the
config's multislice sets take on a number of ranks that share a number of cores. The script reports; it does not
assert.

    python benchmarks/multislice_speed.py configs/stem_defects-transfer.yaml            # 2 images per set
    python benchmarks/multislice_speed.py configs/stem_defects-transfer.yaml --images 4 --ranks 5 --cores 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from common import code_version  # noqa: E402 (puts this checkout first on sys.path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="a stem_defects config with task.options.multislice")
    p.add_argument("--images", type=int, default=2, help="images timed per set (default 2)")
    p.add_argument("--ranks", type=int, default=5, help="ranks making the data (default 5)")
    p.add_argument("--cores", type=int, default=2, help="cores they share (default 2)")
    args = p.parse_args(argv)

    import abtem

    from menndl_py.config import load as load_config
    from menndl_py.physics import multislice
    from menndl_py.tasks import make_task
    from menndl_py.tasks.making import item_rng

    cfg = load_config(args.config)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    if not task.multislice:
        print(f"{args.config}: no task.options.multislice sets")
        return 2
    print(f"multislice_speed: abTEM {abtem.__version__}, one thread\n  {code_version()}")
    workers = min(args.ranks, args.cores)
    total = 0.0
    for split, (settings, microscope) in task.multislice.items():
        shape = multislice.image_shape(settings, microscope)
        print(f"\n{split}: {multislice.describe(microscope)}; {shape[0]}×{shape[1]} px", flush=True)
        multislice.simulate(settings, microscope, item_rng(0, split, 10_000))   # warm-up
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(args.images):
            multislice.simulate(settings, microscope, item_rng(0, split, i))
        wall, cpu = (time.perf_counter() - wall0) / args.images, (time.process_time() - cpu0) / args.images
        count = task._count(split)
        estimate = count * cpu / workers
        total += estimate
        print(f"  {60 / wall:.2f} images/min wall, {60 / cpu:.2f} images per CPU minute ({cpu:.1f} CPU s each)")
        print(f"  {count} images on {args.ranks} ranks sharing {args.cores} cores: about {estimate / 60:.1f} min")
    print(f"\nall multislice sets: about {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
