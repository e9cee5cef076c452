"""Trained networks in a run directory (best/, final/): saved whole, loaded, and scored on the test split.

A network is three files: genome.json, result.json (its metrics and calibration) and model.pt (a state dict, for
`torch.load(..., weights_only=True)`). model.pt is renamed into place last: a reader that finds it finds the rest.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Union

import torch

from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.rundir.layout import GENOME, RECORD, WEIGHTS, write_json_atomic
from menndl_py.train.trainer import Objective, score_split


def save_network(where: Path, genome: Genome, weights: Union[bytes, dict], record: dict) -> None:
    """Write a network into `where` (weights: a state dict, or one already saved to bytes)."""
    where.mkdir(parents=True, exist_ok=True)
    write_json_atomic(where / GENOME, genome.to_json())
    write_json_atomic(where / RECORD, record)
    if not isinstance(weights, bytes):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, buf)
        weights = buf.getvalue()
    tmp = where / (WEIGHTS + ".tmp")
    tmp.write_bytes(weights)
    os.replace(tmp, where / WEIGHTS)


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


def load_network(where: Path, space: SearchSpace) -> tuple[Genome, torch.nn.Module, dict]:
    """(genome, model in eval mode on the CPU, result record) of the network saved in `where`."""
    genome = read_genome(where)
    if not (where / WEIGHTS).is_file():
        raise UserError(f"{where / WEIGHTS}: missing; the run has no trained network yet")
    model = space.build(genome)
    model.load_state_dict(torch.load(where / WEIGHTS, map_location="cpu", weights_only=True))
    return genome, model.eval(), read_record(where)


def calibrated(task, where: Path, record: dict, warn) -> None:
    """Give `task` the calibration in a network's record; `warn` gets a one-line note when there is none."""
    note = task.load_calibration(record)
    if note:
        warn(f"{where / RECORD}: {note}")


def score_on_test(task: Objective, where: Path, space: SearchSpace, batch: int, warn) -> dict:
    """Test-split metrics of the network in `where`, read with its own calibration (see `Task.load_calibration`)."""
    _, model, record = load_network(where, space)
    calibrated(task, where, record, warn)
    return score_split(model, task, "test", batch)
