"""The checkpoint: a snapshot written atomically, plus a journal of one line per genome sent since it.

Appending a line per genome keeps the cost per result independent of the number of genomes in flight; the
snapshot (which lists them all) is rewritten only now and then, by `Checkpoint.snapshot`. Every line carries a
sequence number, and the snapshot the number of the last line it holds, so a kill between writing the snapshot
and emptying the journal loses nothing and applies nothing twice. A half-written last line is ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from menndl_py.errors import UserError
from menndl_py.rundir.layout import write_json_atomic


def journal_path(path: Path) -> Path:
    return path.with_suffix(".journal")


def read_checkpoint(path: Path) -> Optional[dict]:
    """The snapshot at `path` with its journal applied: `in_flight` gains each genome sent (one entry per id,
    the latest; some may have been stored since, which the master skips), and `next_id`, `ga`, `elapsed` and
    `seq` are the latest line's. None if there is no snapshot."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        journal = journal_path(path)
        lines = journal.read_bytes().split(b"\n")[:-1] if journal.exists() else []  # complete lines only
        entries = [json.loads(line) for line in lines]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({exc})") from None
    in_flight = {work["id"]: work for work in state["in_flight"]}
    for entry in entries:
        if entry["seq"] > state.get("seq", 0):
            in_flight[entry["work"]["id"]] = entry["work"]
            state.update(next_id=entry["next_id"], ga=entry["ga"], elapsed=entry["elapsed"], seq=entry["seq"])
    state["in_flight"] = list(in_flight.values())
    return state


class Checkpoint:
    """Writes one run's checkpoint: `snapshot(state)` for the whole state, `append(entry)` for each genome sent
    (`entry`: work, next_id, ga, elapsed). The first write of a process is a snapshot."""

    def __init__(self, path: Path, seq: int = 0):
        self.path, self.seq = Path(path), seq
        self.lines = 0  # in the journal since the last snapshot
        self._journal = None

    @property
    def started(self) -> bool:
        return self._journal is not None

    def snapshot(self, state: dict) -> None:
        write_json_atomic(self.path, {**state, "seq": self.seq})
        if self._journal is not None:
            self._journal.close()
        self._journal = open(journal_path(self.path), "w")  # emptied: the snapshot holds its lines
        self.lines = 0

    def append(self, entry: dict) -> None:
        self.seq += 1
        self._journal.write(json.dumps({**entry, "seq": self.seq}, separators=(",", ":")) + "\n")
        self._journal.flush()
        self.lines += 1

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
