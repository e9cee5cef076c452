"""The STEM data set: simulated images of every split with their exact labels, made over the ranks of a share.

Image i of a split comes from its own generator (seed, split, i), so the file is the same for any number of ranks.
With domain randomization the training images each have their own settings, drawn from that generator before the
image; when their sizes vary the split is stored ragged (see `_write`). Multislice training images (each file one
microscope) follow the simulated ones in the training split, which is then ragged too. Each split's group says
which simulator made which images (attribute `source`).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math

import h5py
import numpy as np

from menndl_py.engine.transport.share import Solo
from menndl_py.physics import stem_sim
from menndl_py.physics.stem_sim import CLASSES, StemSettings
from menndl_py.tasks.base import SPLITS
from menndl_py.tasks.making import item_rng, parallel_h5

CHUNK = 8  # images per message to the writer


def make_dataset(path, settings: StemSettings, counts: dict[str, int], seed: int, share: Solo = Solo(),
                 randomize: dict | None = None, copied: dict | None = None, appended: dict | None = None) -> dict:
    """Write an HDF5 file of simulated images: groups train/val/test with ``images`` (N, H, W) float32,
    ``labels`` (N, H, W) uint8 and ``defects`` (M, 4) float32 (image index, y, x, class); attributes
    ``settings`` (JSON), ``classes`` and ``seed``.

    Image i of a split comes from item_rng(seed, split, i), so the file is the same for any number of ranks.
    ``randomize`` (ranges as `stem_sim.check_ranges` returns them) draws each training image's settings from that
    generator first; the drawn settings are kept (``settings``, JSON per image). ``copied`` maps splits to HDF5
    files holding a group of that name made elsewhere (multislice), which is copied in instead of simulated.
    ``appended`` maps splits to multislice files (a group of the split's name each) whose images follow the split's
    own (simulated, or copied), in that order; each keeps its settings with its own pixel size and shape
    (``settings``).
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
            extra = (appended or {}).get(split, ())
            if split in (copied or {}):
                if f is not None:
                    result[split] = _copy(f, split, (copied[split], *extra))
                continue
            n = counts.get(split, 0)
            ranges = randomize if split == "train" else None
            own = share.mine(list(range(n)))
            chunks = share.to_root(_chunks(_simulated(settings, ranges, seed, split, own)), n - len(own))
            if f is not None:
                group = f.create_group(split)
                parts = [(n, "stem_sim (fast simulator" + (", randomized: " + ", ".join(
                    f"{k} in [{lo:g}, {hi:g}]{' log' if log else ''}" for k, (lo, hi, log) in ranges.items())
                    if ranges else "") + ")")]
                parts += _parts(extra, split)
                group.attrs["source"] = _sources(parts)
                items = itertools.chain((item for c in chunks for item in c), _multislice_images(extra, n, split))
                ragged = bool(extra) or bool(ranges) and any(k in ranges for k in stem_sim.RANDOMIZED_INTEGERS)
                result[split] = _write(group, settings, sum(k for k, _ in parts), items, ragged,
                                       bool(ranges or extra))
            else:
                for _ in chunks:  # sent to rank 0
                    pass
    return share.bcast(result)


def _simulated(settings: StemSettings, ranges: dict | None, seed: int, split: str, indices):
    """(index, (Sample, its settings)) for each image index."""
    for i in indices:
        rng = item_rng(seed, split, i)
        own = stem_sim.randomized(settings, ranges, rng) if ranges else settings
        yield i, (stem_sim.simulate(own, rng), own)


def _copy(f, split: str, paths) -> dict:
    """Copy a split's multislice group into `f` from the first file, or with several files (microscopes, images
    of one size), their images one after another; returns its summary."""
    if len(paths) == 1:
        with h5py.File(paths[0], "r") as source:
            source.copy(source[split], f, split)
        return summary(f[split])
    parts = _parts(paths, split)
    group = f.create_group(split)
    group.attrs["source"] = _sources(parts)
    with h5py.File(paths[0], "r") as source:
        first = _stored_settings(source[split], source[split]["images"].shape[1:])
    return _write(group, first, sum(n for n, _ in parts), _multislice_images(paths, 0, split), per_image=True)


def _parts(paths, split: str) -> list[tuple[int, str]]:
    """[(images, source)] of the split's group in each multislice file."""
    parts = []
    for path in paths:
        with h5py.File(path, "r") as source:
            parts.append((len(source[split]["images"]), source[split].attrs["source"]))
    return parts


def _multislice_images(paths, first: int, split: str):
    """(index, (Sample, its settings)) for each image of the split's group in multislice files, numbered from
    `first`; the settings are the file's with its pixel size (the mean of the pixel's two sides) and image size."""
    index = first
    for path in paths:
        with h5py.File(path, "r") as f:
            group = f[split]
            defects = group["defects"][()]
            for i, (image, labels) in enumerate(zip(group["images"], group["labels"])):
                own = _stored_settings(group, image.shape)
                yield index, (stem_sim.Sample(image, labels, defects[defects[:, 0] == i, 1:]), own)
                index += 1


def _stored_settings(group, shape) -> StemSettings:
    """A multislice group's settings with its pixel size (the mean of the pixel's two sides) and an image shape."""
    return dataclasses.replace(StemSettings(**json.loads(group.attrs["settings"])),
                               pixel_size=math.sqrt(float(np.prod(group.attrs["pixel_size"]))),
                               image_size=int(shape[0]), image_width=int(shape[1]))


def _sources(parts: list[tuple[int, str]]) -> str:
    """The split's `source`: the simulator, or with several, which images each made."""
    if len(parts) == 1:
        return parts[0][1]
    starts = np.cumsum([0] + [n for n, _ in parts])
    return "; ".join(f"{f'images {a}-{a + n - 1}' if n > 1 else f'image {a}'}: {text}"
                     for a, (n, text) in zip(starts, parts) if n)


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


def _write(group, settings: StemSettings, n: int, items, ragged: bool = False, per_image: bool = False) -> dict:
    """Store a split. Images of one size: ``images`` and ``labels`` (N, H, W). Images of many sizes (``ragged``)
    are stored as they are, not padded: ``images`` and ``labels`` (N,) of flattened pixels with their ``shapes``
    (N, 2), so no pixel is stored or trained on that is not an image's, and the loss needs no ignore label.
    ``per_image``: each image's settings too (``settings``, JSON)."""
    if ragged:
        images = group.create_dataset("images", (n,), h5py.vlen_dtype(np.float32))
        labels = group.create_dataset("labels", (n,), h5py.vlen_dtype(np.uint8))
        shapes = group.create_dataset("shapes", (n, 2), np.int64)
    else:
        h, w = settings.shape
        chunks = (1, h, w) if n else None
        images = group.create_dataset("images", (n, h, w), np.float32, chunks=chunks)
        labels = group.create_dataset("labels", (n, h, w), np.uint8, chunks=chunks, compression="lzf" if n else None)
    drawn = group.create_dataset("settings", (n,), h5py.string_dtype("utf-8")) if per_image else None
    tables = [np.zeros((0, 4), np.float32)] * n
    for i, (sample, own) in items:
        if ragged:
            images[i], labels[i], shapes[i] = sample.image.ravel(), sample.labels.ravel(), sample.image.shape
        else:
            images[i], labels[i] = sample.image, sample.labels
        if drawn is not None:
            drawn[i] = json.dumps(dataclasses.asdict(own), sort_keys=True)
        tables[i] = np.concatenate([np.full((len(sample.defects), 1), i, np.float32), sample.defects], axis=1)
    group.create_dataset("defects", data=np.concatenate(tables) if tables else np.zeros((0, 4), np.float32))
    return summary(group)


def summary(group) -> dict:
    """{"images": N, class name: number of defects, ...} of a stored split."""
    defects = group["defects"][()]
    found = np.bincount(defects[:, 3].astype(np.int64), minlength=len(CLASSES))
    return {"images": len(group["images"]), **{name: int(found[c]) for c, name in enumerate(CLASSES) if c > 0}}


def read(group, rows) -> tuple[list | np.ndarray, list | np.ndarray]:
    """(images, labels) of the given rows of a split: arrays (N, H, W), or lists of 2-D arrays when ragged."""
    rows = np.asarray(rows, dtype=np.int64)
    if "shapes" not in group:
        return group["images"][rows], group["labels"][rows]
    shapes = group["shapes"][()]
    images, labels = group["images"], group["labels"]
    return ([images[r].reshape(shapes[r]) for r in rows], [labels[r].reshape(shapes[r]) for r in rows])
