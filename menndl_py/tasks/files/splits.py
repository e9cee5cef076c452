"""Which rows of a user's file train, validate and test: a split column (or dataset) when the file has one, else
seeded fractions; every split must leave each rank of a group enough rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from menndl_py.config import setting
from menndl_py.errors import UserError
from menndl_py.tasks.base import SPLITS

NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
MIN_ROWS_PER_RANK = 2  # of each split, on each rank of a group


@dataclass(frozen=True)
class FileOptions:
    """Options every file task takes. `path` (and any option ending in `_path`) is relative to the config file."""

    path: str = setting("")  # the user's file or folder
    split: Optional[str] = setting(None)  # a column (tables) or dataset (HDF5) of train / val / test per row
    val_fraction: float = setting(0.1, min=0.0, max=0.5)  # without `split`: seeded fractions
    test_fraction: float = setting(0.1, min=0.0, max=0.5)
    seed: int = setting(0, min=0, max=2**63 - 1)


def by_fractions(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Rows 0..n-1 split at random (seeded): `val_fraction` and `test_fraction` of them (at least one row each
    when the fraction is not 0), the rest train; each split's rows in increasing order."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in (val_fraction, test_fraction))
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {split: np.sort(parts[split]) for split in SPLITS}


def by_labels(values: Sequence, where: str) -> dict[str, np.ndarray]:
    """Rows by their split label (train, val or test; 'validation', 'valid' and 'training' also do);
    UserError naming `where` (the file and column) for any other value."""
    labels = np.asarray([str(v).strip().lower() for v in values])
    unknown = sorted(set(labels) - set(NAMES))
    if unknown:
        shown = ", ".join(repr(str(v)) for v in unknown[:3])
        raise UserError(f"{where}: split values must be train, val or test, got {shown}")
    canonical = np.asarray([NAMES[v] for v in labels]) if len(labels) else labels
    return {split: np.flatnonzero(canonical == split) for split in SPLITS}


def check_sizes(splits: dict[str, np.ndarray], ranks: int, where: str) -> None:
    """UserError when a split leaves a rank of a group of `ranks` with fewer than MIN_ROWS_PER_RANK rows."""
    need = ranks * MIN_ROWS_PER_RANK
    for split in SPLITS:
        if len(splits[split]) < need:
            raise UserError(f"{where}: the {split} split has {len(splits[split])} rows; groups of {ranks} ranks "
                            f"(cluster.ranks_per_candidate) need at least {need} ({MIN_ROWS_PER_RANK} per rank)")


def shard(rows: np.ndarray, shard: tuple[int, int]) -> np.ndarray:
    """This rank's rows: every size-th from its rank."""
    return rows[shard[0]::shard[1]]
