"""Hand-made baselines of a task, trained on the same data and under the same budget as a candidate."""
from __future__ import annotations

import json

from menndl_py.cluster.worker import Evaluator, pick_device, set_threads
from menndl_py.config import Config
from menndl_py.run import ensure_data, say
from menndl_py.tasks import make_task
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import score


def run_baselines(cfg: Config) -> dict[str, dict]:
    """Train the task's published networks like a candidate, fit its other baselines; write baselines.json."""
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    ensure_data(task)
    threads = set_threads(cfg, 1)
    evaluator = Evaluator(cfg, task, LocalGroup(), pick_device(0))
    test = [a for a in task.load("test")]
    results: dict[str, dict] = {}
    for name, genome in task.baseline_genomes().items():
        say(f"training baseline {name} ({threads} threads, budget {cfg.training.epochs} epochs"
            f"{f' or {cfg.training.time_budget:g} s' if cfg.training.time_budget else ''})")
        outcome = task.evaluate(genome, evaluator.trainer)
        row = {"status": outcome.status, "message": outcome.message, "epochs": outcome.epochs,
               "train_seconds": round(outcome.train_seconds, 2), **outcome.metrics}
        if outcome.model is not None:
            import torch

            x, y = (torch.as_tensor(a) for a in test)
            row.update({f"test_{k}": v for k, v in score(outcome.model, task, x, y, LocalGroup(),
                                                          cfg.training.eval_batch_size).items()})
            row["params"] = sum(p.numel() for p in outcome.model.parameters())
        results[name] = row
    say("fitting the non-network baselines")
    evals = {"val": task.load("val"), "test": tuple(test)}
    results.update(task.other_baselines(task.load("train"), evals))
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "baselines.json").write_text(json.dumps(results, indent=2))
    return results


def format_baselines(results: dict[str, dict], metric: str, unit: str) -> str:
    lines = [f"{'baseline':44s} {'val ' + metric:>12s} {'test ' + metric:>12s}  ({unit})"]
    for name, row in results.items():
        val, test = row.get(f"val_{metric}"), row.get(f"test_{metric}")
        cell = lambda v: f"{v:12.4f}" if isinstance(v, float) else f"{'-':>12s}"  # noqa: E731
        lines.append(f"{name:44s} {cell(val)} {cell(test)}" + (f"  [{row['status']}]" if row.get("status", "ok") != "ok" else ""))
    return "\n".join(lines)
