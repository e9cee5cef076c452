"""The crystal-graph data set: random fcc alloys (`physics/alloys.py`) labelled by EMT, stored as ragged graphs, made
over the ranks of a share; the file is named by its recipe.

A structure's graph is that of the structure as drawn (ideal sites under its strain, before relaxation) and its
label the formation energy after relaxation: from the initial structure to the relaxed energy, as when screening
candidates whose relaxed positions are not known yet.

Structure i of a split comes from its own generator (seed, split, i), so the file is the same for any number of
ranks. Each split's group holds the graphs concatenated, with offsets: `numbers` (atoms), `centre`, `neighbour`
(indices within the structure) and `distance` (Å; edges to MAX_CUTOFF, sorted by centre then distance),
`atom_offsets` and `edge_offsets` (n + 1 each), and `formation_energy` (meV/atom).

Networks read a graph as a padded array (`padded`): per atom its atomic number, then the indices of its at most
MAX_NEIGHBOURS neighbours (-1 where none), then their distances (0 where none).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

from menndl_py.engine.transport.share import Solo
from menndl_py.physics import alloys
from menndl_py.physics.alloys import AlloySettings
from menndl_py.tasks.base import SPLITS
from menndl_py.tasks.making import item_rng, parallel_h5, split_blocks

MAX_CUTOFF = 5.0  # Å: edges stored to the largest cutoff a network may choose
MAX_NEIGHBOURS = 64  # per atom within MAX_CUTOFF: fcc has 54 to its fourth shell (4.93 Å in Ni), its fifth is past
BLOCK = 16  # structures per message to the writer
Graph = tuple  # (numbers, centre, neighbour, distance) of one structure, as alloys.crystal_graph gives


def graph_of(atoms: Atoms) -> Graph:
    """The graph of one structure (for the data set and for `menndl predict`): edges within MAX_CUTOFF. Raises
    ValueError when an atom has more than MAX_NEIGHBOURS neighbours (a denser packing than fcc's) or none."""
    if len(atoms) == 0:
        raise ValueError("no atoms")
    graph = alloys.crystal_graph(atoms, MAX_CUTOFF)
    counts = np.bincount(graph[1], minlength=len(atoms))
    if counts.max() > MAX_NEIGHBOURS:
        raise ValueError(f"an atom has {counts.max()} neighbours within {MAX_CUTOFF:g} Å, more than the "
                         f"{MAX_NEIGHBOURS} the networks read (denser than fcc)")
    if counts.min() == 0:
        raise ValueError(f"atom {int(np.argmin(counts))} has no neighbour within {MAX_CUTOFF:g} Å: an isolated atom")
    return graph


def padded(graphs: Sequence[Graph], max_atoms: int) -> np.ndarray:
    """Graphs as the networks read them: (n, max_atoms, 1 + 2 MAX_NEIGHBOURS) float32 (see the module)."""
    k = MAX_NEIGHBOURS
    out = np.zeros((len(graphs), max_atoms, 1 + 2 * k), np.float32)
    out[:, :, 1:1 + k] = -1
    for s, (numbers, centre, neighbour, distance) in enumerate(graphs):
        first = np.searchsorted(centre, np.arange(len(numbers)))
        slot = np.arange(len(centre)) - first[centre]
        out[s, :len(numbers), 0] = numbers
        out[s, centre, 1 + slot] = neighbour
        out[s, centre, 1 + k + slot] = distance
    return out


def recipe(settings: AlloySettings, counts: dict[str, int], seed: int) -> dict:
    """What the file's content depends on: the settings, the counts, the seed, the graph's cutoff and ASE's
    version (its EMT and FIRE label the structures)."""
    from importlib.metadata import version

    return {"settings": dataclasses.asdict(settings), "counts": {s: counts.get(s, 0) for s in SPLITS}, "seed": seed,
            "max_cutoff": MAX_CUTOFF, "ase": version("ase")}


def file_name(settings: AlloySettings, counts: dict[str, int], seed: int, name: str = "crystal_graph") -> str:
    """The data file's name: a digest of its recipe, so a changed config never meets stale data."""
    digest = hashlib.sha1(json.dumps(recipe(settings, counts, seed), sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:10]}.h5"


def labelled(settings: AlloySettings, seed: int, split: str, index: int) -> tuple[Graph, float]:
    """Structure `index` of `split`: its graph and its formation energy (meV/atom, relaxed as `settings` say)."""
    atoms = alloys.random_alloy(item_rng(seed, split, index), settings)
    energy = alloys.formation_energy(atoms, settings.relax_steps, settings.fmax)
    return graph_of(atoms), 1000.0 * energy


def make_dataset(path, settings: AlloySettings, counts: dict[str, int], seed: int, share: Solo = Solo()) -> dict:
    """Write the HDF5 file (groups train/val/test as the module says; file attribute ``recipe``, JSON). Over a
    ``share`` of several ranks, rank r makes blocks b = r (mod size) of each split and hands them to rank 0, which
    writes. Returns, on every rank, {split: structures}."""
    result = None
    with parallel_h5(path, counts, seed, share) as f:
        if f is not None:
            f.attrs["recipe"] = json.dumps(recipe(settings, counts, seed), sort_keys=True)
            result = {}
        for split in SPLITS:
            n = counts.get(split, 0)
            blocks, own = split_blocks(n, BLOCK, share)
            made = ([(b, [labelled(settings, seed, split, i) for i in range(b * BLOCK, min(n, (b + 1) * BLOCK))])]
                    for b in own)
            arrived = share.to_root(made, len(blocks) - len(own))
            if f is not None:
                result[split] = _write(f.create_group(split), n, (item for chunk in arrived for item in chunk))
            else:
                for _ in arrived:  # sent to rank 0
                    pass
    return share.bcast(result)


def _write(group, n: int, blocks: Iterable[tuple[int, list]]) -> int:
    """Write a split's blocks (arriving in any order) in structure order."""
    items = [None] * n
    for b, block in blocks:
        items[b * BLOCK:b * BLOCK + len(block)] = block
    graphs = [graph for graph, _ in items]
    atoms = np.array([len(g[0]) for g in graphs], np.int64)
    edges = np.array([len(g[1]) for g in graphs], np.int64)
    group.create_dataset("atom_offsets", data=np.concatenate([[0], np.cumsum(atoms)]))
    group.create_dataset("edge_offsets", data=np.concatenate([[0], np.cumsum(edges)]))
    for k, (key, dtype) in enumerate((("numbers", np.int8), ("centre", np.int16), ("neighbour", np.int16),
                                      ("distance", np.float32))):
        parts = [g[k] for g in graphs]
        group.create_dataset(key, data=np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    group.create_dataset("formation_energy", data=np.array([e for _, e in items], np.float64))
    group["formation_energy"].attrs["unit"] = "meV/atom"
    return n


def read_graphs(group, rows: np.ndarray) -> list[Graph]:
    """The graphs of structures `rows` of a split's group."""
    atom_offsets, edge_offsets = group["atom_offsets"][()], group["edge_offsets"][()]
    numbers, centre, neighbour, distance = (group[k][()] for k in ("numbers", "centre", "neighbour", "distance"))
    graphs = []
    for r in rows:
        a, e = slice(atom_offsets[r], atom_offsets[r + 1]), slice(edge_offsets[r], edge_offsets[r + 1])
        graphs.append((numbers[a].astype(np.int64), centre[e].astype(np.int64), neighbour[e].astype(np.int64),
                       distance[e].astype(np.float64)))
    return graphs
