"""`menndl export`: a run's network for use elsewhere, or its evaluations as an Optuna journal.

Networks: ONNX (for onnxruntime), TorchScript (for `torch.jit.load`, without menndl_py) or a state dict (for
`torch.load(..., weights_only=True)` into `space.build(genome)`), each with a JSON beside it (FILE.json): the input
shape and the normalisation before the network, what the outputs are, class names, the task and its options, the
genome and the metric. The batch size is free, and so are the image sizes of fully convolutional networks. The
file is loaded back as a user would load it and must give the run's network's outputs on a random batch of other
sizes than the one it was exported with, or nothing is written.

Optuna journal: one trial per evaluation id, its genome as parameters (`depth`, the training genes, `layer<i>.<gene>`),
COMPLETE with the fitness as value or FAIL, the stored row (timings, metrics, status, genome) as user attributes;
with rungs, the value is the highest rung's and each rung's fitness an intermediate value (step: the rung).

Files are written under a temporary name beside --output and renamed into place.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import uuid
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from menndl_py.commands.common import check_output, opened_run, say
from menndl_py.config import Config
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.records import Status
from menndl_py.rundir import RunDir
from menndl_py.rundir.networks import load_network
from menndl_py.rundir.results import read_rows
from menndl_py.tasks.base import Task

NETWORK_FORMATS = ("onnx", "torchscript", "state-dict")
FORMATS = (*NETWORK_FORMATS, "optuna-journal")
TOLERANCE = 1e-5  # largest difference from the run's network's outputs, relative to their largest magnitude (or 1)


def export(run_dir: str, fmt: str, output: str, network: Optional[str] = None, overwrite: bool = False) -> None:
    """Write `run_dir`'s network (`network`: best or final; default: final/ if the run has it, else best/) in
    format `fmt`, or its evaluations as an Optuna journal, to `output`."""
    if fmt not in FORMATS:
        raise UserError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if network is not None and fmt not in NETWORK_FORMATS:
        raise UserError(f"--network: chooses the network of the formats {', '.join(NETWORK_FORMATS)}, not of {fmt}")
    run, cfg, task = opened_run(run_dir)
    path = Path(output)
    space = task.space().restricted(cfg.search.space)
    if fmt == "optuna-journal":
        check_output([(path, "")], run.path, overwrite, "exports")
        n = write_journal(run, cfg, task, space, path)
        say(f"wrote {path}: an Optuna journal of {n} trials, study {study_name(run)!r}")
        return
    check_output([(path, ""), (sidecar(path), " (the JSON written beside --output)")], run.path, overwrite, "exports")
    where = network_dir(run, network)
    genome, model, record = load_network(where, space)
    usage = task.network_io(genome)
    free = [i for i, size in enumerate(usage["input"]["shape"]) if size is None]
    small, large = probes(model, space.input_shape, free)
    with written(path) as tmp:
        SAVE[fmt](model, small, free, tmp)
        difference = check(LOAD[fmt](tmp, space, genome), model, large, fmt)
    record.pop("curve", None)
    facts = {"format": fmt, "file": path.name, "run": str(run.path.resolve()), "network": where.name,
             "id": record.get("id"),
             "task": {"name": cfg.task.name, "options": dataclasses.asdict(task.options)},
             "input": {**usage["input"], "dtype": str(small.dtype).removeprefix("torch.")},
             "output": {"shape": output_shape(model, small, large), **usage["output"]},
             **({"class_names": list(task.class_names)} if task.class_names else {}),
             "metric": {"name": task.metric, "unit": task.unit, "higher_is_better": task.higher_is_better,
                        "validation": record.get(f"val_{task.metric}", record.get("fitness")),
                        "test": scored_on_test(run, where, record, task.metric)},
             "genome": genome.to_json(), "result": record}
    with written(sidecar(path)) as tmp:
        tmp.write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n")
    say(f"wrote {path} and {sidecar(path)}: the network in {where}; loaded back, its outputs differ from the run's "
        f"by at most {difference:.1e}")


def sidecar(path: Path) -> Path:
    """The JSON beside an exported network: FILE.json (FILE's own suffix kept, so no two formats share one)."""
    return path.with_name(path.name + ".json")


def network_dir(run: RunDir, network: Optional[str]) -> Path:
    """Where the network to export is: `network`'s directory, or by default the one `menndl predict` uses."""
    return run.network_to_use() if network is None else run.network_named(network)


@contextmanager
def written(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed to `path` when the block succeeds, removed if not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- networks ----------------------------------------------------------------------------------------------
def probes(model: torch.nn.Module, sizes: tuple, free: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random input batches: one of the space's input `sizes` (batch 2), one with the sizes of the `free` axes
    doubled (batch 3)."""
    generator = torch.Generator().manual_seed(0)
    dtype = next(model.parameters()).dtype
    small = [2, *sizes]
    large = [3 if i == 0 else 2 * n if i in free else n for i, n in enumerate(small)]
    return torch.randn(small, generator=generator, dtype=dtype), torch.randn(large, generator=generator, dtype=dtype)


@torch.no_grad()
def output_shape(model: torch.nn.Module, small: torch.Tensor, large: torch.Tensor) -> list:
    """The network's output shape, None on the axes whose size follows the input's."""
    return [None if a != b else a for a, b in zip(model(small).shape, model(large).shape)]


def save_onnx(model: torch.nn.Module, x: torch.Tensor, free: list[int], path: Path) -> None:
    dims = {i: torch.export.Dim("batch") if i == 0 else torch.export.Dim.DYNAMIC for i in free}
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # not its warnings that torchvision's operators are not there to register
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's deprecations of its own internals
            torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=(dims,), input_names=["input"],
                              output_names=["output"], external_data=False, verbose=False)
    finally:
        logger.setLevel(level)


def save_torchscript(model: torch.nn.Module, x: torch.Tensor, free: list[int], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # `check` tries the trace on other sizes
        torch.jit.save(torch.jit.trace(model, x), str(path))


def save_state_dict(model: torch.nn.Module, x: torch.Tensor, free: list[int], path: Path) -> None:
    torch.save(model.state_dict(), path)


def load_onnx(path: Path, space: SearchSpace, genome: Genome):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x.numpy()})[0]


def load_torchscript(path: Path, space: SearchSpace, genome: Genome):
    return torch.jit.load(str(path))


def load_state_dict(path: Path, space: SearchSpace, genome: Genome):
    model = space.build(genome)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


SAVE = {"onnx": save_onnx, "torchscript": save_torchscript, "state-dict": save_state_dict}
LOAD = {"onnx": load_onnx, "torchscript": load_torchscript, "state-dict": load_state_dict}


@torch.no_grad()
def check(loaded, model: torch.nn.Module, x: torch.Tensor, fmt: str) -> float:
    """The largest difference between the loaded export's outputs on `x` and the network's; UserError when it is
    past TOLERANCE."""
    expected = model(x).numpy()
    got = np.asarray(loaded(x))
    difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf
    if not difference <= TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise UserError(f"--format {fmt}: the exported network, loaded back, gives outputs {got.shape} that differ "
                        f"from the network's {expected.shape} by {difference:.3g} on a batch of other sizes than it "
                        f"was exported with; try --format state-dict")
    return difference


def scored_on_test(run: RunDir, where: Path, record: dict, metric: str) -> Optional[float]:
    """The network's test-split metric: in its record (final/), or in run.json for best/ (None if not scored)."""
    if f"test_{metric}" in record:
        return record[f"test_{metric}"]
    facts = run.read_run_json()
    if where == run.best and facts.get("best_id") == record.get("id"):
        return (facts.get("best_test") or {}).get(metric)
    return None


# -- the Optuna journal --------------------------------------------------------------------------------------
def study_name(run: RunDir) -> str:
    """The study's name: the run's."""
    return run.path.resolve().name


def genome_params(genome: dict) -> dict:
    """A genome as Optuna parameters: its depth, training genes, and `layer<i>.<gene>` per layer."""
    return {"depth": len(genome["layers"]), **genome["training"],
            **{f"layer{i}.{gene}": value for i, layer in enumerate(genome["layers"]) for gene, value in layer.items()}}


def space_choices(space: SearchSpace, name: str) -> list:
    """The values the space allows a parameter of `genome_params`."""
    if name == "depth":
        return list(range(space.depth[0], space.depth[1] + 1))
    if name.startswith("layer") and "." in name:
        choice = space.layer_genes.get(name.partition(".")[2])
    else:
        choice = space.training_genes.get(name)
    return list(choice.values) if choice is not None else []


def write_journal(run: RunDir, cfg: Config, task: Task, space: SearchSpace, path: Path) -> int:
    """Write the run's evaluations to an Optuna journal file at `path`; returns the number of trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import FrozenTrial, TrialState

    by_id: dict[int, list[dict]] = {}
    for row in read_rows(run.results):
        by_id.setdefault(row["id"], []).append(row)
    if not by_id:
        raise UserError(f"{run.results}: no evaluations yet")
    params = {i: genome_params(json.loads(rows[0]["genome"])) for i, rows in by_id.items()}
    choices: dict[str, list] = {}
    for values in params.values():
        for name, value in values.items():
            allowed = choices.setdefault(name, space_choices(space, name))
            if value not in allowed:  # a value the space no longer has (a genome of an older version)
                allowed.append(value)
    distributions = {name: CategoricalDistribution(values) for name, values in choices.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with written(path) as tmp:
        study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp))), study_name=study_name(run),
                                    direction="maximize" if task.higher_is_better else "minimize")
        for key, value in {"task": cfg.task.name, "metric": task.metric, "unit": task.unit,
                           "run": str(run.path.resolve())}.items():
            study.set_user_attr(key, value)
        for i, rows in sorted(by_id.items()):
            rows.sort(key=lambda row: row["rung"])
            top = rows[-1]
            done = top["status"] == Status.OK and top["fitness"] is not None and math.isfinite(top["fitness"])
            steps = {row["rung"]: row["fitness"] for row in rows
                     if cfg.training.rungs is not None and row["status"] == Status.OK and row["fitness"] is not None}
            study.add_trial(FrozenTrial(
                number=i, trial_id=i, state=TrialState.COMPLETE if done else TrialState.FAIL,
                value=top["fitness"] if done else None, datetime_start=datetime.fromtimestamp(rows[0]["start_time"]),
                datetime_complete=datetime.fromtimestamp(top["end_time"]), params=params[i],
                distributions={name: distributions[name] for name in params[i]},
                user_attrs={k: v for k, v in top.items() if k not in ("fitness", "curve") and v is not None},
                system_attrs={}, intermediate_values=steps))
    return len(by_id)
