"""Substitutional fcc alloys of Al, Cu, Ag, Au, Ni, Pd and Pt labelled by effective-medium theory (ASE's EMT,
Jacobsen, Stoltze & Nørskov 1996), and the crystal graph of any structure.

`random_alloy` draws a supercell of the conventional fcc cell (4 to 32 sites), one to four elements in varied
proportions, arranged at random or with short-range order (Metropolis swaps under a random nearest-neighbour pair
interaction, which orders or clusters), a vacancy or two, a small random strain, at the Vegard lattice constant of
its composition. `formation_energy` relaxes the positions (FIRE, a few steps) and gives the energy per atom against
the relaxed pure elements: 0 for a pure element at its lattice constant, by construction. `crystal_graph` lists each
atom's neighbours within a cutoff, periodic images included (ASE's `neighbor_list`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list
from ase.optimize import FIRE
from ase.parallel import DummyMPI
from scipy.optimize import minimize_scalar

ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")  # the elements of ASE's EMT
NUMBERS = (13, 29, 47, 79, 28, 46, 78)
REPEATS = ((1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 1, 1), (3, 2, 1))  # of the 4-atom conventional cell
MAX_ATOMS = 4 * max(a * b * c for a, b, c in REPEATS)


@dataclass(frozen=True)
class AlloySettings:
    """What `random_alloy` draws from: up to `max_elements` species; the share `ordered` of structures given
    short-range order by `order_sweeps` Metropolis sweeps; a structure has a vacancy with probability `vacancy`
    (a second with the same probability again); strain components uniform in ±`max_strain`; relaxation
    `relax_steps` FIRE steps at most, to forces under `fmax` eV/Å."""

    max_elements: int = 4
    ordered: float = 0.5
    order_sweeps: int = 20
    vacancy: float = 0.3
    max_strain: float = 0.015
    relax_steps: int = 15
    fmax: float = 0.05


@functools.lru_cache(maxsize=None)
def lattice_constant(symbol: str) -> float:
    """EMT's equilibrium fcc lattice constant of an element (Å)."""
    def energy(a: float) -> float:
        atoms = bulk(symbol, "fcc", a=a)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    guess = bulk(symbol, "fcc").cell.cellpar()[0] * np.sqrt(2)  # ASE's reference lattice constant
    return float(minimize_scalar(energy, bounds=(0.9 * guess, 1.1 * guess), method="bounded",
                                 options={"xatol": 1e-6}).x)


@functools.lru_cache(maxsize=None)
def reference_energy(symbol: str) -> float:
    """EMT energy per atom (eV) of the pure fcc element at its equilibrium lattice constant."""
    atoms = bulk(symbol, "fcc", a=lattice_constant(symbol))
    atoms.calc = EMT()
    return float(atoms.get_potential_energy())


def energy(atoms: Atoms, relax_steps: int = 0, fmax: float = 0.05) -> float:
    """EMT energy (eV) of a copy of `atoms`, after at most `relax_steps` FIRE steps on the positions. The relaxation
    is this process's alone (`DummyMPI`): ASE's default communicator would start MPI in a process that has imported
    mpi4py without a launcher (a singleton beside any real job), which can take the process down."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    if relax_steps:
        FIRE(atoms, logfile=None, comm=DummyMPI()).run(fmax=fmax, steps=relax_steps)
    return float(atoms.get_potential_energy())


def formation_energy(atoms: Atoms, relax_steps: int = 0, fmax: float = 0.05) -> float:
    """Formation (mixing) energy per atom (eV) against the relaxed pure elements, after at most `relax_steps` FIRE
    steps on the positions. Raises ValueError for an element outside ELEMENTS."""
    symbols = atoms.get_chemical_symbols()
    outside = sorted(set(symbols) - set(ELEMENTS))
    if outside:
        raise ValueError(f"element(s) {', '.join(outside)} outside EMT's {', '.join(ELEMENTS)}")
    total = energy(atoms, relax_steps, fmax)
    return (total - sum(reference_energy(s) for s in symbols)) / len(atoms)


def crystal_graph(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(atomic numbers, centre index, neighbour index, distance) of every neighbour within `cutoff` Å, periodic
    images included: edges sorted by centre, then distance, then neighbour."""
    centre, neighbour, distance = neighbor_list("ijd", atoms, cutoff)
    order = np.lexsort((neighbour, np.round(distance, 9), centre))
    return (atoms.numbers.astype(np.int64), centre[order].astype(np.int64), neighbour[order].astype(np.int64),
            distance[order].astype(np.float64))


def random_alloy(rng: np.random.Generator, settings: AlloySettings = AlloySettings()) -> Atoms:
    """One random structure as the module describes (unrelaxed)."""
    repeat = REPEATS[rng.integers(len(REPEATS))]
    n_sites = 4 * int(np.prod(repeat))
    species = rng.choice(len(ELEMENTS), size=rng.integers(1, settings.max_elements + 1), replace=False)
    shares = rng.dirichlet(np.ones(len(species)))
    counts = np.floor(shares * n_sites).astype(int)
    counts[rng.integers(len(species))] += n_sites - counts.sum()
    kinds = rng.permutation(np.repeat(species, counts))
    a = sum(lattice_constant(ELEMENTS[k]) for k in kinds) / n_sites  # Vegard's law
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
    if len(species) > 1 and rng.random() < settings.ordered:
        kinds = _short_range_order(atoms, kinds, 0.85 * a, settings.order_sweeps, rng)
    atoms.numbers = np.asarray(NUMBERS)[kinds]
    for _ in range(2):
        if rng.random() < settings.vacancy and len(atoms) > 4:
            del atoms[int(rng.integers(len(atoms)))]
    strain = rng.uniform(-settings.max_strain, settings.max_strain, (3, 3))
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + (strain + strain.T) / 2), scale_atoms=True)
    return atoms


def _short_range_order(atoms: Atoms, kinds: np.ndarray, cutoff: float, sweeps: int,
                       rng: np.random.Generator) -> np.ndarray:
    """`kinds` (indices into ELEMENTS) rearranged by Metropolis swaps under a random pair interaction between
    neighbours within `cutoff` (symmetric, in units of kT): negative unlike-pair terms order, positive ones
    cluster."""
    i, j = neighbor_list("ij", atoms, cutoff)
    neighbours = [j[i == k] for k in range(len(atoms))]
    pair = rng.normal(0.0, 1.0, (len(ELEMENTS), len(ELEMENTS)))
    pair = (pair + pair.T) / 2
    kinds = kinds.copy()
    for _ in range(sweeps * len(kinds)):
        p, q = rng.integers(len(kinds), size=2)
        if kinds[p] == kinds[q]:
            continue
        before = pair[kinds[p], kinds[neighbours[p]]].sum() + pair[kinds[q], kinds[neighbours[q]]].sum()
        kinds[p], kinds[q] = kinds[q], kinds[p]
        after = pair[kinds[p], kinds[neighbours[p]]].sum() + pair[kinds[q], kinds[neighbours[q]]].sum()
        if after > before and rng.random() >= np.exp(before - after):
            kinds[p], kinds[q] = kinds[q], kinds[p]
    return kinds
