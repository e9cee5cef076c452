"""Trained networks in a run directory (best/, final/, pareto/<id>/, ensemble/<id>/): saved whole, loaded, and
scored on the test split; and any evaluation's genome, with the weights of its kept training state (states/<id>.pt).

A network is three files: genome.json, result.json (its metrics and calibration) and model.pt (a state dict, for
`torch.load(..., weights_only=True)`). They are written whole, forced to disk, into a new hidden directory beside
the network's place (`stage_network`), which `install_network` then puts in use at once: the place (best/) is a
symbolic link to that directory, replaced by a rename. So a reader finds the old network or the new one, never a
mixture; `load_network` checks that the three files belong together all the same.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Optional, Union

import torch

from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.rundir.layout import GENOME, RECORD, WEIGHTS, RunDir, fsync_dir
from menndl_py.rundir.results import read_rows
from menndl_py.rundir.states import States
from menndl_py.train.trainer import Objective, score_split


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _beside(where: Path, kind: str) -> Path:
    """A new hidden name beside `where`: `.best-staged-1f2e...`."""
    return where.with_name(f".{where.name}-{kind}-{uuid.uuid4().hex[:12]}")


def _leftovers(where: Path) -> list[Path]:
    return sorted(where.parent.glob(f".{where.name}-*"))


def save_network(where: Path, genome: Genome, weights: Union[bytes, dict], record: dict) -> None:
    """Write a network into `where` whole (weights: a state dict, or one already saved to bytes)."""
    install_network(stage_network(where, genome, weights, record), where)


def stage_network(where: Path, genome: Genome, weights: Union[bytes, dict], record: dict) -> Path:
    """Write a network whole into a new directory beside `where`, not yet in use; returns that directory."""
    if not isinstance(weights, bytes):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, buf)
        weights = buf.getvalue()
    staged = _beside(where, "staged")
    staged.mkdir(parents=True)
    _write_durably(staged / GENOME, json.dumps(genome.to_json()).encode())
    _write_durably(staged / RECORD, json.dumps(record).encode())
    _write_durably(staged / WEIGHTS, weights)
    fsync_dir(staged)
    return staged


def install_network(staged: Path, where: Path) -> None:
    """Put the network staged in `staged` in use at `where` in one rename, and remove the one it replaces."""
    previous = where.resolve() if where.is_symlink() else None
    if where.is_dir() and not where.is_symlink():  # a network saved before networks were staged
        previous = _beside(where, "old")
        os.rename(where, previous)
    link = _beside(where, "link")
    os.symlink(staged.name, link)
    os.replace(link, where)
    fsync_dir(where.parent)
    if previous is not None and previous != staged.resolve():
        shutil.rmtree(previous, ignore_errors=True)


def discard_staged(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)


def settle_networks(where: Path, best_id: Optional[int]) -> None:
    """After a crash: install the staged network of the best stored row (`best_id`) if the crash came between
    storing the row and installing the network; remove every other leftover of an unfinished save."""
    in_use = where.resolve() if where.is_symlink() else None
    current = _record_id(where) if where.is_dir() else None
    for leftover in _leftovers(where):
        if leftover == in_use:
            continue
        if leftover.is_symlink() or not leftover.is_dir():
            leftover.unlink(missing_ok=True)
        elif best_id is not None and current != best_id and _record_id(leftover) == best_id \
                and (leftover / WEIGHTS).is_file():
            install_network(leftover, where)
            current = best_id
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def remove_network(where: Path) -> None:
    """Remove a network: its link, the directory it points to, any leftover of a save."""
    doomed = [where.resolve()] if where.is_symlink() else []
    for path in (where, *doomed, *_leftovers(where)):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    fsync_dir(where.parent)


def settle_members(kept: Path, ids: list[int]) -> None:
    """After a crash: `kept` (pareto/ or ensemble/) keeps the networks of `ids` (one staged but not installed is
    installed, as `settle_networks` does for best/), and nothing else."""
    for work_id in ids:
        settle_networks(kept / str(work_id), work_id)
    for path in sorted(kept.iterdir()) if kept.is_dir() else ():
        name = path.name.lstrip(".").split("-")[0]  # a member's link "12", or a save's leftover ".12-staged-..."
        if not (name.isdigit() and int(name) in ids):
            remove_network(path)


def _record_id(where: Path) -> Optional[int]:
    try:
        return json.loads((where / RECORD).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def read_genome(where: Path) -> Genome:
    path = where / GENOME
    if not path.is_file():
        raise UserError(f"{path}: missing; the run has no trained network yet")
    return Genome.from_json(json.loads(path.read_text()))


def read_record(where: Path) -> dict:
    """The result record beside a network's weights, with the search's 'm:' prefixes dropped; {} if there is none."""
    path = where / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    return {key.removeprefix("m:"): value for key, value in record.items()}


def evaluated(run: RunDir, work_id: int) -> tuple[Genome, dict]:
    """(genome, stored row, the 'm:' prefixes dropped) of evaluation `work_id` at the highest rung it reached;
    UserError if the run stored no such evaluation."""
    rows = [row for row in read_rows(run.results) if row["id"] == work_id]
    if not rows:
        raise UserError(f"{run.results}: no evaluation {work_id}")
    row = max(rows, key=lambda r: r["rung"])
    return Genome.from_json(row["genome"]), {key.removeprefix("m:"): value for key, value in row.items()}


def kept_weights(run: RunDir, work_id: int) -> Optional[dict]:
    """The model state dict of evaluation `work_id`'s kept training state, None if the run keeps none; UserError
    if the file is not a training state."""
    states = States(run.states)
    data = states.load(work_id)
    if data is None:
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["model"]
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as exc:  # truncated, empty, no model, garbage
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{states.path(work_id)}: not a training state that can be read ({first})") from None


def load_network(where: Path, space: SearchSpace) -> tuple[Genome, torch.nn.Module, dict]:
    """(genome, model in eval mode on the CPU, result record) of the network saved in `where`; UserError if its
    files do not belong together."""
    genome = read_genome(where)
    if not (where / WEIGHTS).is_file():
        raise UserError(f"{where / WEIGHTS}: missing; the run has no trained network yet")
    record = read_record(where)
    if record.get("genome_hash", genome.key) != genome.key:
        raise UserError(f"{where}: {GENOME} (genome {genome.key}) and {RECORD} (genome {record['genome_hash']}) "
                        f"are of different networks")
    model = space.build(genome)
    try:
        model.load_state_dict(torch.load(where / WEIGHTS, map_location="cpu", weights_only=True))
    except (RuntimeError, ValueError, EOFError) as exc:
        raise UserError(f"{where / WEIGHTS}: not the weights of the network in {where / GENOME} "
                        f"({str(exc).splitlines()[0]})") from None
    return genome, model.eval(), record


def kept_networks(kept: Path, space: SearchSpace, higher_is_better: bool) -> list[tuple[int, Genome, torch.nn.Module]]:
    """(id, genome, model) of each network kept in `kept` (ensemble/ or pareto/), the best fitness first."""
    networks = [(work_id, *load_network(kept / str(work_id), space)) for work_id in RunDir.member_ids(kept)]
    networks.sort(key=lambda n: (-n[3]["fitness"] if higher_is_better else n[3]["fitness"], n[0]))
    return [(work_id, genome, model) for work_id, genome, model, _ in networks]


def calibrated(task, where: Path, record: dict, warn) -> None:
    """Give `task` the calibration in a network's record; `warn` gets a one-line note when there is none."""
    note = task.load_calibration(record)
    if note:
        warn(f"{where / RECORD}: {note}")


def score_on_test(task: Objective, where: Path, space: SearchSpace, batch: int, warn, precision: str = "fp32") -> dict:
    """Test-split metrics of the network in `where`, read with its own calibration (see `Task.load_calibration`),
    its forward pass in `precision` (training.precision)."""
    _, model, record = load_network(where, space)
    calibrated(task, where, record, warn)
    return score_split(model, task, "test", batch, precision)
