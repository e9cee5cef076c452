"""Reading images for batch inference: HDF5 datasets, TIFF files and stacks, grayscale PNG files, NumPy `.npy`
arrays and `.npz` archives, the EBSD pattern files of microscope vendors that kikuchipy reads (NORDIF `.dat` with its
`Setting.txt`, EDAX `.up1`/`.up2`, Oxford `.ebsp` and `.h5oina`: every pattern of the scan, row by row), or folders of
them, listed in a fixed order, read one by one; an image that cannot be
used raises SkipImage with the reason.

For 2-D tasks (`dims=2`) an array of 2 axes is one image and one of 3 a stack of them; for 3-D tasks (`dims=3`) an
array of 3 axes is one volume and one of 4 a stack of volumes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from menndl_py.tasks.base import SkipImage

SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".h5ebsd": "hdf5", ".tif": "tiff", ".tiff": "tiff", ".png": "png",
            ".npy": "npy", ".npz": "npz", ".dat": "ebsd", ".up1": "ebsd", ".up2": "ebsd", ".ebsp": "ebsd",
            ".h5oina": "ebsd"}
EBSD_BLOCK = 1024  # patterns of a vendor's EBSD file read at a time
NPZ_ARRAY = "images"  # the array of an .npz archive read when no other is named (AtomAI's convention)


@dataclass(frozen=True)
class Item:
    """One image of the input: a file, or one entry of a stack in a file."""

    source: str  # how it is named to the user: "a.png", "b.tif[3]", "c.h5:/images[12]"
    path: Path
    dataset: Optional[str] = None  # HDF5 dataset or .npz array
    index: Optional[int] = None  # position in a stack
    error: str = ""  # set when the file could not even be listed


def list_items(inputs: list[str], dataset: Optional[str] = None, dims: int = 2) -> list[Item]:
    """Every image (or, with `dims=3`, volume) named by `inputs` (files or folders), in a fixed order that every
    rank agrees on."""
    items = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
            if not files:
                items.append(Item(name, path, error=f"no {', '.join(sorted(SUFFIXES))} files in this folder"))
            items += [item for p in files for item in _list_file(p, dataset, dims)]
        elif not path.exists():
            items.append(Item(name, path, error="no such file or folder"))
        else:
            items += _list_file(path, dataset, dims)
    return items


def _list_file(path: Path, dataset: Optional[str], dims: int) -> list[Item]:
    kind = SUFFIXES.get(path.suffix.lower())
    try:
        if kind == "hdf5":
            return _list_hdf5(path, dataset, dims)
        if kind == "npy":
            return _stack_items(str(path), path, None, np.load(path, mmap_mode="r").shape, dims)
        if kind == "npz":
            name = dataset or NPZ_ARRAY
            with np.load(path) as archive:
                if name not in archive.files:
                    return [Item(f"{path}:{name}", path, error=f"no array {name!r} in this file (it holds "
                                                                 f"{', '.join(archive.files) or 'none'})")]
                shape = _npz_shape(archive, name)
            return _stack_items(f"{path}:{name}", path, name, shape, dims)
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
            if (dims == 2 and len(shape) == 3 and shape[-1] not in (3, 4)) or (dims == 3 and len(shape) == 4):
                return [Item(f"{path}[{i}]", path, index=i) for i in range(shape[0])]
            return [Item(str(path), path)]
        if kind == "png":
            return [Item(str(path), path)]
        if kind == "ebsd":
            count = int(np.prod(_ebsd_patterns(path).shape[:-2]))
            return [Item(f"{path}[{i}]", path, index=i) for i in range(count)]
        return [Item(str(path), path, error=f"unknown image format {path.suffix!r} (expected "
                                              f"{', '.join(sorted(SUFFIXES))})")]
    except Exception as exc:  # noqa: BLE001 - a file that cannot be opened is skipped, not fatal
        return [Item(str(path), path, error=f"cannot read: {_one_line(exc)}")]


def _npz_shape(archive, name: str) -> tuple:
    """The shape of an .npz member from its header, without decompressing the array."""
    with archive.zip.open(f"{name}.npy") as member:
        header = np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(member) == (1, 0) else \
            np.lib.format.read_array_header_2_0
        return header(member)[0]


def _stack_items(source: str, path: Path, name: Optional[str], shape: tuple, dims: int) -> list[Item]:
    """One item for an array of `dims` axes, one per entry of a stack of `dims` + 1 axes."""
    if len(shape) == dims + 1:
        return [Item(f"{source}[{i}]", path, name, i) for i in range(shape[0])]
    return [Item(source, path, name)]


def _list_hdf5(path: Path, dataset: Optional[str], dims: int) -> list[Item]:
    with h5py.File(path, "r") as f:
        if dataset is not None:
            if not isinstance(f.get(dataset), h5py.Dataset):
                return [Item(f"{path}:{dataset}", path, error=f"no dataset {dataset!r} in this file")]
            names = [dataset]
        else:
            names = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                         and obj.ndim in (dims, dims + 1) else None)
            if not names:
                return [Item(str(path), path, error=f"no {dims}-D or {dims + 1}-D dataset in this file")]
        return [item for name in names for item in _stack_items(f"{path}:/{name}", path, name, f[name].shape, dims)]


class Reader:
    """Reads items one by one, keeping the last file open (stacks are read image by image)."""

    def __init__(self):
        self._path, self._handle, self._stacks = None, None, {}
        self._ebsd_block = (None, None, None)  # (path, first index, patterns) of the block read last

    def read(self, item: Item) -> np.ndarray:
        if item.error:
            raise SkipImage(item.error)
        try:
            kind = SUFFIXES[item.path.suffix.lower()]
            if kind == "png":
                return _read_png(item.path)
            if kind == "ebsd":
                return self._ebsd_pattern(item)
            handle = self._open(item.path, kind)
            if kind in ("hdf5", "npy"):
                data = handle[item.dataset] if kind == "hdf5" else handle
                return np.array(data[item.index] if item.index is not None else data[()])  # not a view of the file
            if kind == "npz":  # a member is decompressed whole: once per file
                data = self._stack(item.dataset, lambda: handle[item.dataset])
                return data[item.index] if item.index is not None else data
            series = handle.series[0]
            if item.index is None:
                return series.asarray()
            if len(series.pages) == series.shape[0]:
                return series.pages[item.index].asarray()
            return self._stack(None, series.asarray)[item.index]  # a stack stored in one page: read once
        except SkipImage:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable or corrupt data: skip this image, keep going
            raise SkipImage(f"cannot read: {_one_line(exc)}") from None

    def _ebsd_pattern(self, item: Item) -> np.ndarray:
        """One pattern of a vendor's EBSD file, read EBSD_BLOCK patterns at a time."""
        start = item.index - item.index % EBSD_BLOCK
        if self._ebsd_block[:2] != (item.path, start):
            self._ebsd_block = (item.path, start, np.asarray(_ebsd_patterns(item.path)[start:start + EBSD_BLOCK]))
        return self._ebsd_block[2][item.index - start]

    def _stack(self, name: Optional[str], read) -> np.ndarray:
        """The array `name` of the open file, read by `read` the first time it is asked for."""
        if name not in self._stacks:
            self._stacks[name] = read()
        return self._stacks[name]

    def _open(self, path: Path, kind: str):
        if self._path != path:
            self.close()
            if kind == "hdf5":
                self._handle = h5py.File(path, "r")
            elif kind == "npy":
                self._handle = np.load(path, mmap_mode="r")
            elif kind == "npz":
                self._handle = np.load(path)
            else:
                import tifffile

                self._handle = tifffile.TiffFile(path)
            self._path = path
        return self._handle

    def close(self) -> None:
        if hasattr(self._handle, "close"):  # a memory-mapped .npy array is closed by dropping it
            self._handle.close()
        self._path, self._handle, self._stacks = None, None, {}


def _ebsd_patterns(path: Path):
    """The patterns of a vendor's EBSD file as a lazy (dask) array of N × H × W, read by kikuchipy."""
    import contextlib
    import io
    import warnings

    import kikuchipy

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. that a NORDIF scan has no static background beside it
        data = kikuchipy.load(path, lazy=True).data
    return data.reshape(-1, *data.shape[-2:])


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        array = np.asarray(image)
        if image.mode in ("RGB", "RGBA"):
            rgb = array[..., :3]
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise SkipImage(f"colour image (mode {image.mode}); expected a grayscale image")
            return rgb[..., 0]
        if image.mode not in ("L", "I", "I;16", "I;16B", "F"):
            raise SkipImage(f"image mode {image.mode}; expected a grayscale image")
        return array


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def single_channel(image: np.ndarray, dims: int = 2, shape: Optional[tuple] = None) -> np.ndarray:
    """`image` as a `dims`-D array of numbers (a leading channel axis of 1 dropped), of `shape` if given, with
    finite values; else SkipImage with the reason (what predict says of an image it cannot use)."""
    if image.ndim == dims + 1 and image.shape[0] == 1:
        image = image[0]
    if image.dtype.kind not in "buif":
        raise SkipImage(f"wrong dtype {image.dtype}; expected numbers")
    if image.ndim != dims:
        raise SkipImage(f"shape {image.shape}; expected a {dims}-D single-channel {'image' if dims == 2 else 'volume'}")
    if shape is not None and image.shape != tuple(shape):
        raise SkipImage(f"shape {image.shape}; the network takes {'×'.join(map(str, shape))}")
    if not np.isfinite(image).all():
        raise SkipImage("contains NaN or infinite values")
    return image
