"""Training states of candidates that may be promoted (`training.rungs`): `states/<id>.pt` in the run directory,
the bytes a group sent back (weights, optimizer, progress), read again when the candidate goes on training.

A state is a cache: written whole (a temporary file renamed into place) but not forced to disk, and removed once
its candidate can no longer be promoted. A candidate whose state is missing (lost in a crash, or removed) trains
from scratch when promoted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


class States:
    """The states of one run directory, by evaluation id."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.ids: set[int] = {int(p.stem) for p in self.directory.glob("*.pt") if p.stem.isdigit()} \
            if self.directory.is_dir() else set()

    def path(self, work_id: int) -> Path:
        return self.directory / f"{work_id}.pt"

    def save(self, work_id: int, state: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{work_id}.pt.tmp"
        tmp.write_bytes(state)
        os.replace(tmp, self.path(work_id))
        self.ids.add(work_id)

    def load(self, work_id: int) -> Optional[bytes]:
        try:
            return self.path(work_id).read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, work_id: int) -> None:
        self.path(work_id).unlink(missing_ok=True)
        self.ids.discard(work_id)
