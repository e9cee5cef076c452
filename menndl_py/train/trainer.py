"""One trainer for every task: Horovod-ready, budgeted in epochs and seconds, guarded against failures.

A candidate that is refused, raises, goes non-finite, runs out of memory or out of time becomes an Outcome with a
status and a message; the process lives on. Decisions that end training early (time up, non-finite loss) are
agreed on by the whole group, so that no rank is left waiting in a collective.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Genome, SearchSpace
from menndl_py.tasks.base import Task

SYNC_EVERY = 8  # steps between the group's agreements on stopping
STATUSES = ("ok", "refused", "error", "nonfinite", "timeout", "oom")
INTERRUPTED = "interrupted"  # abandoned because the search is stopping: never stored, sent again on resume


@dataclass(frozen=True)
class Budget:
    epochs: int
    time_budget: Optional[float]  # seconds of training, then the candidate is scored (soft)
    timeout: float  # seconds for the whole evaluation; past it the candidate fails (hard)
    eval_batch_size: int = 4096
    lr_schedule: str = "constant"  # or "cosine": the learning rate falls to 0 along the budget (time or epochs)


@dataclass(frozen=True)
class Faults:
    """Deliberate failures for testing the guards: the share of candidates that raise, go NaN or hang."""

    exception: float = 0.0
    nonfinite: float = 0.0
    timeout: float = 0.0

    def plan(self, key: str, seed: int) -> Optional[str]:
        u = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 2**32
        for kind in ("exception", "nonfinite", "timeout"):
            u -= getattr(self, kind)
            if u < 0:
                return kind
        return None


@dataclass
class Outcome:
    status: str
    fitness: Optional[float] = None
    metrics: dict = field(default_factory=dict)
    message: str = ""
    epochs: int = 0
    train_seconds: float = 0.0
    curve: list = field(default_factory=list)
    model: Optional[torch.nn.Module] = None


class _Stop(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise CandidateRefused(f"unknown optimizer {name!r}")


def candidate_seed(seed: int, key: str) -> int:
    return int(hashlib.sha1(f"{seed}:{key}:init".encode()).hexdigest()[:8], 16)


@torch.no_grad()
def score(model: torch.nn.Module, task: Task, x: torch.Tensor, y: torch.Tensor, group, batch: int) -> dict:
    """Task metrics of `model` over this rank's (x, y), summed over the group."""
    model.eval()
    sums = None
    for start in range(0, len(x), batch):
        part = task.metric_sums(model(x[start:start + batch]), y[start:start + batch])
        sums = part if sums is None else sums + part
    return task.metrics(group.sum(sums.double()))


class Trainer:
    """Trains and scores genomes on data already loaded (this rank's shard) onto `device`."""

    def __init__(self, task: Task, space: SearchSpace, group, data: dict, budget: Budget, *,
                 device: torch.device, seed: int = 0, faults: Faults = Faults(),
                 interrupted: Callable[[], bool] = lambda: False):
        self.task, self.space, self.group, self.data = task, space, group, data
        self.budget, self.device, self.seed, self.faults = budget, device, seed, faults
        self.interrupted = interrupted

    def evaluate(self, genome: Genome, fault_key: Optional[str] = None) -> Outcome:
        """Train and score one genome. `fault_key` (the evaluation id) decides injected faults, if any."""
        start = time.monotonic()
        try:
            torch.manual_seed(candidate_seed(self.seed, genome.key))
            model = self.space.build(genome).to(self.device)
            return self._train(model, genome, start, self.faults.plan(fault_key or genome.key, self.seed))
        except CandidateRefused as exc:
            return Outcome("refused", message=str(exc))
        except _Stop as exc:
            return Outcome(exc.status, message=str(exc))
        except (torch.OutOfMemoryError, MemoryError) as exc:
            return Outcome("oom", message=_one_line(exc))
        except Exception as exc:  # noqa: BLE001 - any failure of a candidate is a result, never a crash
            status = "oom" if "out of memory" in str(exc).lower() else "error"
            return Outcome(status, message=_one_line(exc))

    def _train(self, model: torch.nn.Module, genome: Genome, start: float, fault: Optional[str]) -> Outcome:
        genes, group, budget = genome.training, self.group, self.budget
        group.broadcast_parameters(model)
        optimizer = group.distributed_optimizer(
            make_optimizer(genes["optimizer"], model.parameters(), genes["learning_rate"], genes["weight_decay"]),
            model)
        x, y = self.data["train"]
        batch = min(max(1, genes["batch_size"] // group.size), len(x))
        steps = len(x) // batch
        shuffle = torch.Generator().manual_seed(candidate_seed(self.seed, genome.key) + group.rank)
        initial_lrs = [g["lr"] for g in optimizer.param_groups]
        train_start, curve, epoch, step = time.monotonic(), [], 0, 0
        for epoch in range(1, budget.epochs + 1):
            model.train()
            order = torch.randperm(len(x), generator=shuffle).to(x.device)
            loss_sum = torch.zeros((), dtype=torch.float64)
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                inputs, targets = self.task.augment(x[idx], y[idx], shuffle)
                loss = self.task.loss(model(inputs), targets)
                step += 1
                if fault and step == 2:
                    loss = self._inject(fault, loss, start)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double().cpu()
                if step % SYNC_EVERY == 0 or i == steps - 1:
                    spent, progress = self._agree_to_stop(loss, train_start, start, (epoch - 1 + (i + 1) / steps))
                    if spent:
                        break
                    if budget.lr_schedule == "cosine":
                        for g, lr in zip(optimizer.param_groups, initial_lrs):
                            g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            else:
                mean_loss = float(group.sum(loss_sum) / (steps * group.size))
                curve.append({"epoch": epoch, "train_loss": mean_loss, "seconds": time.monotonic() - train_start})
                continue
            break
        train_seconds = time.monotonic() - train_start
        val = score(model, self.task, *self.data["val"], group, budget.eval_batch_size)
        metrics = {f"val_{k}": v for k, v in val.items()}
        fitness = metrics[f"val_{self.task.metric}"]
        if not all(map(_finite, metrics.values())):
            return Outcome("nonfinite", message=f"validation {self.task.metric} is {fitness}", epochs=epoch,
                           train_seconds=train_seconds, curve=curve)
        return Outcome("ok", fitness, metrics, epochs=len(curve), train_seconds=train_seconds, curve=curve,
                       model=model)

    def _agree_to_stop(self, loss: torch.Tensor, train_start: float, start: float,
                       epochs_done: float) -> tuple[bool, float]:
        """Every rank's view of (stop requested, non-finite, hard time-out, time budget spent), maxed over the group,
        and the share of the budget (time or epochs) used, the group's largest: one learning rate for all."""
        now, budget = time.monotonic(), self.budget.time_budget
        time_used = (now - train_start) / budget if budget is not None else 0.0
        flags = torch.tensor([float(self.interrupted()), float(not torch.isfinite(loss).item()),
                              float(now - start > self.budget.timeout), float(time_used > 1.0),
                              max(time_used, epochs_done / self.budget.epochs)])
        *flags, progress = self.group.max(flags).tolist()
        interrupted, nonfinite, timed_out, spent = (bool(v) for v in flags)
        if interrupted:
            raise _Stop(INTERRUPTED, "abandoned: the search is stopping")
        if nonfinite:
            raise _Stop("nonfinite", f"training loss became non-finite ({loss.item()})")
        if timed_out:
            raise _Stop("timeout", f"exceeded the candidate time-out of {self.budget.timeout:g} s")
        return spent, progress

    def _inject(self, fault: str, loss: torch.Tensor, start: float) -> torch.Tensor:
        if fault == "exception":
            raise RuntimeError("injected fault: exception during training")
        if fault == "nonfinite":
            return loss * float("nan")
        time.sleep(max(0.0, self.budget.timeout - (time.monotonic() - start)) + 0.05)
        return loss


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
