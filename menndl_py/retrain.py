"""Train a run's best network again, from scratch and for longer.

A search ranks candidates on short training budgets; its winner then earns a full one. `menndl retrain RUN
--budget SECONDS` trains the best genome of RUN on the run's own data and task settings in this one process
(all its threads unless `cluster.threads_per_rank` says otherwise), calibrates it as a search candidate is (the
STEM task's detection thresholds), scores it on the validation and test splits with that calibration, and writes
RUN/final/ (genome.json, model.pt, result.json with the metrics and the calibration), which `menndl predict` then
prefers to RUN/best/.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from menndl_py.cluster.worker import Evaluator, pick_device, set_threads
from menndl_py.config import Config
from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.run import describe, ensure_data, say
from menndl_py.store import write_json_atomic
from menndl_py.tasks import make_task
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import score


def retrain(cfg: Config, budget: float, epochs: int, lr_schedule: str = "cosine") -> dict:
    """Train `cfg.run_dir`'s best genome for `budget` seconds or `epochs` epochs, the learning rate on
    `lr_schedule`; returns result.json's content."""
    best = cfg.run_dir / "best" / "genome.json"
    if not best.is_file():
        raise UserError(f"{best}: missing; the run has no best network yet")
    if not budget > 0:
        raise UserError(f"--budget: must be > 0 seconds, got {budget!r}")
    if epochs < 1:
        raise UserError(f"--epochs: must be >= 1, got {epochs!r}")
    cfg = dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, time_budget=budget, epochs=epochs, lr_schedule=lr_schedule),
        cluster=dataclasses.replace(cfg.cluster, candidate_timeout=max(cfg.cluster.candidate_timeout, 2 * budget)))
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    ensure_data(task)
    genome = Genome.from_json(json.loads(best.read_text()))
    threads = set_threads(cfg, 1)
    say(f"retraining {describe(genome.to_json())} for {budget:g} s or {epochs} epochs, {lr_schedule} learning "
        f"rate ({threads} threads)")
    started = time.time()
    outcome = task.evaluate(genome, Evaluator(cfg, task, LocalGroup(), pick_device(0)).trainer)
    if outcome.status != "ok":
        raise UserError(f"{cfg.run_dir}: retraining the best network ended with status {outcome.status}: "
                        f"{outcome.message}")
    x, y = (torch.as_tensor(a) for a in task.load("test"))
    test = score(outcome.model, task, x, y, LocalGroup(), cfg.training.eval_batch_size)
    final = cfg.run_dir / "final"
    final.mkdir(exist_ok=True)
    (final / "model.pt").unlink(missing_ok=True)  # a network of another genome must not outlive its genome.json
    (final / "genome.json").write_text(json.dumps(genome.to_json()))
    result = {"genome_hash": genome.key, "budget_seconds": budget, "lr_schedule": lr_schedule,
              "epochs": outcome.epochs, "train_seconds": outcome.train_seconds, "threads": threads, "started": started,
              "params": sum(p.numel() for p in outcome.model.parameters()),
              **outcome.metrics, **{f"test_{k}": v for k, v in test.items()}, "curve": outcome.curve}
    write_json_atomic(final / "result.json", result)
    torch.save(outcome.model.state_dict(), final / "model.pt.tmp")
    os.replace(final / "model.pt.tmp", final / "model.pt")  # last: predict takes final/ once model.pt is there
    say(f"{outcome.epochs} epochs in {outcome.train_seconds:.0f} s: validation {task.metric} "
        f"{outcome.metrics[f'val_{task.metric}']:.4f} {task.unit}, test {task.metric} {test[task.metric]:.4f} "
        f"{task.unit}; written to {final}")
    return result

