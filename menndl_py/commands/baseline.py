"""`menndl baseline`: a task's hand-made baselines, trained on the same data and under the same budget as a
candidate."""
from __future__ import annotations

from menndl_py.commands.common import ensure_data, say, task_of
from menndl_py.config import Config
from menndl_py.engine.evaluator import make_trainer
from menndl_py.rundir import RunDir
from menndl_py.train.device import pick_device, set_threads
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import score_split


def run_baselines(cfg: Config) -> dict[str, dict]:
    """Train the task's published networks like a candidate, fit its other baselines; write them to the run
    directory."""
    task = task_of(cfg)
    ensure_data(task)
    threads = set_threads(cfg.cluster.threads_per_rank, 1)
    trainer = make_trainer(cfg, task, LocalGroup(), pick_device(0))
    results: dict[str, dict] = {}
    for name, genome in task.baseline_genomes().items():
        say(f"training baseline {name} ({threads} threads, budget {cfg.training.epochs} epochs"
            f"{f' or {cfg.training.time_budget:g} s' if cfg.training.time_budget else ''})")
        outcome = task.evaluate(genome, trainer)
        row = {"status": str(outcome.status), "message": outcome.message, "epochs": outcome.epochs,
               "train_seconds": round(outcome.train_seconds, 2), **outcome.metrics}
        if outcome.model is not None:
            test = score_split(outcome.model, task, "test", cfg.training.eval_batch_size)
            row.update({f"test_{k}": v for k, v in test.items()})
            row["params"] = sum(p.numel() for p in outcome.model.parameters())
        results[name] = row
    say("fitting the non-network baselines")
    evals = {"val": task.load("val"), "test": task.load("test")}
    results.update(task.other_baselines(task.load("train"), evals))
    RunDir(cfg.run_dir).write_baselines(results)
    return results
