"""Multislice STEM data sets (`physics.multislice`): one split per file, made over the ranks of a share, resumable.

Multislice images take seconds each, so a killed job keeps what it made: rank 0 stores every finished image in a
resume file beside the data file, and the next call with the same recipe makes only the missing ones.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import h5py
import numpy as np

from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.physics.multislice import Microscope, cell_extent, describe, image_shape, simulate
from menndl_py.physics.stem_sim import CLASSES, StemSettings
from menndl_py.tasks.making import item_rng, temp_path


def make_dataset(path, settings: StemSettings, microscope: Microscope, split: str, count: int, seed: int,
                 share: Solo = Solo(), say=lambda text: None, stream: int = 0) -> dict:
    """Write an HDF5 file with one group ``split`` of ``count`` multislice images (``images`` (N, H, W) float32,
    ``labels`` (N, H, W) uint8, ``defects`` (M, 4) float32: image index, y, x, class; attributes ``source``,
    ``settings``, ``microscope``, ``pixel_size``), image i from item_rng(seed, split, i, stream).

    Resumable: rank 0 keeps every finished image in ``<path>.resume`` (a name fixed by the path) and a new call
    with the same recipe simulates only the missing ones. Every other image index is spread over the ranks of
    ``share`` (after the finished ones are left out); rank 0 stores each as it arrives and renames the finished file
    into place. Returns on every rank {split: {"images": N, class name: defects}}."""
    path = Path(path)
    shape = image_shape(settings, microscope)
    recipe = json.dumps({"settings": dataclasses.asdict(settings), "microscope": dataclasses.asdict(microscope),
                         "split": split, "count": count, "seed": seed, **({"stream": stream} if stream else {})},
                        sort_keys=True)
    resume = path.with_name(path.name + ".resume")
    done, error = None, None
    if share.rank == 0:
        try:
            done = _open_resume(resume, recipe, shape, count)
        except OSError as exc:
            error = f"{resume}: cannot write ({exc})"
    error = share.bcast(error)
    if error is not None:
        raise UserError(error)
    remaining = [i for i in range(count) if i not in set(share.bcast(done))]
    if share.rank == 0 and done:
        say(f"{path.name}: {len(done)} of {count} {split} images made before; making the rest")
    own = share.mine(remaining)
    made = ([(i, simulate(settings, microscope, item_rng(seed, split, i, stream)))] for i in own)
    arrived = share.to_root(made, len(remaining) - len(own))
    result = None
    if share.rank == 0:
        with h5py.File(resume, "a") as f:
            for chunk in arrived:
                for i, sample in chunk:
                    f["images"][i], f["labels"][i] = sample.image, sample.labels
                    f["tables"][i] = sample.defects.ravel()
                    f["done"][i] = True
                f.flush()
        result = _finish(path, resume, split, settings, microscope, shape)
    else:
        for _ in arrived:
            pass
    return share.bcast(result)


def _open_resume(resume: Path, recipe: str, shape: tuple[int, int], count: int) -> list[int]:
    """The indices finished in the resume file, after (re)creating it when it is missing or of another recipe."""
    try:
        with h5py.File(resume, "r") as f:
            if f.attrs["recipe"] == recipe:
                return [int(i) for i in np.flatnonzero(f["done"][()])]
    except (OSError, KeyError):
        pass
    with h5py.File(resume, "w") as f:
        f.attrs["recipe"] = recipe
        f.create_dataset("images", (count, *shape), np.float32)
        f.create_dataset("labels", (count, *shape), np.uint8)
        f.create_dataset("tables", (count,), h5py.vlen_dtype(np.float32))
        f.create_dataset("done", (count,), bool)
    return []


def _finish(path: Path, resume: Path, split: str, settings: StemSettings, microscope: Microscope,
            shape: tuple[int, int]) -> dict:
    """Write the finished split from the resume file to a temporary name, rename it into place, drop the resume
    file; the split's summary."""
    partial = temp_path(path, ".partial")
    with h5py.File(resume, "r") as source, h5py.File(partial, "w") as f:
        group = f.create_group(split)
        n = len(source["done"])
        chunks = (1, *shape) if n else None
        group.create_dataset("images", data=source["images"][()], chunks=chunks)
        group.create_dataset("labels", data=source["labels"][()], chunks=chunks, compression="lzf" if n else None)
        tables = [np.concatenate([np.full((len(t) // 3, 1), i, np.float32), t.reshape(-1, 3)], axis=1)
                  for i, t in enumerate(source["tables"][()])]
        group.create_dataset("defects", data=np.concatenate(tables) if tables else np.zeros((0, 4), np.float32))
        pixel = np.array(cell_extent(settings, microscope)) / shape
        group.attrs["source"] = describe(microscope)
        group.attrs["settings"] = json.dumps(dataclasses.asdict(settings), sort_keys=True)
        group.attrs["microscope"] = json.dumps(dataclasses.asdict(microscope), sort_keys=True)
        group.attrs["pixel_size"] = pixel
        found = np.bincount(group["defects"][:, 3].astype(np.int64), minlength=len(CLASSES))
        result = {split: {"images": n, **{name: int(found[c]) for c, name in enumerate(CLASSES) if c > 0}}}
    os.replace(partial, path)
    resume.unlink()
    return result
