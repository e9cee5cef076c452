#!/usr/bin/env python
"""Seconds per sample of the FFT elasticity solver (menndl_py.physics.elasticity) on one core.

Each sample is a periodic two-phase microstructure from ``microstructure.sample_family`` (isotropic, elongated and
plate-like, volume fraction 0.3-0.7) solved under macroscopic eps11 (the C11 label), nu = 0.3, tol = 1e-6, for
each Young's modulus contrast E1/E0 (default 10 and 50), the same microstructures for every contrast. One untimed
solve first fills the per-grid cache (the Green operator's symbol). FFTs run with workers=1, and the BLAS/OpenMP
thread counts are set to 1 before numpy is imported, so the solver uses one core: its CPU seconds are its
seconds on one core. The wall clock also counts time spent waiting for a core on a shared machine; both are
printed, and the target (median <= 3 s per sample at 51^3, contrast 50) is judged on CPU seconds. The script
reports; it does not assert.

    python benchmarks/elasticity_solver.py            # 51^3, 5 samples, contrasts 10 and 50: 15-40 s
    python benchmarks/elasticity_solver.py --quick    # 21^3, 3 samples: a few seconds
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

from common import code_version  # noqa: E402 (puts this checkout first on sys.path)

TARGET_SECONDS = 3.0
TARGET_SIZE = 51
TARGET_CONTRAST = 50.0


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="21^3 voxels, 3 samples")
    p.add_argument("--size", type=int, default=None, help="voxels per edge (default 51)")
    p.add_argument("--samples", type=int, default=None, help="microstructures per contrast (default 5)")
    p.add_argument("--contrasts", type=float, nargs="+", default=[10.0, 50.0], help="E1/E0 (default 10 50)")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    size = args.size or (21 if args.quick else TARGET_SIZE)
    samples = args.samples or (3 if args.quick else 5)

    import numpy as np

    from menndl_py.physics.elasticity import solve
    from menndl_py.physics.microstructure import sample_family

    print(code_version())
    print(f"{size}^3 voxels, {samples} samples, nu = 0.3, E0 = 100 GPa, tol = {args.tol:g}, one core")
    shape = (size, size, size)
    volumes, descriptors = sample_family(samples, shape, (0.3, 0.7), np.random.default_rng(args.seed))
    load = [1.0, 0, 0, 0, 0, 0]
    solve(volumes[0], (100.0, 100.0 * args.contrasts[0]), 0.3, load, tol=args.tol)  # warm-up: per-grid cache

    summary = []
    for contrast in args.contrasts:
        E = (100.0, 100.0 * contrast)
        rows, walls, cpus, iterations = [], [], [], []
        for i, volume in enumerate(volumes):
            wall, cpu = time.perf_counter(), time.process_time()
            sol = solve(volume, E, 0.3, load, tol=args.tol)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            walls.append(wall)
            cpus.append(cpu)
            iterations.append(sol.iterations)
            ell = "x".join(f"{v:.1f}" for v in descriptors["correlation_lengths"][i])
            rows.append([i, descriptors["kind"][i], ell, f"{descriptors['volume_fraction'][i]:.3f}",
                         f"{sol.average_stress[0]:.1f}", sol.iterations, "yes" if sol.converged else "NO",
                         f"{cpu:.2f}", f"{wall:.2f}"])
        print(f"\ncontrast {contrast:g}")
        print(table(["sample", "kind", "lengths", "vf", "C11 GPa", "iterations", "converged", "cpu s", "wall s"],
                    rows))
        summary.append([f"{contrast:g}", f"{statistics.median(cpus):.2f}", f"{statistics.median(walls):.2f}",
                        f"{statistics.median(iterations):g}", f"{min(iterations)}-{max(iterations)}"])
        if contrast == TARGET_CONTRAST:
            median_cpu = statistics.median(cpus)

    print(f"\nmedian per sample at {size}^3")
    print(table(["contrast", "cpu s", "wall s", "iterations", "range"], summary))
    if size == TARGET_SIZE and TARGET_CONTRAST in args.contrasts:
        verdict = "met" if median_cpu <= TARGET_SECONDS else "NOT met"
        print(f"target (median <= {TARGET_SECONDS:g} s per sample at {TARGET_SIZE}^3, contrast "
              f"{TARGET_CONTRAST:g}, one core, CPU seconds): {verdict} ({median_cpu:.2f} s)")
    else:
        print(f"target not judged: it is set at {TARGET_SIZE}^3 with contrast {TARGET_CONTRAST:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
