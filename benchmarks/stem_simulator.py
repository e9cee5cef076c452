#!/usr/bin/env python
"""Speed of the HAADF-STEM simulator: images per second on one core, default settings (256 x 256, WSe2), then with
domain randomization on against off.

Each image is ``simulate(StemSettings(), rng)`` with its own generator, noise included, as make_dataset makes
them. Then the training images of a config with ``task.options.randomize`` (default
configs/stem_defects-transfer.yaml) are timed with their settings drawn per image (``randomized``, as make_dataset
draws them: every image a new probe, canvas and lattice, none cached) and without (the config's simulator
settings); the ratio says what randomization costs per image and per pixel. Threads are limited to one (numpy,
scipy.fft and any BLAS) before numpy is imported. On a machine shared
with others the wall clock also counts time the process waited for a core, so the script also prints images per
CPU second of this process, which other users' load does not enter. The target is >= 50 images/s per core.
The script reports; it does not assert.

    python benchmarks/stem_simulator.py            # 200 images, about 5 s
    python benchmarks/stem_simulator.py --quick    # 20 images
    python benchmarks/stem_simulator.py --config configs/stem_defects-transfer.yaml
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from common import code_version  # noqa: E402 (puts this checkout first on sys.path)

TARGET = 50.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 images")
    p.add_argument("--images", type=int, default=None, help="images to time (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" /
                                           "stem_defects-transfer.yaml"),
                   help="a stem_defects config with task.options.randomize")
    args = p.parse_args(argv)
    n = args.images or (20 if args.quick else 200)

    import numpy as np

    from menndl_py.physics.stem_sim import StemSettings, simulate
    from menndl_py.tasks.making import item_rng

    settings = StemSettings()
    print(f"stem_simulator: numpy {np.__version__}, one thread\n  {code_version()}")
    print(f"  {settings.material}, {settings.image_size} x {settings.image_size} px of {settings.pixel_size} Å, "
          f"probe {settings.probe_fwhm} Å, dose {settings.dose:g} e/Å^2, {n} images", flush=True)
    for i in range(3):   # warm-up: caches of the lattice and the probe's transfer function
        simulate(settings, item_rng(args.seed, "test", i))

    seconds, defects = [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        start = time.perf_counter()
        sample = simulate(settings, item_rng(args.seed, "train", i))
        seconds.append(time.perf_counter() - start)
        defects += len(sample.defects)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    rows = [("wall clock", n / wall), ("per CPU second", n / cpu),
            ("median image, wall", 1 / statistics.median(seconds))]
    print(f"\n{'images/s':<20} | {'value':>8} | {'target':>7} | met")
    print(f"{'-' * 21}|{'-' * 10}|{'-' * 9}|-----")
    for name, rate in rows:
        print(f"{name:<20} | {rate:8.1f} | {f'>= {TARGET:g}':>7} | {'yes' if rate >= TARGET else 'NO'}")
    print(f"\n{1e3 * statistics.median(seconds):.1f} ms per image (median), {defects / n:.1f} defects per image")
    randomization(args.config, n, args.seed)
    return 0


def randomization(config: str, n: int, seed: int) -> None:
    """Images and megapixels per CPU second of the config's training images, randomized and not, and the ratio."""
    from menndl_py.config import load
    from menndl_py.physics.stem_sim import randomized, simulate
    from menndl_py.tasks import make_task
    from menndl_py.tasks.making import item_rng

    cfg = load(config)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    print(f"\n{config}: training images with randomization ({', '.join(task.ranges)}) on and off, {n} each")
    rates = {}
    for name, ranges in (("off", {}), ("on", task.ranges)):
        for i in range(3):   # warm-up
            rng = item_rng(seed, "val", i)
            simulate(randomized(task.settings, ranges, rng), rng)
        pixels, cpu0 = 0, time.process_time()
        for i in range(n):
            rng = item_rng(seed, "train", i)
            settings = randomized(task.settings, ranges, rng)
            pixels += simulate(settings, rng).image.size
        cpu = time.process_time() - cpu0
        rates[name] = (n / cpu, pixels / cpu / 1e6)
    print(f"{'randomization':<14} | {'images/CPU s':>12} | {'Mpx/CPU s':>9}")
    print(f"{'-' * 15}|{'-' * 14}|{'-' * 10}")
    for name, (images, megapixels) in rates.items():
        print(f"{name:<14} | {images:12.1f} | {megapixels:9.2f}")
    print(f"on / off: {rates['on'][0] / rates['off'][0]:.2f} x the images per second, "
          f"{rates['on'][1] / rates['off'][1]:.2f} x the pixels per second")


if __name__ == "__main__":
    sys.exit(main())
