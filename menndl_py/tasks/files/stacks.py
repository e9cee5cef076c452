"""Image stacks in a user's files, read where they lie: an HDF5 dataset, a `.npy` array, an `.npz` member, or a
folder of TIFF/PNG files (one image or volume per file, in sorted order, read by `menndl_py.images`); and the
parameter-free stage that standardises each image inside a network.

Shapes: (N, H, W) or (N, 1, H, W) for 2-D images, (N, D, H, W) or (N, 1, D, H, W) for 3-D volumes: one channel
only. Without `dims`, 3 axes are 2-D images, 4 axes 3-D volumes unless the second has length 1 (then a channel
axis of 2-D images), 5 axes 3-D volumes with a channel axis. Every problem is a one-line UserError naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import h5py
import numpy as np
import torch
import torch.nn as nn

from menndl_py.errors import UserError
from menndl_py.images import SUFFIXES, Item, Reader, list_items
from menndl_py.tasks.base import SkipImage

BLOCK = 64  # images read at a time when a whole stack is scanned
EPSILON = 1e-6  # the smallest standard deviation an image is divided by


class Stack:
    """N images (or volumes) of one shape in a file or folder, read by rows."""

    def __init__(self, path: Path, array: Optional[str], dims: Optional[int], what: str = "images"):
        self.path, self.array, self.what = Path(path), array, what
        if not self.path.exists():
            raise UserError(f"{self.path}: no such file or folder")
        self.kind = "folder" if self.path.is_dir() else SUFFIXES.get(self.path.suffix.lower())
        if self.kind not in ("folder", "hdf5", "npy", "npz"):
            raise UserError(f"{self.path}: unknown {what} format {self.path.suffix!r} (expected an HDF5 file, .npy, "
                            f".npz or a folder of TIFF/PNG files)")
        self.items: list[Item] = []
        if self.kind == "folder":
            raw = self._list_folder(dims)
        else:
            raw = self._array_shape()
        self.count, self.dims, self.shape, self._channel = _layout(raw, dims, self.where)

    # -- what it holds ---------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """The stack as named in messages: the folder, or the file and its dataset."""
        if self.kind == "hdf5":
            return f"{self.path}:/{self.array}"
        return f"{self.path}:{self.array}" if self.kind == "npz" else str(self.path)

    def name(self, row: int) -> str:
        """One image as named in messages."""
        return self.items[row].source if self.kind == "folder" else f"{self.where}[{row}]"

    def files(self) -> list[str]:
        """Folders: each image's file, relative to the folder, in row order."""
        return [str(item.path.relative_to(self.path)) for item in self.items]

    # -- reading -----------------------------------------------------------------------------------------
    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images of `rows` (increasing), (len(rows), *shape), in their stored dtype; UserError for an image
        that cannot be read or has another shape."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.kind == "folder":
            return self._read_files(rows)
        parts = []  # blocks of consecutive rows: fewer, larger reads than one per row
        with self._open() as data:
            for start in range(0, len(rows), BLOCK):
                block = rows[start:start + BLOCK]
                parts.append(self._slice(data, block[0], block[-1] + 1)[block - block[0]])
        images = np.concatenate(parts) if parts else np.zeros((0, *self.shape))
        return images.reshape(len(rows), *self.shape)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, images) over the whole stack, BLOCK images at a time (a file is opened once)."""
        if self.kind == "folder":
            for start in range(0, self.count, BLOCK):
                yield start, self.read(np.arange(start, min(start + BLOCK, self.count)))
            return
        with self._open() as data:
            for start in range(0, self.count, BLOCK):
                images = self._slice(data, start, min(start + BLOCK, self.count))
                yield start, images.reshape(len(images), *self.shape)

    def check_pixels(self) -> None:
        """UserError naming the first image that is not numeric or holds NaN or infinite values."""
        for start, images in self.blocks():
            if images.dtype.kind not in "buif":
                raise UserError(f"{self.where}: {self.what} of dtype {images.dtype}; expected numbers")
            if images.dtype.kind == "f":
                bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
                if bad.any():
                    row = start + int(np.flatnonzero(bad)[0])
                    raise UserError(f"{self.name(row)}: holds NaN or infinite values")

    # -- inside ------------------------------------------------------------------------------------------
    def _list_folder(self, dims: Optional[int]) -> tuple:
        self.items = list_items([str(self.path)], dims=dims or 3)
        for item in self.items:
            if item.error:
                raise UserError(f"{item.source}: {item.error}")
            if item.index is not None or item.dataset is not None:
                raise UserError(f"{item.path}: holds a stack; a folder of {self.what} must hold one image per "
                                f"file (TIFF or PNG)")
        first = self._read_item(0)
        return (len(self.items), *first.shape)

    def _read_item(self, row: int, reader: Optional[Reader] = None) -> np.ndarray:
        own = reader is None
        reader = reader or Reader()
        try:
            return reader.read(self.items[row])
        except SkipImage as exc:
            raise UserError(f"{self.items[row].source}: {exc}") from None
        finally:
            if own:
                reader.close()

    def _read_files(self, rows: np.ndarray) -> np.ndarray:
        reader, images = Reader(), []
        try:
            for row in rows:
                image = self._read_item(int(row), reader)
                image = image[0] if self._channel and image.ndim == self.dims + 1 else image
                if image.shape != self.shape:
                    raise UserError(f"{self.name(int(row))}: shape {image.shape} differs from the first image's "
                                    f"{self.shape} ({self.name(0)}); every image must have one shape")
                images.append(image)
        finally:
            reader.close()
        return np.stack(images) if images else np.zeros((0, *self.shape))

    def _slice(self, data, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(data[start:stop])
        except Exception as exc:  # noqa: BLE001 - damaged data, named in one line
            raise UserError(f"{self.where}: cannot read {self.what} {start} to {stop - 1} "
                            f"({' '.join(str(exc).split()) or type(exc).__name__})") from None

    def _array_shape(self) -> tuple:
        with self._open() as data:
            return tuple(data.shape)

    def _open(self) -> "_Opened":
        return _open_array(self.path, self.kind, self.array)


@dataclass
class _Opened:
    """An array (or HDF5 dataset) with the file to close after use."""

    data: Any
    handle: Any = None

    def __enter__(self):
        return self.data

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()


def _open_array(path: Path, kind: str, name: str) -> _Opened:
    """Array `name` of an HDF5 file or `.npz` archive, or a `.npy` file's array (memory-mapped where it can be)."""
    try:
        if kind == "hdf5":
            handle = h5py.File(path, "r")
            if not isinstance(handle.get(name), h5py.Dataset):
                names = _datasets(handle)
                handle.close()
                raise UserError(f"{path}: no dataset {name!r} (it holds {', '.join(names) or 'none'})")
            return _Opened(handle[name], handle)
        if kind == "npy":
            return _Opened(np.load(path, mmap_mode="r"))
        with np.load(path) as archive:
            if name not in archive.files:
                raise UserError(f"{path}: no array {name!r} (it holds {', '.join(archive.files) or 'none'})")
            return _Opened(archive[name])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file, named in one line
        raise UserError(f"{path}: cannot read ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def _datasets(handle: h5py.File) -> list[str]:
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _layout(raw: tuple, dims: Optional[int], where: str) -> tuple[int, int, tuple, bool]:
    """(count, dims, spatial shape, whether a channel axis of length 1 is dropped) of a stack of shape `raw`."""
    if dims is None:
        dims = {3: 2, 4: 2 if raw[1:2] == (1,) else 3, 5: 3}.get(len(raw))
        if dims is None:
            raise UserError(f"{where}: shape {raw}; expected (N, H, W) images or (N, D, H, W) volumes")
    channel = len(raw) == dims + 2 and raw[1] == 1
    if len(raw) != dims + 1 and not channel:
        expected = "(N, H, W) or (N, 1, H, W)" if dims == 2 else "(N, D, H, W) or (N, 1, D, H, W)"
        raise UserError(f"{where}: shape {raw} does not hold {dims}-D single-channel images; expected {expected}")
    spatial = tuple(raw[2:] if channel else raw[1:])
    if raw[0] == 0 or min(spatial) == 0:
        raise UserError(f"{where}: holds no images (shape {raw})")
    return raw[0], dims, spatial, channel


def read_array(path: Path, name: str) -> np.ndarray:
    """A whole (small) array of an HDF5 file or `.npz` archive: labels, splits, beside the images."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind not in ("hdf5", "npz"):
        raise UserError(f"{path}: only an HDF5 file or .npz archive holds {name!r} beside the images")
    with _open_array(Path(path), kind, name) as data:
        values = np.asarray(data[()])
    return np.array([v.decode() if isinstance(v, bytes) else v for v in values.ravel()]) \
        if values.dtype.kind in "OS" else values


class Standardise(nn.Module):
    """Each image (each channel) to zero mean and unit standard deviation over its pixels, in float32: raw pixel
    values in, so exported networks and `menndl predict` take images as they are stored."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        axes = tuple(range(2, x.dim()))
        centred = x - x.mean(dim=axes, keepdim=True)
        return centred / torch.sqrt((centred * centred).mean(dim=axes, keepdim=True) + EPSILON ** 2)


class Rescale(nn.Module):
    """Outputs in standard units back to a target's units: y · std + mean (buffers, saved with the network)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float32))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


@dataclass(frozen=True)
class StandardisedInputs:
    """The fixed `Inputs` stage of a file task's space: `Standardise`, the searched network, then `Rescale` when
    `target` (mean, std) is given. No genome holds the gene, so every genome takes this stage."""

    target: Optional[tuple[float, float]] = None
    gene: str = "standardise_inputs"
    default: bool = True

    def cost(self, value: Any, shape: tuple) -> tuple[int, int, tuple]:
        return 0, 4 * int(np.prod(shape)), shape

    def module(self, value: Any, shape: tuple, network: nn.Module) -> nn.Module:
        parts = [Standardise(), network] + ([Rescale(*self.target)] if self.target is not None else [])
        return nn.Sequential(*parts)


def standardise(images: np.ndarray, dims: int) -> np.ndarray:
    """Per-image standardisation in NumPy, as `Standardise` computes it (for baselines fitted outside a network)."""
    images = images.astype(np.float32)
    axes = tuple(range(images.ndim - dims, images.ndim))
    centred = images - images.mean(axis=axes, keepdims=True)
    return centred / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + EPSILON ** 2)
