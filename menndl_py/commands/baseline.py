"""`menndl baseline`: a task's hand-made baselines, trained on the same data and under the same budget as a
candidate (with rungs: the top rung's), or under a budget of seconds given for all of them.

Each baseline network is kept as a run directory of its own (RUN/baselines/<name>/, its network in best/ with its
calibration) that `menndl predict` takes like a search's run; a method that is not a network and can be run again
(the STEM task's Fourier filtering) has its tuned parameters written to RUN/baselines/<method>.json, which
`menndl predict --method <method>` reads. Launched on several ranks, each network trains data-parallel over all of
them with Horovod, and rank 0 fits the other methods and writes everything."""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

from menndl_py import config as config_module
from menndl_py.commands.common import ensure_data, group_words, launched_group, say, task_of
from menndl_py.config import Config
from menndl_py.engine.evaluator import make_trainer
from menndl_py.errors import UserError
from menndl_py.rundir import RunDir
from menndl_py.rundir.layout import write_json_atomic
from menndl_py.rundir.networks import save_network
from menndl_py.train.trainer import Stage, score_split

MAX_EPOCHS = 1_000_000  # with a budget of seconds, the time decides


def run_baselines(cfg: Config, seconds: Optional[float] = None) -> dict[str, dict]:
    """Train the task's published networks like a candidate (or for `seconds` each), data-parallel over the ranks
    this command was launched on, fit its other baselines; write them to the run directory. Each row says the
    budget it had. Returns the rows on rank 0 ({} elsewhere)."""
    cfg = baseline_config(cfg, seconds)
    task = task_of(cfg)
    group, threads, device = launched_group(cfg)
    ensure_data(task, group.size)
    trainer = make_trainer(cfg, task, group, device)
    stage, budget = _budget(cfg)
    budget += f", {group_words(group, threads)}"
    outputs = RunDir(cfg.run_dir).baseline_outputs
    results: dict[str, dict] = {}
    for name, genome in task.baseline_genomes().items():
        if group.rank == 0:
            say(f"training baseline {name} ({budget})")
        outcome = task.evaluate(genome, trainer, None, stage)
        if group.rank != 0:
            continue
        row = {"status": str(outcome.status), "message": outcome.message, "epochs": outcome.epochs,
               "train_seconds": round(outcome.train_seconds, 2), "budget": budget, **outcome.metrics}
        if outcome.model is not None:
            test = score_split(outcome.model, task, "test", cfg.training.eval_batch_size, cfg.training.precision)
            row.update({f"test_{k}": v for k, v in test.items()})
            row["params"] = sum(p.numel() for p in outcome.model.parameters())
            row["run"] = str(_save_run(cfg, outputs / _slug(name), genome, outcome.model, row))
        results[name] = row
    if group.rank != 0:
        return {}
    say("fitting the non-network baselines")
    evals = {"val": task.load("val"), "test": task.load("test")}
    for name, row in task.other_baselines(task.load("train"), evals).items():
        method = row.pop("method", None)
        if method is not None:
            outputs.mkdir(parents=True, exist_ok=True)
            row["parameters_file"] = str(outputs / f"{method['method']}.json")
            write_json_atomic(outputs / f"{method['method']}.json", method)
        results[name] = row
    RunDir(cfg.run_dir).write_baselines(results)
    return results


def baseline_config(cfg: Config, seconds: Optional[float] = None) -> Config:
    """The config a baseline trains under: `seconds` of training, without rungs, if given; else the top rung's
    budget in one go, so a time-out of seconds covers twice the top rung (a candidate's covers one step up)."""
    if seconds is not None:
        if not seconds > 0:
            raise UserError(f"--budget: must be > 0 seconds, got {seconds!r}")
        return dataclasses.replace(
            cfg, training=dataclasses.replace(cfg.training, rungs=None, time_budget=seconds, epochs=MAX_EPOCHS),
            cluster=dataclasses.replace(cfg.cluster, candidate_timeout=max(cfg.cluster.candidate_timeout,
                                                                          2 * seconds)))
    if cfg.training.rungs is not None and cfg.training.rungs.unit == "seconds":
        top = cfg.training.rungs.budgets[-1]
        return dataclasses.replace(cfg, cluster=dataclasses.replace(
            cfg.cluster, candidate_timeout=max(cfg.cluster.candidate_timeout, 2 * top)))
    return cfg


def _slug(name: str) -> str:
    """A directory name for a baseline: 'U-Net (hand-designed)' → 'u-net-hand-designed'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _save_run(cfg: Config, where, genome, model, row: dict):
    """A baseline network as a run directory `where` (its config, and best/ with its metrics and calibration)."""
    where.mkdir(parents=True, exist_ok=True)
    own = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=where.name, directory=str(where.parent)))
    config_module.save(own, RunDir(where).config)
    save_network(RunDir(where).best, genome, model.state_dict(), {"genome_hash": genome.key, **row})
    return where


def _budget(cfg: Config) -> tuple[Optional[Stage], str]:
    """The training of a baseline network (a Stage to the top rung, with rungs) and its budget in words."""
    t = cfg.training
    if t.rungs is not None:
        top = t.rungs.budgets[-1]
        return Stage(t.rungs.unit, top), f"{top:g} {t.rungs.unit} (the top rung)"
    if t.time_budget is not None:
        return None, f"{t.time_budget:g} s" + (f" or {t.epochs} epochs" if t.epochs < MAX_EPOCHS else "")
    return None, f"{t.epochs} epochs"
