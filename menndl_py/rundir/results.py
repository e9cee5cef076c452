"""results.csv (the durable record) and results.h5 (the same, plus arrays), one row appended per evaluation.

Each CSV row is written to the operating system (one write) before the master sends the next genome, so a killed
job loses nothing that was stored, and forced to disk within a few seconds (`fsync`, called by the master), so a
crashed node loses at most those seconds; a half-written last line is dropped on opening (that evaluation was
still in flight). results.h5 is derived from the CSV: rows reach it in batches (`write_h5`, called by the master
when it is idle, and at close), and on opening it is rebuilt from the CSV unless it holds exactly the CSV's rows.

results.h5 layout, one entry per evaluation in CSV order: `evals/id` (int64), `evals/row` (the CSV row's scalars
as JSON), `evals/genome` (JSON); `curves` (float64, one line per epoch: id, epoch, train_loss, seconds).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from menndl_py.errors import UserError
from menndl_py.records import INT_COLUMNS, STR_COLUMNS, columns
from menndl_py.rundir.layout import RunDir

ADDED_COLUMNS = ("rung", "budget")  # after id; a table without them is read as all rung 0, and rewritten


def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_, np.integer)):
        value = int(value)
    elif isinstance(value, np.floating):
        value = float(value)  # repr(np.float64(x)) is 'np.float64(x)', which no reader parses
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def complete_lines(data: bytes) -> bytes:
    """The complete lines of a file being appended to: a last line without its newline was still being written."""
    return data[: data.rfind(b"\n") + 1]


def _parse(name: str, text: str) -> Any:
    if name in STR_COLUMNS:
        return text
    if text == "":
        return None
    return int(text) if name in INT_COLUMNS else float(text)


def read_rows(path: Path) -> list[dict]:
    """The rows of a results.csv as stored, read without changing the file (a run may be writing it): a last line
    still being written is left out, and a table from before multi-fidelity reads as rung 0. UserError naming the
    file, and the line, when it is missing or not a results table."""
    if not path.is_file():
        raise UserError(f"{path}: missing; the run has stored no evaluations yet")
    try:
        lines = list(csv.reader(io.StringIO(complete_lines(path.read_bytes()).decode())))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a results table ({exc})") from None
    if not lines or "id" not in lines[0]:
        raise UserError(f"{path}: not a results table (no header with an id column)")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if len(line) != len(lines[0]):
            raise UserError(f"{path}: line {n} has {len(line)} fields, expected {len(lines[0])}")
        try:
            rows.append({"rung": 0, **{name: _parse(name, text) for name, text in zip(lines[0], line)}})
        except ValueError as exc:
            raise UserError(f"{path}: line {n}: {exc}") from None
    return rows


class ResultStore:
    """Append-only evaluation records for one run directory. Each row is one write to the CSV, which is undone if
    it fails (a full disk, an interrupt), so the file holds whole rows only; `fsync` forces it to disk."""

    def __init__(self, run_dir: Path, metric_names: Iterable[str]):
        run = RunDir(run_dir)
        self.csv_path, self.h5_path = run.results, run.results_h5
        self.columns = columns(metric_names)
        self.rows: list[dict] = self._read_csv()
        self._fd = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._unsynced = False
        if self._size == 0:
            self._write_line(self.columns)
        self._pending_h5: list[dict] = []
        self._h5 = self._open_h5()

    # -- reading ---------------------------------------------------------------------------------------
    def _read_csv(self) -> list[dict]:
        if not self.csv_path.exists():
            return []
        data = self.csv_path.read_bytes()
        complete = complete_lines(data)
        try:
            lines = list(csv.reader(io.StringIO(complete.decode())))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"{self.csv_path}: not a results table ({exc})") from None
        older = lines and lines[0] == [c for c in self.columns if c not in ADDED_COLUMNS]
        if older:  # a table from before multi-fidelity: every row was trained once, at rung 0
            lines = [self.columns] + [[*line[:1], "0", "", *line[1:]] for line in lines[1:]]
        if lines and lines[0] != self.columns:
            raise UserError(f"{self.csv_path}: columns do not match this task's (was the run made by another task?)")
        rows = [self._row(n, line) for n, line in enumerate(lines[1:], 2)]
        if older:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(lines)
            tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
            with open(tmp, "w") as fh:
                fh.write(buf.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.csv_path)
        elif len(complete) != len(data):  # killed mid-line: that evaluation was not stored
            with open(self.csv_path, "r+b") as fh:
                fh.truncate(len(complete))
        return rows

    def _row(self, n: int, line: list[str]) -> dict:
        """Line `n` of the CSV as a row; UserError naming the line if it is not one."""
        if len(line) != len(self.columns):
            raise UserError(f"{self.csv_path}: line {n} has {len(line)} fields, expected {len(self.columns)}: a "
                            f"corrupt row (remove it, and the lines after it, to continue the run)")
        row = {}
        for name, text in zip(self.columns, line):
            try:
                row[name] = _parse(name, text)
            except ValueError:
                raise UserError(f"{self.csv_path}: line {n}, column {name}: {text[:40]!r} is not "
                                f"{'an integer' if name in INT_COLUMNS else 'a number'}: a corrupt row (remove "
                                f"it, and the lines after it, to continue the run)") from None
        return row

    def _open_h5(self) -> h5py.File:
        try:
            h5 = h5py.File(self.h5_path, "a")
            level = list(h5["evals/id"][:]) == [row["id"] for row in self.rows]
        except (OSError, ValueError, KeyError):  # damaged by a kill mid-write, or an older layout
            h5, level = None, False
        if not level:
            if h5 is not None:
                h5.close()
            self.h5_path.unlink(missing_ok=True)
            h5 = h5py.File(self.h5_path, "w")
            text = h5py.string_dtype()
            evals = h5.create_group("evals")
            evals.create_dataset("id", (0,), np.int64, maxshape=(None,), chunks=(4096,))
            for name in ("row", "genome"):
                evals.create_dataset(name, (0,), text, maxshape=(None,), chunks=(1024,))
            h5.create_dataset("curves", (0, 4), np.float64, maxshape=(None, 4), chunks=(4096, 4))
            self._pending_h5 = list(self.rows)
            self._write_h5(h5)
        return h5

    # -- writing ---------------------------------------------------------------------------------------
    def _write_line(self, cells: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        encoded = buf.getvalue().encode()
        data = memoryview(encoded)
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except BaseException:  # a full disk, an interrupt: take back what part of the line was written
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass  # the reader drops a last line without its newline
            raise
        self._size += len(encoded)
        self._unsynced = True

    def _write_h5(self, h5: h5py.File) -> None:
        rows, self._pending_h5 = self._pending_h5, []
        if not rows:
            return
        curves = []
        for row in rows:
            curves += [[row["id"], c["epoch"], c["train_loss"], c["seconds"]]
                       for c in (json.loads(row["curve"]) if row["curve"] else [])]
        if curves:
            _extend(h5["curves"], np.array(curves, dtype=np.float64))
        evals = h5["evals"]
        _extend(evals["row"], [json.dumps({k: v for k, v in row.items() if k not in ("genome", "curve")})
                               for row in rows])
        _extend(evals["genome"], [row["genome"] or "" for row in rows])
        _extend(evals["id"], np.array([row["id"] for row in rows], dtype=np.int64))  # last: marks them complete
        h5.flush()

    @property
    def h5_pending(self) -> int:
        """Rows stored in the CSV but not yet in results.h5."""
        return len(self._pending_h5)

    def write_h5(self) -> None:
        """Bring results.h5 level with the CSV (one batch)."""
        self._write_h5(self._h5)

    def append(self, row: dict) -> None:
        """Write one evaluation to the CSV and flush it; results.h5 gets it with the next `write_h5`."""
        cells = [_cell(row.get(k)) for k in self.columns]
        stored = {k: _parse(k, cell) for k, cell in zip(self.columns, cells)}  # a bad value fails before writing
        self._write_line(cells)
        self.rows.append(stored)
        self._pending_h5.append(stored)

    def close(self) -> None:
        os.close(self._fd)
        self.write_h5()
        self._h5.close()

    @property
    def unsynced(self) -> bool:
        """Whether rows were written since the CSV was last forced to disk."""
        return self._unsynced

    def fsync(self) -> None:
        """Force the CSV to disk (the master does every few seconds): it then survives a crash of the node."""
        os.fsync(self._fd)
        self._unsynced = False

    def sync(self) -> None:
        """Force the CSV to disk and bring results.h5 level (at the end of a launch)."""
        self.fsync()
        self.write_h5()


def _extend(dataset: h5py.Dataset, values) -> None:
    n = dataset.shape[0]
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values
