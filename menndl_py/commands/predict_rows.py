"""`menndl predict` for tasks whose predictions are rows: a table in, the same table with the prediction columns
added ("table" tasks: compositions, features), images in, one row of predictions per image ("images" tasks), or
structure files in, one row per structure ("structures" tasks: crystal graphs).

Every rank reads the input and predicts every size-th row (or image); rank 0 gathers the rows and writes one CSV or
Parquet file. A row that cannot be used keeps its place with empty predictions and the reason in the column
`menndl_skipped`; the reasons are counted, and the first few said on stderr.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from menndl_py.commands.common import check_output
from menndl_py.errors import UserError
from menndl_py.images import Reader, list_items
from menndl_py.tasks.base import SkipImage

SKIPPED = "menndl_skipped"  # the column holding why a row has no prediction ('' when it has one)
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SAID = 10  # reasons said on stderr; the rest are counted
TABLE_BATCH = 4096


def table_format(path: Path, option: str) -> str:
    """'csv' or 'parquet' from a file name; UserError naming `option` otherwise."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{option} {path}: must name a .csv, .parquet or .pq file")
    return kind


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table to predict on; UserError (one line, naming the file) if it cannot be read."""
    kind = table_format(path, "INPUT")
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parser error is the file's fault: say it in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot read as {kind} ({first})") from None


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """The table to `path` (CSV or Parquet by its suffix), written whole under a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    if table_format(path, "--output") == "csv":
        frame.to_csv(part, index=False)
    else:
        frame.to_parquet(part, index=False)
    part.replace(path)


def _batches(rows: list, size: int) -> Iterator[list]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


@torch.no_grad()
def _table_rows(task, model, device, frame: pd.DataFrame, rows: list[int], source: str) -> list[tuple[int, dict, str]]:
    """(row, prediction columns, reason skipped) of each of `rows` of the table read from `source`."""
    try:
        inputs, reasons = task.table_inputs(frame.iloc[rows])
    except UserError as exc:  # a problem of the whole table (a column missing): name the file
        raise UserError(f"{source}: {exc}") from None
    good = [i for i, reason in enumerate(reasons) if not reason]
    columns = task.output_columns(model(torch.as_tensor(inputs[good]).to(device)).cpu()) if good else {}
    values = {i: {name: column[k] for name, column in columns.items()} for k, i in enumerate(good)}
    return [(row, values.get(i, {}), reason) for i, (row, reason) in enumerate(zip(rows, reasons))]


@torch.no_grad()
def _image_rows(task, model, device, genome, ready: list, skipped: list) -> list[tuple[int, dict, str]]:
    """(image, its source and prediction columns, reason skipped) of a batch of prepared images and the skipped."""
    found = [(index, {"source": source}, reason) for index, source, reason in skipped]
    if ready:
        x = torch.from_numpy(np.stack([array for _, _, array in ready])).to(device)
        columns = task.image_columns(model(x).cpu(), x)
        found += [(index, {"source": source, **{name: column[k] for name, column in columns.items()}}, "")
                  for k, (index, source, _) in enumerate(ready)]
    return found


@torch.no_grad()
def _structure_rows(task, model, device, genome, items: list) -> list[tuple[int, dict, str]]:
    """(structure, its source and prediction columns, reason skipped) of a batch of (index, (source, structure)),
    a structure being '' and the reason when its file could not be read."""
    reasons = [structure if isinstance(structure, str) else "" for _, (_, structure) in items]
    usable = [structure for _, (_, structure) in items if not isinstance(structure, str)]
    inputs, more = task.structure_inputs(usable, genome) if usable else (None, [])
    more = iter(more)
    reasons = [reason or next(more) for reason in reasons]
    usable_at = [i for i, (_, (_, structure)) in enumerate(items) if not isinstance(structure, str)]
    run = [k for k, i in enumerate(usable_at) if not reasons[i]]
    columns = task.output_columns(model(torch.as_tensor(inputs[run]).to(device)).cpu()) if run else {}
    values = {usable_at[k]: {name: column[r] for name, column in columns.items()} for r, k in enumerate(run)}
    return [(index, {"source": source, **values.get(i, {})}, reasons[i])
            for i, (index, (source, _)) in enumerate(items)]


def prepared(items: list, reader: Reader, prepare, size: int) -> Iterator[tuple[list, list]]:
    """(ready, skipped): up to `size` prepared images of one shape, and (index, source, reason) of the unusable."""
    ready, skipped = [], []
    for index, item in items:
        try:
            array = prepare(reader.read(item))
        except SkipImage as exc:
            skipped.append((index, item.source, str(exc)))
            continue
        if ready and (array.shape != ready[0][2].shape or len(ready) == size):
            yield ready, skipped
            ready, skipped = [], []
        ready.append((index, item.source, array))
    if ready or skipped:
        yield ready, skipped


def predict_rows(share, task, genome, model, device, inputs: list[str], output: str, *, run_dir: str,
                 batch_size: int | None, dataset: str | None, overwrite: bool, progress: bool) -> int:
    """Predict a table's rows or one row per image; returns the number of rows skipped (on every rank)."""
    out = Path(output)
    refusal = None
    if share.rank == 0:
        try:
            table_format(out, "--output")
            check_output([(out, "")], Path(run_dir), overwrite, "predictions")
        except UserError as exc:
            refusal = str(exc)
    refusal = share.bcast(refusal)
    if refusal:
        raise UserError(refusal)
    start = time.monotonic()
    if task.predicts == "table":
        if len(inputs) != 1:
            raise UserError(f"INPUT: task {task.name} predicts the rows of one table (CSV or Parquet), "
                            f"got {len(inputs)} inputs")
        frame = read_table(Path(inputs[0]))
        if frame.empty:
            raise UserError(f"{inputs[0]}: the table has no rows")
        n, unit = len(frame), "row"
        mine = share.mine(list(range(n)))
        chunks = (_table_rows(task, model, device, frame, rows, inputs[0])
                  for rows in _batches(mine, batch_size or TABLE_BATCH))
    elif task.predicts == "structures":
        items = list(enumerate(task.structures(inputs)))
        if not items:
            raise UserError("INPUT: no structures given")
        n, unit = len(items), "structure"
        mine = share.mine(items)
        chunks = (_structure_rows(task, model, device, genome, part) for part in _batches(mine, batch_size or 64))
    else:
        items = list(enumerate(list_items(inputs, dataset, dims=task.image_dims)))
        if not items:
            raise UserError("INPUT: no images given")
        n, unit, reader = len(items), "image", Reader()
        mine = share.mine(items)
        chunks = (_image_rows(task, model, device, genome, ready, skipped) for ready, skipped
                  in prepared(mine, reader, lambda a: task.prepare_image(a, genome), batch_size or task.image_batch))
    bar = tqdm(total=n, unit=unit, disable=not progress or share.rank != 0, file=sys.stderr)
    found: dict[int, tuple[dict, str]] = {}
    for chunk in share.to_root(chunks, n - len(mine)):
        for index, columns, reason in chunk:
            found[index] = (columns, reason)
        bar.update(len(chunk))
    if share.rank != 0:
        return share.bcast(None)
    bar.close()
    reasons = [found[i][1] for i in range(n)]
    if task.predicts == "table":
        table = frame.copy()
    else:
        table = pd.DataFrame({unit: np.arange(n)})
    names = list(dict.fromkeys(name for columns, _ in found.values() for name in columns))
    for name in names:
        table[name] = [found[i][0].get(name) for i in range(n)]
    table[SKIPPED] = reasons
    write_table(table, out)
    skipped = [(i, reason) for i, reason in enumerate(reasons) if reason]
    for i, reason in skipped[:SAID]:
        where = found[i][0].get("source", f"row {i + 1}")
        print(f"menndl: skipped {where}: {reason}", file=sys.stderr)
    if len(skipped) > SAID:
        print(f"menndl: ... and {len(skipped) - SAID:,} more skipped (column {SKIPPED} of {out})", file=sys.stderr)
    seconds = time.monotonic() - start
    print(f"[menndl] {n - len(skipped):,} of {n:,} {unit}s predicted in {seconds:.1f} s on {share.size} "
          f"rank{'s' * (share.size > 1)}; skipped {len(skipped):,}; written to {out}", flush=True)
    return share.bcast(len(skipped))
