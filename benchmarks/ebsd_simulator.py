#!/usr/bin/env python
"""Speed of the EBSD simulator: patterns per second on one core at 60 × 60 and 128 × 128 px, and its defaults beside
the experimental nickel set they copy.

Speed: `simulate(EbsdSettings(...), n, rng)` as the data maker calls it (orientations, jittered projection centres,
Poisson counts, kikuchipy's background correction), and kikuchipy's projection alone at a fixed projection centre.
Threads are limited to one (numpy, numba, dask's synchronous scheduler) before numpy is imported. On a machine
shared with others the wall clock also counts time the process waited for a core, so the script also prints
patterns per CPU second of this process. The script reports; it does not assert.

Residuals: corrected patterns (experimental, and simulated with and without the smooth yield variation) minus the
best-scaled noise-free simulation at the experimental orientations, their power in three wavelength bands against
that of simulated noise alone, and their normalised cross-correlation with it (what dictionary indexing scores).

Defaults: the band contrast (relative standard deviation of the pattern over its static background, between the 1
and 8 px scales) and the noise (as the Poisson count it equals, from pairs of patterns of one grain) of kikuchipy's
9 experimental patterns and of simulated raw patterns at their indexed orientations.

    python benchmarks/ebsd_simulator.py            # 2,000 patterns per size, about a minute
    python benchmarks/ebsd_simulator.py --quick    # 256 per size
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"

from common import code_version, machine_load, table  # noqa: E402 (puts this checkout first on sys.path)


def timed(make, n: int) -> tuple[float, float]:
    """(patterns per wall second, per CPU second) of make(n)."""
    cpu, wall = time.process_time(), time.perf_counter()
    make(n)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def band_contrast(raw, static) -> float:
    """The relative standard deviation of raw patterns (N × H × W) over their static background, between the
    1 and 8 px scales."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    ratio = gaussian_filter(raw.astype(np.float64) / static, (0, 1, 1))
    return float(np.mean(np.std(ratio / gaussian_filter(ratio, (0, 8, 8)), axis=(1, 2))))


def poisson_count(first, second, sigma: float = 3.0) -> float:
    """The Poisson count whose noise equals that of pairs of raw patterns of (nearly) the same orientation:
    mean² / variance, the variance being half that of their difference with its smooth part (a Gaussian of `sigma`
    px: background drift) taken out, divided by the share of white noise that this keeps."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    first, second = first.astype(np.float64), second.astype(np.float64)
    difference = first - second
    difference -= gaussian_filter(difference, (0, sigma, sigma))
    kept = 1 - 2 / (2 * np.pi * sigma ** 2) + 1 / (4 * np.pi * sigma ** 2)
    mean = (first + second).mean(axis=(1, 2)) / 2
    return float(np.mean(mean ** 2 / (difference.var(axis=(1, 2)) / 2 / kept)))


BANDS = ((15, 60), (6, 15), (2, 6))  # wavelengths, px


def band_powers(patterns, reference) -> tuple[list[float], float]:
    """(power of patterns - a · reference in each of BANDS, mean normalised cross-correlation a), both standardised
    per pattern."""
    import numpy as np

    def standard(x):
        return (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)

    patterns, reference = standard(np.asarray(patterns, np.float64)), standard(np.asarray(reference, np.float64))
    ncc = (patterns * reference).mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(patterns - ncc * reference)) ** 2
    fy, fx = np.meshgrid(*(np.fft.fftfreq(n) for n in patterns.shape[1:]), indexing="ij")
    wavelength = 1 / np.maximum(np.hypot(fy, fx), 1e-9)
    return [float(power[:, (wavelength >= lo) & (wavelength < hi)].mean()) for lo, hi in BANDS], float(ncc.mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="256 patterns per size")
    p.add_argument("--patterns", type=int, default=None, help="patterns to time per size (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    n = args.patterns or (256 if args.quick else 2000)

    import kikuchipy
    import numpy as np
    from orix.quaternion import Rotation

    from menndl_py.physics import ebsd
    from menndl_py.physics.orientation import disorientation_degrees

    print(f"ebsd_simulator: kikuchipy {kikuchipy.__version__}, numpy {np.__version__}, one thread\n  {code_version()}")
    print(f"  {n} patterns per size; {machine_load()}", flush=True)
    rows = []
    for side in (60, 128):
        settings = ebsd.EbsdSettings(pattern_height=side, pattern_width=side)
        rng = np.random.default_rng(args.seed)
        ebsd.simulate(settings, 16, rng)   # warm-up: the master pattern, numba's compilation
        full = timed(lambda k: ebsd.simulate(settings, k, rng), n)
        fixed = timed(lambda k: ebsd.simulate(ebsd.EbsdSettings(pattern_height=side, pattern_width=side,
                                                                pc_jitter=0.0), k, rng), n)
        rotations = Rotation(ebsd.random_quaternions(n, rng))
        detector = kikuchipy.detectors.EBSDDetector(shape=settings.shape, pc=settings.pc)
        projection = timed(lambda k: ebsd.master_pattern().get_patterns(rotations, detector, compute=True,
                                                                        show_progressbar=False), n)
        for name, (wall, cpu) in (("simulate (PC jitter per pattern)", full), ("simulate (one PC)", fixed),
                                  ("kikuchipy get_patterns alone, one PC", projection)):
            rows.append([f"{side} x {side}: {name}", f"{wall:.0f}", f"{cpu:.0f}"])
    print()
    print(table(["patterns/s, one core", "wall", "per CPU second"], rows))

    data = ebsd.experimental()
    settings = ebsd.EbsdSettings()
    angles = disorientation_degrees(np.repeat(data["quaternions"], 9, 0), np.tile(data["quaternions"], (9, 1)))
    i, j = np.nonzero(np.triu(angles.reshape(9, 9) < 1, k=1))  # pairs of points in one grain
    contrast, plain_contrast = (band_contrast(ebsd.record(s, data["quaternions"], np.random.default_rng(1))[0],
                                              ebsd.static_background(s))
                                for s in (settings, dataclasses.replace(settings, yield_variation=0.0)))
    still = dataclasses.replace(settings, pc_jitter=0.0, background_shift=0.0, yield_variation=0.0)  # noise alone
    raw = [ebsd.record(still, data["quaternions"], np.random.default_rng(seed))[0] for seed in (1, 2)]
    print()
    print(table(["", "band contrast", "noise as a Poisson count"],
                [[f"nickel_ebsd_small (9 patterns; {len(i)} pairs < 1° apart)",
                  f"{band_contrast(data['raw'], data['static_background']):.4f}",
                  f"{poisson_count(data['raw'][i], data['raw'][j]):.0f}"],
                 ["simulated with the defaults (same orientations, twice)", f"{contrast:.4f}",
                  f"{poisson_count(raw[0], raw[1]):.0f}"],
                 ["the same without the yield variation", f"{plain_contrast:.4f}", ""]]))
    print("(the experimental pairs differ also by up to 1° and their projection centres: their count is a lower bound)")
    print(f"defaults: kikuchi_contrast {settings.kikuchi_contrast}, counts {settings.counts:g}")

    def repeated(s, times=8):
        generator = np.random.default_rng(args.seed)
        return np.concatenate([ebsd.render(s, data["quaternions"], generator).patterns for _ in range(times)])

    clean = ebsd.correct_background(ebsd.record(settings, data["quaternions"])[0], ebsd.static_background(settings))
    reference = np.concatenate([clean] * 8)
    noise, _ = band_powers(repeated(still), reference)
    rows = []
    for name, patterns, against in (
            ("experimental (9)", data["patterns"], clean),
            ("simulated, noise alone", repeated(still), reference),
            ("simulated, defaults without yield variation",
             repeated(dataclasses.replace(settings, yield_variation=0.0)), reference),
            (f"simulated, defaults (yield variation up to {settings.yield_variation:g})", repeated(settings),
             reference)):
        powers, ncc = band_powers(patterns, against)
        rows.append([name, *(f"{p / q:.1f}" for p, q in zip(powers, noise)), f"{ncc:.3f}"])
    print()
    print(table(["residual power / noise alone", *(f"{lo}-{hi} px" for lo, hi in BANDS), "NCC"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
