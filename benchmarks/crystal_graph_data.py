#!/usr/bin/env python
"""Speed of the crystal-graph data maker: structures per second on one core, relaxed as the data set's recipe says
against unrelaxed labels (the baseline, in the same process), and the graph alone.

`labelled(settings, seed, split, i)` as the data maker calls it (a random alloy, its EMT formation energy after at
most `relax_steps` FIRE steps, its graph to 5 Å); then the same structures with `relax_steps=0`; then
`graph_of` alone. Threads are limited to one before numpy is imported. On a machine shared with others the wall
clock also counts time the process waited for a core, so the script also prints structures per CPU second. The
script reports; it does not assert.

    python benchmarks/crystal_graph_data.py            # 200 structures, about a minute
    python benchmarks/crystal_graph_data.py --quick    # 40
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from common import code_version, machine_load, table  # noqa: E402 (puts this checkout first on sys.path)


def timed(make, n: int) -> tuple[float, float]:
    """(structures per wall second, per CPU second) of make(i) for i < n."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        make(i)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="40 structures")
    p.add_argument("--structures", type=int, default=None, help="structures to time (default 200)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    n = args.structures or (40 if args.quick else 200)

    import ase

    from menndl_py.physics import alloys
    from menndl_py.physics.alloys import AlloySettings
    from menndl_py.tasks.crystal_graph.data import graph_of, labelled
    from menndl_py.tasks.making import item_rng

    print(f"crystal_graph_data: ASE {ase.__version__} (EMT, FIRE), one thread\n  {code_version()}")
    print(f"  {n} structures; {machine_load()}", flush=True)
    settings = AlloySettings()
    for symbol in alloys.ELEMENTS:  # the references, computed once per process
        alloys.reference_energy(symbol)
    unrelaxed = dataclasses.replace(settings, relax_steps=0)
    made = [alloys.random_alloy(item_rng(args.seed, "train", i), settings) for i in range(n)]
    rows = []
    for name, make in ((f"relaxed ({settings.relax_steps} FIRE steps at most): the data set's recipe",
                        lambda i: labelled(settings, args.seed, "train", i)),
                       ("unrelaxed (baseline)", lambda i: labelled(unrelaxed, args.seed, "train", i)),
                       ("graph to 5 Å alone", lambda i: graph_of(made[i]))):
        wall, cpu = timed(make, n)
        rows.append([name, f"{wall:.1f}", f"{cpu:.1f}"])
    rows.append(["relaxed / unrelaxed (time)", f"{float(rows[1][1]) / float(rows[0][1]):.1f}x",
                 f"{float(rows[1][2]) / float(rows[0][2]):.1f}x"])
    print()
    print(table(["structures/s, one core", "wall", "per CPU second"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
