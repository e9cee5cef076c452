"""The EBSD data set: simulated patterns of random orientations in every split (the training patterns optionally
under domain randomization), and kikuchipy's experimental nickel patterns with their indexed orientations for
scoring, made over the ranks of a share; the file is named by its recipe.

Patterns are made in blocks of BLOCK: block b of a split comes from its own generator (seed, split, b), so the file
is the same for any number of ranks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from menndl_py.engine.transport.share import Solo
from menndl_py.physics import ebsd, randomization
from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.tasks.base import SPLITS
from menndl_py.tasks.making import item_rng, parallel_h5, split_blocks

BLOCK = 64  # patterns per generator, per projection call and per message to the writer
EXPERIMENTAL_SOURCE = (
    "kikuchipy.data.nickel_ebsd_small(): 3 x 3 points of a scan of recrystallised nickel, 60 x 60 px (NORDIF UF-1100, "
    "20 kV, Aanes et al. 2019, CC BY 4.0); orientations and projection centres from Hough indexing with PyEBSDIndex "
    "followed by kikuchipy's orientation and PC refinement against a simulated master pattern (kikuchipy 0.8, "
    "#578/#584); scores: the refinement's normalised cross-correlation. A pattern-matching result, not an "
    "independent ground truth.")


def recipe(settings: EbsdSettings, counts: dict[str, int], seed: int, ranges: dict | None = None) -> dict:
    """What the file's content depends on: the settings, the counts, the seed, the training patterns' ranges of
    domain randomization (when there are any) and the versions of kikuchipy and orix (their master pattern and
    projection make the patterns)."""
    from importlib.metadata import version

    made = {"settings": dataclasses.asdict(settings), "counts": {s: counts.get(s, 0) for s in SPLITS}, "seed": seed,
            "kikuchipy": version("kikuchipy"), "orix": version("orix")}
    return {**made, "randomize": ranges} if ranges else made


def file_name(settings: EbsdSettings, counts: dict[str, int], seed: int, name: str = "ebsd",
              ranges: dict | None = None) -> str:
    """The data file's name: a digest of its recipe, so a changed config never meets stale data."""
    digest = hashlib.sha1(json.dumps(recipe(settings, counts, seed, ranges), sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:10]}.h5"


def make_dataset(path, settings: EbsdSettings, counts: dict[str, int], seed: int, share: Solo = Solo(),
                 ranges: dict | None = None) -> dict:
    """Write an HDF5 file: groups train/val/test with ``patterns`` (N, H, W) float32, ``quaternions`` (N, 4) and
    ``pcs`` (N, 3), each block of training patterns under its own settings drawn over ``ranges`` (as
    `ebsd.check_ranges` returns them) when given; group ``experimental`` with kikuchipy's experimental patterns
    (``patterns`` corrected as the simulated ones, ``raw``, ``quaternions``, ``pcs``, ``scores``,
    ``static_background``; attribute ``source``); file attribute ``recipe`` (JSON).

    Over a ``share`` of several ranks, rank r simulates blocks b = r (mod size) of each split and hands them to
    rank 0, which writes. The file is written to a temporary name of its own and renamed at the end. Returns, on
    every rank, {split: patterns, "experimental": patterns}.
    """
    result = None
    with parallel_h5(path, counts, seed, share) as f:
        if f is not None:
            f.attrs["recipe"] = json.dumps(recipe(settings, counts, seed, ranges), sort_keys=True)
            result = {}
        for split in SPLITS:
            n = counts.get(split, 0)
            blocks, own = split_blocks(n, BLOCK, share)
            drawn = ranges if split == "train" else None
            arrived = share.to_root(([item] for item in _simulated(settings, drawn, seed, split, n, own)),
                                    len(blocks) - len(own))
            if f is not None:
                result[split] = _write(f.create_group(split), settings, n, (item for c in arrived for item in c))
            else:
                for _ in arrived:  # sent to rank 0
                    pass
        if f is not None:
            result["experimental"] = _write_experimental(f.create_group("experimental"))
    return share.bcast(result)


def _simulated(settings: EbsdSettings, ranges: dict | None, seed: int, split: str, n: int, blocks):
    """(first index, Sample) for each block, its settings drawn over ``ranges`` when given."""
    for b in blocks:
        start, rng = b * BLOCK, item_rng(seed, split, b)
        own = randomization.randomized(settings, ranges, rng) if ranges else settings
        yield start, ebsd.simulate(own, min(BLOCK, n - start), rng)


def _write(group, settings: EbsdSettings, n: int, items) -> int:
    h, w = settings.shape
    patterns = group.create_dataset("patterns", (n, h, w), np.float32, chunks=(1, h, w) if n else None)
    quaternions = group.create_dataset("quaternions", (n, 4), np.float64)
    pcs = group.create_dataset("pcs", (n, 3), np.float64)
    for start, sample in items:
        stop = start + len(sample.patterns)
        patterns[start:stop] = sample.patterns
        quaternions[start:stop] = sample.quaternions
        pcs[start:stop] = sample.pcs
    return n


def _write_experimental(group) -> int:
    data = ebsd.experimental()
    for key, value in data.items():
        group.create_dataset(key, data=value)
    group.attrs["source"] = EXPERIMENTAL_SOURCE
    return len(data["patterns"])
