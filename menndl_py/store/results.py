"""results.csv (the durable record) and results.h5 (the same, plus arrays), one row appended per evaluation.

Each row is written and flushed to the operating system before the master sends the next genome, so a killed
job loses nothing that was stored. On opening, a half-written last CSV line is dropped (that evaluation was still
in flight), and results.h5 is brought level with the CSV, rebuilt from it if it cannot be read.
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

BASE_COLUMNS = ["id", "genome_hash", "parents", "origin", "status", "fitness", "predicted", "screened", "params",
                "flops", "depth", "group", "host", "ranks", "submit_time", "start_time", "end_time",
                "train_seconds", "epochs"]
TAIL_COLUMNS = ["message", "genome", "curve"]
INT_COLUMNS = {"id", "screened", "params", "flops", "depth", "group", "ranks", "epochs"}
STR_COLUMNS = {"genome_hash", "parents", "origin", "status", "host", "message", "genome", "curve"}


def columns(metric_names: Iterable[str]) -> list[str]:
    return BASE_COLUMNS + [f"m:{m}" for m in metric_names] + TAIL_COLUMNS


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


def _parse(name: str, text: str) -> Any:
    if name in STR_COLUMNS:
        return text
    if text == "":
        return None
    return int(text) if name in INT_COLUMNS else float(text)


class ResultStore:
    """Append-only evaluation records for one run directory."""

    def __init__(self, run_dir: Path, metric_names: Iterable[str]):
        self.run_dir = Path(run_dir)
        self.csv_path, self.h5_path = self.run_dir / "results.csv", self.run_dir / "results.h5"
        self.columns = columns(metric_names)
        self.rows: list[dict] = self._read_csv()
        self._csv = open(self.csv_path, "a", newline="")
        if not self.rows and self._csv.tell() == 0:
            self._write_line(self.columns)
        self._h5 = self._open_h5()

    # -- reading ---------------------------------------------------------------------------------------
    def _read_csv(self) -> list[dict]:
        if not self.csv_path.exists():
            return []
        data = self.csv_path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # killed mid-line: that evaluation was not stored
            with open(self.csv_path, "r+b") as fh:
                fh.truncate(len(complete))
        reader = csv.reader(io.StringIO(complete.decode()))
        header = next(reader, None)
        if header is None:
            return []
        if header != self.columns:
            raise UserError(f"{self.csv_path}: columns do not match this task's (was the run made by another task?)")
        try:
            return [{k: _parse(k, v) for k, v in zip(header, line)} for line in reader]
        except ValueError as exc:
            raise UserError(f"{self.csv_path}: corrupt row ({exc})") from None

    def _open_h5(self) -> h5py.File:
        try:
            h5 = h5py.File(self.h5_path, "a")
            h5.require_group("evals")
        except (OSError, ValueError):  # damaged by a kill mid-write: the CSV has everything
            self.h5_path.unlink(missing_ok=True)
            h5 = h5py.File(self.h5_path, "w")
            h5.create_group("evals")
        stored = set(h5["evals"].keys())
        for row in self.rows:
            if f"{row['id']:08d}" not in stored:
                self._write_h5(h5, row)
        h5.flush()
        return h5

    # -- writing ---------------------------------------------------------------------------------------
    def _write_line(self, cells: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        self._csv.write(buf.getvalue())
        self._csv.flush()

    @staticmethod
    def _write_h5(h5: h5py.File, row: dict) -> None:
        """One group per evaluation: attribute `row` (the CSV row's scalars as JSON), `genome` (JSON), `curve`
        (epoch, train_loss, seconds). Two attributes rather than one per column: this runs on the master's hot path."""
        grp = h5["evals"].require_group(f"{row['id']:08d}")
        grp.attrs["row"] = json.dumps({k: v for k, v in row.items() if k not in ("genome", "curve")})
        grp.attrs["genome"] = row["genome"] or ""
        curve = json.loads(row["curve"]) if row["curve"] else []
        grp.create_dataset("curve", data=np.array(
            [[c["epoch"], c["train_loss"], c["seconds"]] for c in curve], dtype=np.float64).reshape(-1, 3))

    def append(self, row: dict) -> None:
        """Write one evaluation to both files and flush them."""
        cells = [_cell(row.get(k)) for k in self.columns]
        stored = {k: _parse(k, cell) for k, cell in zip(self.columns, cells)}  # a bad value fails before writing
        self._write_line(cells)
        self._write_h5(self._h5, stored)
        self._h5.flush()
        self.rows.append(stored)

    def close(self) -> None:
        self._csv.close()
        self._h5.close()

    def sync(self) -> None:
        """Force the files to disk (for a clean stop; flushing is enough to survive a killed job)."""
        self._csv.flush()
        os.fsync(self._csv.fileno())
        self._h5.flush()
