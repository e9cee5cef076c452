"""Data sets of periodic two-phase microstructures and their FFT elasticity solutions, made over MPI ranks.

Sample i of a split is drawn from its own generator (seed, split, i), so the file is the same for any number of
ranks. Samples are made in chunks of `CHUNK`; each finished chunk is written atomically to its own file in
`<path>.parts/`, so an interrupted run loses at most the chunks in progress and a rerun makes only the missing
ones. Rank r makes the missing chunks r, r + size, ...; rank 0 then merges the parts into the HDF5 file (written
under a temporary name of its own and renamed) and removes the parts.

HDF5 layout: attribute `recipe` (JSON); groups train/val/test with `volumes` (N, n, n, n) uint8, `c11` (N,)
float64 (GPa, under macroscopic ε11), `iterations` (N,) int64, `volume_fraction` (N,), `axis` (N,),
`correlation_lengths` (N, 3), `kind` (N,) strings and, when the recipe asks for fields, `strain` (N, n, n, n)
float32: the ε11 field divided by the applied macroscopic ε11.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from menndl_py.config import setting
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.physics import elasticity
from menndl_py.physics.microstructure import sample_family
from menndl_py.tasks.base import SPLITS, SkipImage, Task
from menndl_py.tasks.making import temp_path

CHUNK = 4
_PER_SAMPLE = ("volume_fraction", "axis", "correlation_lengths", "kind")


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), index)))


PHASES_AS_INPUT = "phase 0 as -1, phase 1 as +1 (float32)"


def as_input(volumes: np.ndarray) -> np.ndarray:
    """Phases 0/1 as network inputs −1/+1 (float32)."""
    return volumes.astype(np.float32) * 2 - 1


def moduli(recipe: dict) -> tuple[float, float]:
    """Young's moduli (GPa) of phase 0 (soft) and phase 1 (contrast × soft)."""
    return recipe["E_soft"], recipe["E_soft"] * recipe["contrast"]


def draw(recipe: dict, split: str, index: int) -> tuple[np.ndarray, dict]:
    """Volume `index` of `split` and its descriptors."""
    volumes, info = sample_family(1, (recipe["size"],) * 3, (recipe["vf_min"], recipe["vf_max"]),
                                  sample_rng(recipe["seed"], split, index),
                                  (recipe["length_min"], recipe["length_max"]),
                                  (recipe["aspect_min"], recipe["aspect_max"]))
    return volumes[0], {k: v[0] for k, v in info.items()}


def solve_sample(recipe: dict, volume: np.ndarray) -> dict:
    """C11 (and the ε11 field over the applied ε11, if the recipe asks) of one volume under macroscopic ε11 = 1."""
    solution = elasticity.solve(volume, moduli(recipe), recipe["nu"], np.eye(6)[0], tol=recipe["tol"])
    out = {"c11": solution.average_stress[0], "iterations": solution.iterations}
    if recipe["fields"]:
        out["strain"] = solution.strain[0].astype(np.float32)
    return out


def _chunks(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [(split, c) for split in SPLITS for c in range(-(-counts[split] // CHUNK))]


def _part(parts: Path, split: str, chunk: int) -> Path:
    return parts / f"{split}-{chunk:05d}.npz"


def _make_chunk(recipe: dict, parts: Path, split: str, chunk: int) -> None:
    rows = []
    for i in range(chunk * CHUNK, min((chunk + 1) * CHUNK, recipe["counts"][split])):
        volume, info = draw(recipe, split, i)
        rows.append({"volumes": volume, **info, **solve_sample(recipe, volume)})
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    tmp = temp_path(_part(parts, split, chunk), ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, _part(parts, split, chunk))


def _start(path: Path, recipe: dict) -> list[tuple[str, int]]:
    """Rank 0: the parts directory ready for this recipe; the chunks still to make."""
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    stamp = parts / "recipe.json"
    if stamp.exists() and json.loads(stamp.read_text()) != recipe:
        raise UserError(f"{parts}: holds parts of another recipe; remove it to make the data set again")
    stamp.write_text(json.dumps(recipe, sort_keys=True))
    return [c for c in _chunks(recipe["counts"]) if not _part(parts, *c).exists()]


def make_dataset(path, recipe: dict, share: Solo = Solo()) -> dict:
    """Make (or finish making) the data set of `recipe` at `path`; every rank of `share` calls this.

    `recipe` holds size, counts {split: N}, seed, vf_min/vf_max, length_min/length_max, aspect_min/aspect_max,
    E_soft, contrast, nu, tol and fields (bool). Returns, on every rank, {split: N, "resumed_chunks": k, ...}.
    """
    path = Path(path)
    todo, error = None, None
    if share.rank == 0:
        try:
            todo = _start(path, recipe)
        except (OSError, UserError) as exc:
            error = str(exc)
    todo, error = share.bcast((todo, error))
    if error is not None:
        raise UserError(error)
    parts = path.with_suffix(".parts")
    failure = None
    try:
        for split, chunk in share.mine(todo):
            _make_chunk(recipe, parts, split, chunk)
    except Exception as exc:  # noqa: BLE001 - reported to every rank below, so that none waits forever
        if share.size == 1:
            raise
        failure = f"rank {share.rank}: {type(exc).__name__}: {exc}"
    failures = [f for f in share.allgather(failure) if f]
    if failures:
        raise RuntimeError(f"making {path} failed ({failures[0]}); rerun to continue from the finished chunks")
    summary = None
    if share.rank == 0:
        summary = _merge(path, recipe, parts)
        summary["resumed_chunks"] = len(_chunks(recipe["counts"])) - len(todo)
    return share.bcast(summary)


def _merge(path: Path, recipe: dict, parts: Path) -> dict:
    import h5py

    partial = temp_path(path, ".partial")
    n = recipe["size"]
    summary = {}
    try:
        with h5py.File(partial, "w") as f:
            f.attrs["recipe"] = json.dumps(recipe, sort_keys=True)
            for split in SPLITS:
                count = recipe["counts"][split]
                g = f.create_group(split)
                g.create_dataset("volumes", (count, n, n, n), np.uint8, chunks=(1, n, n, n) if count else None,
                                 compression="lzf" if count else None)
                if recipe["fields"]:
                    g.create_dataset("strain", (count, n, n, n), np.float32, chunks=(1, n, n, n) if count else None)
                columns = {}
                for c in range(-(-count // CHUNK)):
                    with np.load(_part(parts, split, c)) as data:
                        rows = slice(c * CHUNK, c * CHUNK + len(data["volumes"]))
                        g["volumes"][rows] = data["volumes"]
                        if recipe["fields"]:
                            g["strain"][rows] = data["strain"]
                        for key in ("c11", "iterations", *_PER_SAMPLE):
                            columns.setdefault(key, []).append(data[key])
                for key, values in columns.items():
                    values = np.concatenate(values)
                    g.create_dataset(key, data=values.astype(h5py.string_dtype()) if key == "kind" else values)
                summary[split] = count
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    shutil.rmtree(parts)
    return summary


def check_file(path: Path, recipe: dict, task: str) -> None:
    """UserError (naming the file) unless `path` holds the data set of `recipe`."""
    import h5py

    again = f"make it again with 'menndl data make {task} --force'"
    try:
        with h5py.File(path, "r") as f:
            if json.loads(f.attrs["recipe"]) != recipe:
                raise UserError(f"{path}: made from another recipe; {again}")
            n = recipe["size"]
            for split in SPLITS:
                g = f[split]
                if g["volumes"].shape != (recipe["counts"][split], n, n, n) or len(g["c11"]) != len(g["volumes"]):
                    raise UserError(f"{path}: {split}/volumes has shape {g['volumes'].shape}, expected "
                                    f"{(recipe['counts'][split], n, n, n)}; {again}")
                if recipe["fields"] and g["strain"].shape != g["volumes"].shape:
                    raise UserError(f"{path}: {split}/strain has shape {g['strain'].shape}; {again}")
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: unreadable or incomplete microstructure data set ({exc}); {again}") from None


def symmetric_images(tensors: tuple, generator: torch.Generator, roll_x1: bool = True) -> tuple:
    """Samples (..., x1, x2, x3: the last three axes are space, x1 the loading axis) under random symmetries that
    keep the ε11 response: each sample gets a mirror image of each axis (through its centre) with probability 1/2,
    x2 swapped with x3 with probability 1/2, and a random periodic translation in x2 and x3, and in x1 too with
    `roll_x1` (whole periodic volumes; not slabs, whose x1 extent is a window around their plane). The tensors (a
    batch of inputs, and of their strain fields) get the same ones. ε11 under ε11 loading is unchanged by these,
    so C11 stays exact and a strain field moves with its microstructure."""
    first = tensors[0]
    coins = torch.rand((len(first), 4), generator=generator) < 0.5
    shifts = torch.stack([torch.randint(0, n, (len(first),), generator=generator) for n in first.shape[-3:]], 1)
    if not roll_x1:
        shifts[:, 0] = 0
    out = []
    for x in tensors:
        x = x.clone()
        for axis in range(3):
            pick = coins[:, axis].nonzero()[:, 0].to(x.device)
            x[pick] = x[pick].flip(x.dim() - 3 + axis)
        pick = coins[:, 3].nonzero()[:, 0].to(x.device)
        x[pick] = x[pick].transpose(-1, -2)
        out.append(roll_each(x, shifts))
    return tuple(out)


def roll_each(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each sample of x (batch first, last three axes space) rolled periodically by its row of shifts (batch, 3):
    `torch.roll` per sample, as one gather per axis (a few kernels on a GPU, not one per sample)."""
    for axis in range(3):
        dim = x.dim() - 3 + axis
        n = x.shape[dim]
        shape = [len(x)] + [1] * (x.dim() - 1)
        shape[dim] = n
        index = (torch.arange(n) - shifts[:, axis:axis + 1]) % n  # roll: out[i] = x[i - shift]
        x = x.gather(dim, index.view(shape).to(x.device).expand_as(x))
    return x


def read(path: Path, split: str, keys: tuple[str, ...], rows=None) -> dict[str, np.ndarray]:
    """Datasets `keys` of `split` (all rows, or the given ones)."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f[split]
        return {k: g[k][()] if rows is None else g[k][rows] for k in keys}


# ------------------------------------------------------------------------------------------- task base

@dataclass(frozen=True)
class MicrostructureOptions:
    """What both microstructure tasks share: the volumes, the phases and the solver."""

    size: int = setting(51, min=3, max=256)  # voxels a side
    train_volumes: int = setting(400, min=1, max=1_000_000)
    val_volumes: int = setting(100, min=1, max=1_000_000)
    test_volumes: int = setting(100, min=1, max=1_000_000)
    seed: int = setting(0, min=0, max=2**63 - 1)
    vf_min: float = setting(0.2, min=0.0, max=1.0)  # volume fraction of the hard phase, uniform in [vf_min, vf_max]
    vf_max: float = setting(0.8, min=0.0, max=1.0)
    length_min: float = setting(1.0, min=0.0)  # Gaussian-filter correlation length s (voxels), uniform in the range
    length_max: float = setting(3.0, min=0.0)
    aspect_min: float = setting(2.0, min=1.0)  # aspect ratio of elongated and plate-like grains
    aspect_max: float = setting(4.0, min=1.0)
    E_soft: float = setting(10.0)  # GPa, phase 0
    contrast: float = setting(50.0)  # E_hard / E_soft
    nu: float = setting(0.3, min=-0.99, max=0.49)  # Poisson's ratio of both phases
    tol: float = setting(1e-5, min=1e-12, max=0.1)  # the solver's relative residual
    augment: bool = setting(True)  # train on random symmetric images of the samples (see `symmetric_images`)


class MicrostructureTask(Task):
    """A task whose data set is made by `make_dataset` from its options (one file per recipe)."""

    parallel_data = True
    fields: bool = False  # whether the data set keeps the strain fields

    def prepare_image(self, image: np.ndarray, genome) -> np.ndarray:
        """A volume (n, n, n) of phases 0 and 1 as the network's input (1, n, n, n) (`menndl predict`)."""
        shape = (self.options.size,) * 3
        if image.shape != shape:
            raise SkipImage(f"shape {image.shape}; the network takes volumes of {'×'.join(map(str, shape))} voxels")
        if image.dtype.kind not in "buif" or not np.isin(image, (0, 1)).all():
            raise SkipImage("voxels must be phases 0 and 1")
        return as_input(image[None])

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        o = self.options
        for name in ("contrast", "E_soft"):
            if not getattr(o, name) > 0:
                raise UserError(f"task.options.{name}: must be > 0, got {getattr(o, name)!r}")
        for low, high in (("vf_min", "vf_max"), ("length_min", "length_max"), ("aspect_min", "aspect_max")):
            if getattr(o, low) > getattr(o, high):
                raise UserError(f"task.options.{low}: must be <= {high} ({getattr(o, high)!r}), "
                                f"got {getattr(o, low)!r}")

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
        return (symmetric_images((x,), generator)[0], y) if self.options.augment else (x, y)

    def recipe(self) -> dict:
        o = self.options
        keys = ("size", "seed", "vf_min", "vf_max", "length_min", "length_max", "aspect_min", "aspect_max", "E_soft",
                "contrast", "nu", "tol")
        return {**{k: getattr(o, k) for k in keys}, "fields": self.fields,
                "counts": {s: getattr(o, f"{s}_volumes") for s in SPLITS}}

    @property
    def data_path(self) -> Path:
        """One file per recipe, so a changed config never meets stale data."""
        digest = hashlib.sha1(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:10]
        return self.data_dir / f"{self.name}-{digest}.h5"

    def make_data(self, share: Solo = Solo()) -> str:
        counts = make_dataset(self.data_path, self.recipe(), share)
        return f"{self.data_path}: {json.dumps(counts)}"

    def check_data(self) -> None:
        check_file(self.data_path, self.recipe(), self.name)

    def c11_phases(self) -> tuple[float, float]:
        """C11 (GPa) of the soft and the hard phase."""
        nu = self.options.nu
        factor = (1 - nu) / ((1 + nu) * (1 - 2 * nu))
        e0, e1 = moduli(self.recipe())
        return e0 * factor, e1 * factor
