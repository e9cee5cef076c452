"""Batch inference: the best network of a run over image files (HDF5, TIFF, PNG), sharded over MPI ranks.

Each rank takes every size-th image; rank 0 writes what all ranks find, as it arrives, to one HDF5 file (a class
map per image, the defect table, the skipped images and why) and a CSV of defects beside it. An image that cannot
be used is skipped with a one-line reason; the others go on. The task reads the network's outputs with the
calibration recorded beside its weights (for STEM defects, the detection thresholds in result.json).
"""
from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import h5py
import numpy as np
import torch
from tqdm import tqdm

from menndl_py import config as config_module
from menndl_py.cluster import mpi
from menndl_py.cluster.worker import pick_device
from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.tasks import make_task
from menndl_py.tasks.base import SkipImage

SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".tif": "tiff", ".tiff": "tiff", ".png": "png"}
TAG_RESULT, TAG_DONE = 40, 41
EXIT_SKIPPED = 1


@dataclass(frozen=True)
class Item:
    """One image of the input: a file, or one entry of a stack in a file."""

    source: str  # how it is named to the user: "a.png", "b.tif[3]", "c.h5:/images[12]"
    path: Path
    dataset: Optional[str] = None  # HDF5 dataset
    index: Optional[int] = None  # position in a stack
    error: str = ""  # set when the file could not even be listed


def list_items(inputs: list[str], dataset: Optional[str] = None) -> list[Item]:
    """Every image named by `inputs` (files or folders), in a fixed order that every rank agrees on."""
    items = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
            if not files:
                items.append(Item(name, path, error=f"no {', '.join(sorted(SUFFIXES))} files in this folder"))
            items += [item for p in files for item in _list_file(p, dataset)]
        elif not path.exists():
            items.append(Item(name, path, error="no such file or folder"))
        else:
            items += _list_file(path, dataset)
    return items


def _list_file(path: Path, dataset: Optional[str]) -> list[Item]:
    kind = SUFFIXES.get(path.suffix.lower())
    try:
        if kind == "hdf5":
            return _list_hdf5(path, dataset)
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
            if len(shape) == 3 and shape[-1] not in (3, 4):
                return [Item(f"{path}[{i}]", path, index=i) for i in range(shape[0])]
            return [Item(str(path), path)]
        if kind == "png":
            return [Item(str(path), path)]
        return [Item(str(path), path, error=f"unknown image format {path.suffix!r} (expected "
                                              f"{', '.join(sorted(SUFFIXES))})")]
    except Exception as exc:  # noqa: BLE001 - a file that cannot be opened is skipped, not fatal
        return [Item(str(path), path, error=f"cannot read: {_one_line(exc)}")]


def _list_hdf5(path: Path, dataset: Optional[str]) -> list[Item]:
    with h5py.File(path, "r") as f:
        if dataset is not None:
            if not isinstance(f.get(dataset), h5py.Dataset):
                return [Item(f"{path}:{dataset}", path, error=f"no dataset {dataset!r} in this file")]
            names = [dataset]
        else:
            names = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                         and obj.ndim in (2, 3) else None)
            if not names:
                return [Item(str(path), path, error="no 2-D or 3-D dataset in this file")]
        items = []
        for name in names:
            shape = f[name].shape
            if len(shape) == 3:
                items += [Item(f"{path}:/{name}[{i}]", path, name, i) for i in range(shape[0])]
            else:
                items.append(Item(f"{path}:/{name}", path, name))
        return items


class Reader:
    """Reads items one by one, keeping the last file open (stacks are read image by image)."""

    def __init__(self):
        self._path, self._handle, self._stack = None, None, None

    def read(self, item: Item) -> np.ndarray:
        if item.error:
            raise SkipImage(item.error)
        try:
            kind = SUFFIXES[item.path.suffix.lower()]
            if kind == "png":
                return _read_png(item.path)
            handle = self._open(item.path, kind)
            if kind == "hdf5":
                data = handle[item.dataset]
                return data[item.index] if item.index is not None else data[()]
            series = handle.series[0]
            if item.index is None:
                return series.asarray()
            if len(series.pages) == series.shape[0]:
                return series.pages[item.index].asarray()
            if self._stack is None:  # the stack is stored in one page: read it once
                self._stack = series.asarray()
            return self._stack[item.index]
        except SkipImage:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable or corrupt data: skip this image, keep going
            raise SkipImage(f"cannot read: {_one_line(exc)}") from None

    def _open(self, path: Path, kind: str):
        if self._path != path:
            self.close()
            if kind == "hdf5":
                self._handle = h5py.File(path, "r")
            else:
                import tifffile

                self._handle = tifffile.TiffFile(path)
            self._path = path
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._path, self._handle, self._stack = None, None, None


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


class Output:
    """The output file (rank 0 only): class maps, the defect table and the skipped images, flushed as they come."""

    def __init__(self, path: Path, run_dir: Path, genome: Genome, class_names: tuple, overwrite: bool):
        if path.exists() and not overwrite:
            raise UserError(f"{path}: exists; choose another --output or pass --overwrite")
        if path.suffix.lower() not in (".h5", ".hdf5"):
            raise UserError(f"--output: must name an .h5 file, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = class_names
        self.h5 = h5py.File(path, "w")
        self.h5.attrs.update(run=str(run_dir), genome=genome.canonical(), classes=json.dumps(list(class_names)))
        self.maps = self.h5.create_group("maps")
        self.defects = self.h5.create_dataset("defects", (0, 5), np.float32, maxshape=(None, 5), chunks=(4096, 5))
        self.defects.attrs["columns"] = "image, y, x, class, confidence"
        text = h5py.string_dtype()
        self.skipped = self.h5.create_dataset("skipped", (0, 2), text, maxshape=(None, 2), chunks=(256, 2))
        self.csv_path = path.with_suffix(".csv")
        self.csv_file = open(self.csv_path, "w", newline="")
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["image", "source", "y", "x", "class", "confidence"])
        self.n_images = self.n_defects = 0
        self.skips: list[tuple[str, str]] = []

    def write(self, results: list[tuple]) -> None:
        for index, source, class_map, defects, reason in results:
            if reason:
                self.skips.append((source, reason))
                self.skipped.resize(len(self.skips), 0)
                self.skipped[-1] = (source, reason)
                tqdm.write(f"menndl: skipped {source}: {reason}", file=sys.stderr)
                continue
            dataset = self.maps.create_dataset(f"{index:07d}", data=class_map, compression="gzip",
                                               compression_opts=1)
            dataset.attrs["source"] = source
            if len(defects):
                n = len(self.defects)
                self.defects.resize(n + len(defects), 0)
                self.defects[n:] = np.column_stack([np.full(len(defects), index, np.float32), defects[:, :4]])
                for y, x, cls, conf in defects[:, :4]:
                    self.csv.writerow([index, source, f"{y:.2f}", f"{x:.2f}", self.class_names[int(cls)],
                                       f"{conf:.4f}"])
            self.n_images += 1
            self.n_defects += len(defects)
        self.h5.flush()
        self.csv_file.flush()

    def close(self) -> None:
        self.h5.close()
        self.csv_file.close()


def network_dir(run_dir: Path) -> Path:
    """Where a run's network to use is: final/ after `menndl retrain`, else best/."""
    return run_dir / "final" if (run_dir / "final" / "model.pt").is_file() else run_dir / "best"


def network_record(where: Path) -> dict:
    """The result record beside a network's weights (result.json, with the search's 'm:' prefixes dropped); {} if
    there is none."""
    path = where / "result.json"
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    return {key.removeprefix("m:"): value for key, value in record.items()}


def load_best(run_dir: Path, quiet: bool = False):
    """(task, genome, model in eval mode on CPU) of a run's network to use (see `network_dir`), the task calibrated
    for that network; unless `quiet`, a note on stderr when the network has no calibration and a fallback is used."""
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = config_module.load(run_dir / "config.yaml")
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    where = network_dir(run_dir)
    for name in ("genome.json", "model.pt"):
        if not (where / name).is_file():
            raise UserError(f"{where / name}: missing; the run has no trained network yet")
    genome = Genome.from_json((where / "genome.json").read_text())
    model = task.space().restricted(cfg.search.space).build(genome)
    model.load_state_dict(torch.load(where / "model.pt", map_location="cpu", weights_only=True))
    note = task.load_calibration(network_record(where))
    if note and not quiet:
        print(f"menndl: note: {where / 'result.json'}: {note}", file=sys.stderr, flush=True)
    return task, genome, model.eval()


def batches(items: list[tuple[int, Item]], reader: Reader, prepare, size: int) -> Iterator[tuple[list, list]]:
    """(ready, skipped): up to `size` prepared images of one shape, and the items that could not be used."""
    ready, skipped = [], []
    for index, item in items:
        try:
            array = prepare(reader.read(item))
        except SkipImage as exc:
            skipped.append((index, item.source, None, None, str(exc)))
            continue
        if ready and (array.shape != ready[0][2].shape or len(ready) == size):
            yield ready, skipped
            ready, skipped = [], []
        ready.append((index, item.source, array))
    if ready or skipped:
        yield ready, skipped


@torch.no_grad()
def infer(model, task, genome, ready: list, device) -> list[tuple]:
    """Run one batch through the network; class maps and defect tables per image."""
    x = torch.from_numpy(np.stack([array for _, _, array in ready])).to(device)
    found = task.interpret(model(task.pad_for(genome, x)), x.shape[-2:])
    return [(index, source, class_map, defects, "") for (index, source, _), (class_map, defects)
            in zip(ready, found)]


def predict(run_dir: str, inputs: list[str], output: str, *, batch_size: int = 8, dataset: Optional[str] = None,
            overwrite: bool = False, progress: bool = True) -> int:
    """Run the best network of `run_dir` over `inputs`; 0 if every image was used, EXIT_SKIPPED otherwise."""
    if batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {batch_size}")
    comm = mpi.world()
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    task, genome, model = load_best(Path(run_dir), quiet=rank != 0)
    device = pick_device(_local_rank(comm))
    model.to(device)
    items = list(enumerate(list_items(inputs, dataset)))
    if not items:
        raise UserError("INPUT: no images given")
    out, refusal = None, None
    if rank == 0:
        try:
            out = Output(Path(output), Path(run_dir), genome, task.class_names, overwrite)
        except UserError as exc:
            refusal = str(exc)
    if comm is not None:
        refusal = comm.bcast(refusal, root=0)  # the output is open (or refused) before anybody sends to it
    if refusal:
        raise UserError(refusal)
    bar = tqdm(total=len(items), unit="image", disable=not progress or rank != 0, file=sys.stderr)
    start, reader = time.monotonic(), Reader()
    for ready, skipped in batches(items[rank::size], reader, lambda a: task.prepare_image(a, genome), batch_size):
        results = skipped + (infer(model, task, genome, ready, device) if ready else [])
        if rank == 0:
            out.write(results)
            bar.update(len(results))
            _drain(comm, out, bar, block=False)
        else:
            comm.send(results, dest=0, tag=TAG_RESULT)
    reader.close()
    if rank != 0:
        comm.send(None, dest=0, tag=TAG_DONE)
        skipped = comm.bcast(None, root=0)
        return EXIT_SKIPPED if skipped else 0
    if comm is not None:
        _drain(comm, out, bar, block=True)
    bar.close()
    out.close()
    seconds = time.monotonic() - start
    print(f"[menndl] {out.n_images:,} images, {out.n_defects:,} defects in {seconds:.1f} s "
          f"({out.n_images / max(seconds, 1e-9):.1f} images/s on {size} rank{'s' * (size > 1)}); "
          f"skipped {len(out.skips)}; written to {output} and {out.csv_path}", flush=True)
    if comm is not None:
        comm.bcast(len(out.skips), root=0)
    return EXIT_SKIPPED if out.skips else 0


def _drain(comm, out: Output, bar, block: bool) -> None:
    """Write what other ranks have sent; with `block`, until every other rank has said it is done."""
    if comm is None:
        return
    from mpi4py import MPI

    done = 0  # a rank's "done" follows its results (MPI keeps each sender's order): only the blocking drain meets it
    while True:
        status = MPI.Status()
        if not block and not comm.iprobe(source=MPI.ANY_SOURCE, tag=TAG_RESULT):
            return
        if block and done == comm.size - 1:
            return
        message = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
        if status.Get_tag() == TAG_DONE:
            done += 1
            continue
        out.write(message)
        bar.update(len(message))


def _local_rank(comm) -> int:
    if comm is None:
        return 0
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED).rank


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
