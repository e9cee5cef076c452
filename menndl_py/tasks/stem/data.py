"""The STEM data set: simulated images of every split with their exact labels, made over the ranks of a share.

Image i of a split comes from its own generator (seed, split, i), so the file is the same for any number of ranks.
"""
from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np

from menndl_py.engine.transport.share import Solo
from menndl_py.physics import stem_sim
from menndl_py.physics.stem_sim import CLASSES, StemSettings
from menndl_py.tasks.base import SPLITS
from menndl_py.tasks.making import item_rng, parallel_h5

CHUNK = 8  # images per message to the writer


def make_dataset(path, settings: StemSettings, counts: dict[str, int], seed: int, share: Solo = Solo()) -> dict:
    """Write an HDF5 file of simulated images: groups train/val/test with ``images`` (N, H, W) float32,
    ``labels`` (N, H, W) uint8 and ``defects`` (M, 4) float32 (image index, y, x, class); attributes
    ``settings`` (JSON), ``classes`` and ``seed``.

    Image i of a split comes from item_rng(seed, split, i), so the file is the same for any number of ranks.
    Over a ``share`` of several ranks, rank r simulates images i = r (mod size) and hands them to rank 0 in chunks
    of a few images; rank 0 writes. The file is written to a temporary name of its own and renamed at the end.
    Returns, on every rank, {split: {"images": N, class name: number of defects, ...}}.
    """
    result = None
    with parallel_h5(path, counts, seed, share) as f:
        if f is not None:
            f.attrs["settings"] = json.dumps(dataclasses.asdict(settings), sort_keys=True)
            f.attrs["classes"] = np.array(CLASSES, dtype=h5py.string_dtype("utf-8"))
            f.attrs["seed"] = seed
            result = {}
        for split in SPLITS:
            n = counts.get(split, 0)
            own = share.mine(list(range(n)))
            chunks = share.to_root(_chunks(_simulated(settings, seed, split, own)), n - len(own))
            if f is not None:
                result[split] = _write(f.create_group(split), settings, n, (item for c in chunks for item in c))
            else:
                for _ in chunks:  # sent to rank 0
                    pass
    return share.bcast(result)


def _simulated(settings: StemSettings, seed: int, split: str, indices):
    """(index, Sample) for each image index."""
    for i in indices:
        yield i, stem_sim.simulate(settings, item_rng(seed, split, i))


def _chunks(items, size: int = CHUNK):
    """Lists of up to `size` items."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write(group, settings: StemSettings, n: int, items) -> dict:
    h = settings.image_size
    chunks = (1, h, h) if n else None
    images = group.create_dataset("images", (n, h, h), np.float32, chunks=chunks)
    labels = group.create_dataset("labels", (n, h, h), np.uint8, chunks=chunks, compression="lzf" if n else None)
    tables = [np.zeros((0, 4), np.float32)] * n
    for i, sample in items:
        images[i] = sample.image
        labels[i] = sample.labels
        tables[i] = np.concatenate([np.full((len(sample.defects), 1), i, np.float32), sample.defects], axis=1)
    defects = np.concatenate(tables) if tables else np.zeros((0, 4), np.float32)
    group.create_dataset("defects", data=defects)
    found = np.bincount(defects[:, 3].astype(np.int64), minlength=len(CLASSES))
    return {"images": n, **{name: int(found[c]) for c, name in enumerate(CLASSES) if c > 0}}
