"""Train a run's best network again, from scratch (or on from its weights) and for longer.

A search ranks candidates on short training budgets; its winner then earns a full one. `menndl retrain RUN
--budget SECONDS` trains the best genome of RUN on the run's own data and task settings (each rank with its share
of the node's cores unless `cluster.threads_per_rank` says otherwise), calibrates it as a search candidate is (the
STEM task's detection thresholds), scores it on the validation and test splits with that calibration, and saves it
as the run's retrained network (with its metrics and calibration), which `menndl predict` then prefers to the
search's best. Launched on several ranks (`srun -n 4 menndl retrain RUN`), they train it together, data-parallel
with Horovod like a search's worker group, and rank 0 scores and writes it. `--network ID` retrains another of the
run's evaluations instead: a Pareto front or ensemble member (pareto/ID/, ensemble/ID/), or any other candidate
(its genome from the results table). `--network ensemble` retrains each network of the search's ensemble
(`search.keep_top`) in turn into final_ensemble/ and records their ensemble, calibrated and scored, in
final_ensemble.json, which `menndl predict --network final_ensemble` runs.
`--warm-start` starts from the network's trained weights with a fresh optimizer (the learning rate from its gene,
on the schedule along the new budget): to train a network on where a search left it, or on the run's data after
the task's settings changed (the data file follows the run's config). For a candidate that is not kept whole,
those are the weights of its kept training state (states/ID.pt: a candidate the search might still have promoted).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Optional

from menndl_py.commands.common import describe, ensure_data, group_words, launched_group, record_ensemble, say, task_of
from menndl_py.config import Config
from menndl_py.engine.evaluator import make_trainer
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.records import Status, better
from menndl_py.rundir import RunDir
from menndl_py.rundir.layout import GENOME
from menndl_py.rundir.networks import evaluated, kept_weights, load_network, read_genome, read_record, save_network
from menndl_py.train.trainer import Stage, score_split


def starting_point(run: RunDir, network: Optional[str], space: SearchSpace,
                   warm_start: bool) -> tuple[Genome, Optional[dict], str, dict]:
    """(genome, the weights to start from (None: from scratch), its name, the search's record of it) of the best
    network (`network` None) or of evaluation `network`: kept whole, or else from the results table and states/."""
    if network is not None and not network.isdigit():
        raise UserError(f"--network: must be the id of one of the run's evaluations, got {network!r}")
    if network is None or run.keeps(network):
        source = run.best if network is None else run.network_named(network)
        if not (source / GENOME).is_file():
            raise UserError(f"{source / GENOME}: missing; the run has no best network yet")
        if warm_start:
            genome, model, record = load_network(source, space)
            return genome, model.state_dict(), source.name, record
        return read_genome(source), None, source.name, read_record(source)
    genome, record = evaluated(run, int(network))
    weights = kept_weights(run, int(network)) if warm_start else None
    if warm_start and weights is None:
        raise UserError(f"--warm-start: {run.path} keeps no weights of network {network} (not a front or ensemble "
                        f"member, no {run.states.name}/{network}.pt); without --warm-start it trains from scratch")
    return genome, weights, network, record


def retrain(cfg: Config, budget: float, epochs: int, lr_schedule: str = "cosine", network: Optional[str] = None,
            warm_start: bool = False) -> dict:
    """Train `cfg.run_dir`'s best genome (or evaluation `network`'s, or with `network` 'ensemble' each of the
    ensemble's) for `budget` seconds or `epochs` epochs, the learning rate on `lr_schedule`, from scratch or
    (`warm_start`) from its trained weights, on every rank this command was launched on; returns the record written
    beside the network, or final_ensemble.json's (on rank 0; {} elsewhere)."""
    if not budget > 0:
        raise UserError(f"--budget: must be > 0 seconds, got {budget!r}")
    if epochs < 1:
        raise UserError(f"--epochs: must be >= 1, got {epochs!r}")
    cfg = dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, time_budget=budget, epochs=epochs, lr_schedule=lr_schedule),
        cluster=dataclasses.replace(cfg.cluster, candidate_timeout=max(cfg.cluster.candidate_timeout, 2 * budget)))
    task = task_of(cfg)
    run = RunDir(cfg.run_dir)
    space = task.space().restricted(cfg.search.space)
    if network == "ensemble":
        return retrain_ensemble(cfg, task, run, space, warm_start)
    genome, weights, source, record = starting_point(run, network, space, warm_start)
    group, threads, device = launched_group(cfg)
    ensure_data(task, group.size)
    model, result = train_again(cfg, task, genome, weights, source, warm_start, group, threads, device)
    if group.rank != 0:
        return {}
    save_network(run.final, genome, model.state_dict(), result)
    say(f"written to {run.final}")
    searched = record.get(f"val_{task.metric}")
    if searched is not None and better(searched, result["fitness"], task.higher_is_better):
        kept = f", `--network {source}` the search's" if source == run.best.name or run.keeps(source) else ""
        say(f"note: that validation {task.metric} is worse than the search's {searched:.4f} for this network; "
            f"`menndl predict` takes {run.final.name}/ now{kept}")
    return result


def retrain_ensemble(cfg: Config, task, run: RunDir, space: SearchSpace, warm_start: bool) -> dict:
    """Train each network of the search's ensemble again, as `retrain` trains the best, into final_ensemble/<id>/,
    then calibrate, score and record their ensemble in final_ensemble.json (`menndl predict --network
    final_ensemble`). The one before is removed first, so what is there is whole or absent."""
    members = run.read_json(run.ensemble_record).get("members")
    if not members:
        raise UserError(f"{run.ensemble_record}: missing; a search with search.keep_top (2 or more) writes it when "
                        f"it ends")
    starts = [starting_point(run, str(work_id), space, warm_start) for work_id in members]
    group, threads, device = launched_group(cfg)
    ensure_data(task, group.size)
    if group.rank == 0:
        run.final_ensemble_record.unlink(missing_ok=True)
        shutil.rmtree(run.final_ensemble, ignore_errors=True)
    for genome, weights, source, _ in starts:
        model, result = train_again(cfg, task, genome, weights, source, warm_start, group, threads, device)
        if group.rank == 0:
            save_network(run.final_ensemble / source, genome, model.state_dict(), result)
    if group.rank != 0:
        return {}
    record = record_ensemble(cfg, task, run.final_ensemble, run.final_ensemble_record,
                             budget_seconds=cfg.training.time_budget, warm_start=warm_start)
    say(f"ensemble of the {len(members)} networks trained again: validation {task.metric} "
        f"{record[f'val_{task.metric}']:.4f} {task.unit}, test {task.metric} {record[f'test_{task.metric}']:.4f} "
        f"{task.unit}; written to {run.final_ensemble_record}; 'menndl predict --network final_ensemble' uses it")
    return record


def train_again(cfg: Config, task, genome: Genome, weights: Optional[dict], source: str, warm_start: bool, group,
                threads: int, device) -> tuple:
    """(model, its record: budget, training, validation and (rank 0) test metrics) of `genome` trained under
    `cfg.training` from `weights` (None: from scratch) on `group`; UserError, on every rank, if training failed."""
    budget, epochs, lr_schedule = cfg.training.time_budget, cfg.training.epochs, cfg.training.lr_schedule
    stage = None if weights is None else Stage("seconds", budget, state={"model": weights, "epochs": 0.0,
                                                                          "seconds": 0.0})
    if group.rank == 0:
        say(f"retraining {describe(genome.to_json())} for {budget:g} s or {epochs} epochs, {lr_schedule} learning "
            f"rate, from {'its trained weights' if warm_start else 'scratch'} ({group_words(group, threads)})")
    started = time.time()
    outcome = task.evaluate(genome, make_trainer(cfg, task, group, device), stage=stage)
    if outcome.status != Status.OK:  # the same on every rank
        raise UserError(f"{cfg.run_dir}: retraining network {source} ended with status {outcome.status}: "
                        f"{outcome.message}")
    if group.rank != 0:
        return outcome.model, {}
    test = score_split(outcome.model, task, "test", cfg.training.eval_batch_size, cfg.training.precision)
    say(f"{outcome.epochs} epochs in {outcome.train_seconds:.0f} s: validation {task.metric} "
        f"{outcome.fitness:.4f} {task.unit}, test {task.metric} {test[task.metric]:.4f} {task.unit}")
    return outcome.model, {
        "genome_hash": genome.key, "source": source, "warm_start": warm_start, "budget_seconds": budget,
        "lr_schedule": lr_schedule, "epochs": outcome.epochs, "train_seconds": outcome.train_seconds,
        "ranks": group.size, "threads": threads, "started": started,
        "params": sum(p.numel() for p in outcome.model.parameters()), "fitness": outcome.fitness,
        **outcome.metrics, **{f"test_{k}": v for k, v in test.items()}, "curve": outcome.curve}
