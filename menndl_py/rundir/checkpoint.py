"""The checkpoint: a snapshot written atomically, plus a journal of one line per genome sent since it.

Appending a line per genome keeps the cost per result independent of the number of genomes in flight; the
snapshot (which lists them all) is rewritten only now and then, by `Checkpoint.snapshot`. Every line carries a
sequence number, and the snapshot the number of the last line it holds, so a kill between writing the snapshot
and emptying the journal loses nothing and applies nothing twice. A half-written last line is ignored.

Each send of a genome counts as an attempt of its id (`attempts`): what the master forgets at a clean end (see
`Master.close`) is what a crash left, so a genome in flight at repeated crashes can be told apart. The snapshot is
forced to disk when written, the journal by `sync` (every few seconds, by the master).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

from menndl_py.errors import UserError
from menndl_py.rundir.layout import write_json_atomic


def journal_path(path: Path) -> Path:
    return path.with_suffix(".journal")


def empty_state(fingerprint: Optional[str] = None) -> dict:
    """The state of a run before its first genome; also what is known of one whose snapshot was lost (the
    results and the journal tell the rest)."""
    return {"fingerprint": fingerprint, "next_id": 0, "ga": None, "in_flight": [], "elapsed": 0.0,
            "finished": False, "seq": 0, "attempts": {}}


def read_checkpoint(path: Path, warn: Optional[Callable[[str], None]] = None) -> Optional[dict]:
    """The snapshot at `path` with its journal applied: `in_flight` gains each genome sent (one entry per id,
    the latest; some may have been stored since, which the master skips), `attempts` counts each send of an id
    (at its latest rung),
    and `next_id`, `ga`, `elapsed` and `seq` are the latest line's. None if there is no checkpoint at all.

    A missing, empty or unreadable snapshot (a crash of the node before it reached the disk), or lines that do
    not parse, raise a UserError; given `warn`, they are reported to it in one line instead, and the state is
    rebuilt from what is left: the journal, with `fingerprint` None and `ga` None unless a journal line has it.
    """
    path = Path(path)
    if not path.exists() and not journal_path(path).exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or "in_flight" not in state:
            raise ValueError("not a checkpoint")
    except (OSError, ValueError) as exc:
        if warn is None:
            raise UserError(f"{path}: unreadable checkpoint ({exc})") from None
        warn(f"{path}: empty or unreadable ({exc}); rebuilt from the results and the journal: genomes that were "
             f"in flight when it was written are not sent again, and without journal lines the time spent so far "
             f"is not counted")
        state = empty_state()
    entries = _journal(journal_path(path), warn)
    in_flight = {work["id"]: work for work in state["in_flight"]}
    attempts = {int(i): n for i, n in state.get("attempts", {}).items()}
    for entry in entries:
        if entry["seq"] > state.get("seq", 0):
            work_id = entry["work"]["id"]
            earlier = in_flight.get(work_id)
            same = earlier is not None and earlier.get("rung", 0) == entry["work"].get("rung", 0)
            in_flight[work_id] = entry["work"]
            attempts[work_id] = attempts.get(work_id, 0) + 1 if same else 1  # a promotion starts a new count
            state.update(next_id=entry["next_id"], ga=entry["ga"], elapsed=entry["elapsed"], seq=entry["seq"])
    state["in_flight"], state["attempts"] = list(in_flight.values()), attempts
    return state


def _journal(path: Path, warn: Optional[Callable[[str], None]]) -> list[dict]:
    """The journal's complete lines, up to the first that does not parse."""
    entries = []
    try:
        lines = path.read_bytes().split(b"\n")[:-1] if path.exists() else []  # complete lines only
        for n, line in enumerate(lines, 1):
            try:
                entries.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {n}: {exc}") from None
    except (OSError, ValueError) as exc:
        if warn is None:
            raise UserError(f"{path}: unreadable journal ({exc})") from None
        warn(f"{path}: unreadable ({exc}); the genomes it lists from there on are not sent again")
    return entries


class Checkpoint:
    """Writes one run's checkpoint: `snapshot(state)` for the whole state, `append(entry)` for each genome sent
    (`entry`: work, next_id, ga, elapsed). The first write of a process is a snapshot."""

    def __init__(self, path: Path, seq: int = 0):
        self.path, self.seq = Path(path), seq
        self.lines = 0  # in the journal since the last snapshot
        self.unsynced = False  # lines not yet forced to disk
        self._journal = None

    @property
    def started(self) -> bool:
        return self._journal is not None

    def snapshot(self, state: dict) -> None:
        write_json_atomic(self.path, {**state, "seq": self.seq})
        if self._journal is not None:
            self._journal.close()
        self._journal = open(journal_path(self.path), "w")  # emptied: the snapshot holds its lines
        self.lines, self.unsynced = 0, False

    def append(self, entry: dict) -> None:
        self.seq += 1
        self._journal.write(json.dumps({**entry, "seq": self.seq}, separators=(",", ":")) + "\n")
        self._journal.flush()
        self.lines += 1
        self.unsynced = True

    def sync(self) -> None:
        """Force the journal to disk (the snapshot is, when written): it then survives a crash of the node."""
        if self._journal is not None and self.unsynced:
            os.fsync(self._journal.fileno())
        self.unsynced = False

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
