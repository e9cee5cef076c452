"""What every rank of a worker group does with a Work: train it with the group and report the Result."""
from __future__ import annotations

import io
import socket
import time
from typing import Callable, Optional

import torch

from menndl_py.config import Config
from menndl_py.engine.signals import StopRequest
from menndl_py.errors import UserError, os_error_line
from menndl_py.genome import Genome
from menndl_py.records import Outcome, Result, Status, Work, better
from menndl_py.tasks.base import Task
from menndl_py.train.device import autocast
from menndl_py.train.latency import seconds_per_sample
from menndl_py.train.trainer import Budget, GroupFailure, Stage, Trainer, failure_of


def make_trainer(cfg: Config, task: Task, group, device: torch.device,
                 interrupted: Callable[[], bool] = StopRequest.requested) -> Trainer:
    """A trainer holding this rank's shard of the training and validation data on `device`. Every rank of `group`
    raises the same UserError if loading failed on any, or if a split has rows but not on every rank."""
    data, failure = {}, None
    try:
        for split in ("train", "val"):
            x, y = (torch.as_tensor(a).to(device) for a in task.load(split, (group.rank, group.size)))
            data[split] = (x, y)
    except (UserError, OSError) as exc:
        failure = str(exc) if isinstance(exc, UserError) else os_error_line(exc)
    everyone = group.gather((failure, {split: len(x) for split, (x, _) in data.items()}))
    failures = [f for f, _ in everyone if f]
    if failures:
        raise UserError(failures[0])
    for split in ("train", "val"):
        rows = [counts[split] for _, counts in everyone]
        if 0 in rows and sum(rows):
            raise UserError(f"task.options: the {split} split has {sum(rows)} row{'s' * (sum(rows) != 1)} for "
                            f"groups of {group.size} ranks (cluster.ranks_per_candidate), which leaves a rank "
                            f"without any; every rank needs at least one")
    x, y = data["train"]
    n = min(counts["train"] for _, counts in everyone)  # equal step counts on every rank
    data["train"] = (x[:n], y[:n])
    t = cfg.training
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimizer imports torch._dynamo (~3 s)
    return Trainer(task, task.space().restricted(cfg.search.space), group, data,
                   Budget(t.epochs, t.time_budget, cfg.cluster.candidate_timeout, t.eval_batch_size, t.lr_schedule,
                          t.precision),
                   device=device, seed=cfg.search.seed, faults=cfg.debug.inject_faults, interrupted=interrupted)


class Evaluator:
    """Evaluates the genomes the master sends, on this rank's shard of the data."""

    def __init__(self, cfg: Config, task: Task, group, device: torch.device,
                 interrupted: Callable[[], bool] = StopRequest.requested):
        self.task, self.group, self.rungs, self.inherit = task, group, cfg.training.rungs, cfg.search.inherit
        self.trainer = make_trainer(cfg, task, group, device, interrupted)
        self.timed = "latency" in cfg.search.objectives  # the group's leader times inference at the first rung
        self.host = socket.gethostname()

    def evaluate(self, work: Work) -> Result:
        """The Result of one Work (complete on the group's rank 0: only it carries the weights)."""
        start = time.time()
        try:
            outcome = self.task.evaluate(Genome.from_json(work.genome), self.trainer, str(work.id), self._stage(work))
        except GroupFailure as exc:  # in the task's own phases (a calibration), raised on every rank alike
            outcome = Outcome(exc.status, message=str(exc))
        if self.timed and self.group.rank == 0 and outcome.status == Status.OK and outcome.model is not None \
                and work.rung == 0:
            self._time(Genome.from_json(work.genome), outcome)
        weights = state = None
        if self.group.rank == 0 and outcome.model is not None and \
                better(outcome.fitness, work.best, self.task.higher_is_better):
            weights = _saved({k: v.detach().cpu() for k, v in outcome.model.state_dict().items()})
        if self.group.rank == 0 and outcome.status == Status.OK and outcome.state is not None:
            state = _saved(outcome.state)
        return Result(work.id, outcome.status, outcome.fitness, outcome.metrics, outcome.message, outcome.epochs,
                      outcome.train_seconds, outcome.curve, start, time.time(), self.host, self.group.size, weights,
                      state)

    def _time(self, genome: Genome, outcome: Outcome) -> None:
        """Add the trained network's inference latency (seconds per sample, in `training.precision`) to its metrics;
        a network that cannot run the latency batch (out of memory) fails."""
        try:
            batch = self.task.latency_batch(genome).to(self.trainer.device)
            with autocast(self.trainer.device, self.trainer.dtype):  # in the precision it trained in
                outcome.metrics["latency"] = seconds_per_sample(outcome.model, batch)
        except Exception as exc:  # noqa: BLE001 - a candidate's failure is a result, never a crash
            failure = failure_of(exc)
            outcome.status, outcome.message, outcome.fitness = failure.status, f"timing inference: {failure}", None
            outcome.model = outcome.state = None

    def _stage(self, work: Work) -> Optional[Stage]:
        """How far this training goes, with `training.rungs`: to the work's rung, on from the state it carries (or
        from its parent's weights); the state at the end is kept below the top rung, and at it with
        `search.inherit` (offspring may start from it)."""
        if self.rungs is None:
            return None
        state, inherit = (None if data is None else _loaded(data) for data in (work.state, work.inherit))
        return Stage(self.rungs.unit, work.budget, work.data, state,
                     keep=self.inherit or work.rung < len(self.rungs.budgets) - 1,
                     inherit=None if inherit is None else inherit["model"])


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _loaded(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # saved on any GPU: read to the CPU
