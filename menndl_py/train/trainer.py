"""One trainer for every task: Horovod-ready, budgeted in epochs and seconds, guarded against failures.

A candidate that is refused, raises, goes non-finite, runs out of memory or out of time becomes an Outcome with a
status and a message; the process lives on. Every rank of the group agrees before each collective: a phase that
fails on one rank (building, training, scoring, a task's calibration) fails on all of them together
(`agreed`, `GroupFailure`), and decisions that end training early (time up, non-finite loss, a stop) are maxed over
the group, so that no rank is left waiting in a collective. A rank whose training step fails keeps joining the
group's gradient allreduce, with no gradient of its own, until the next agreement point.

With multi-fidelity promotion a training is a `Stage`: it goes on from a saved state (weights, optimizer, how far
it went) to a budget counted from scratch, on a share of the training rows, and hands back its own state when a
higher rung may follow. A cosine schedule then falls to 0 along each stage (warm restarts at each rung).

In bf16 or fp16 (`training.precision`) the forward pass and loss run under torch.autocast, the weights and
optimizer stay in float32, and fp16's gradients are scaled (a GradScaler, whose state goes along with a stage's):
a step whose scaled gradients overflow is skipped, as the scaler does, but a non-finite loss still fails the
candidate.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, TypeVar

import numpy as np
import torch

from menndl_py.config import FaultConfig
from menndl_py.errors import CandidateRefused
from menndl_py.genome import Genome, SearchSpace
from menndl_py.records import Outcome, Status
from menndl_py.train.device import autocast, autocast_dtype, laid_out

SYNC_EVERY = 8  # steps between the group's agreements on stopping
T = TypeVar("T")


class Objective(Protocol):
    """What the trainer needs of a problem (a task is one): the fitness metric, loss, metric sums, augmentation."""

    metric: str

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def metrics(self, sums: torch.Tensor) -> dict[str, float]: ...

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple: ...

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Budget:
    epochs: int
    time_budget: Optional[float]  # seconds of training, then the candidate is scored (soft)
    timeout: float  # seconds for the whole evaluation; past it the candidate fails (hard)
    eval_batch_size: int = 4096
    lr_schedule: str = "constant"  # or "cosine": the learning rate falls to 0 along the budget (time or epochs)
    precision: str = "fp32"  # or "bf16", "fp16": autocast (training.precision)


@dataclass(frozen=True)
class Stage:
    """One rung of a candidate's training: on from `state` (None: from scratch) until `budget`, counted from
    scratch in `unit` ("seconds" or "epochs"), on a `data` share of the training rows; the state at the end is
    kept when `keep` (a higher rung may follow, or offspring may inherit it). A new candidate with `inherit` (its
    parent's model state dict) starts from the parent's tensors wherever a name and shape match."""

    unit: str
    budget: float
    data: float = 1.0
    state: Optional[dict] = None  # {"model", "optimizer" (a fresh one without it; "scaler", fp16): state dicts;
    #                                "epochs", "seconds"}
    keep: bool = False
    inherit: Optional[dict] = None


def inherit_weights(model: torch.nn.Module, parent: dict) -> int:
    """Copy into `model` the tensors of `parent` (a state dict) whose name and shape match its own; the number
    copied."""
    own = model.state_dict()
    matching = {k: v for k, v in parent.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return len(matching)


def fault_plan(faults: FaultConfig, key: str, seed: int) -> Optional[str]:
    """The fault (`debug.inject_faults`) to inject into the evaluation named `key`, or None."""
    u = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 2**32
    for kind in ("exception", "nonfinite", "timeout"):
        u -= getattr(faults, kind)
        if u < 0:
            return kind
    return None


class GroupFailure(Exception):
    """An evaluation ends early (failed, stopped, timed out), raised on every rank of the group alike."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status


def failure_of(exc: Exception) -> GroupFailure:
    """What an exception of one rank means for its candidate."""
    if isinstance(exc, GroupFailure):
        return exc
    if isinstance(exc, CandidateRefused):
        return GroupFailure(Status.REFUSED, str(exc))
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower():
        return GroupFailure(Status.OOM, _one_line(exc))
    return GroupFailure(Status.ERROR, _one_line(exc))


def settle(group, failure: Optional[GroupFailure], failed_somewhere: Optional[bool] = None) -> None:
    """Raise GroupFailure on every rank of `group` if any rank has a `failure` (whether any has may already be
    known, from a reduction the caller made): the status and message of the first rank that failed."""
    if failed_somewhere is None:
        failed_somewhere = bool(group.max(torch.tensor([float(failure is not None)])).item())
    if not failed_somewhere:
        return
    mine = None if failure is None else (failure.status, str(failure), group.rank)
    status, message, rank = group.first(mine)
    raise GroupFailure(status, message if rank == 0 else f"rank {rank} of the group: {message}")


def agreed(group, work: Callable[[], T]) -> T:
    """`work()` on this rank, then the group's agreement on it: its value, or GroupFailure on every rank when it
    raised on any. Call it on every rank of the group, around what each rank does alone before a collective."""
    try:
        value, failure = work(), None
    except Exception as exc:  # noqa: BLE001 - any failure of a candidate is a result, never a crash
        value, failure = None, failure_of(exc)
    settle(group, failure)
    return value


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
def metric_sums(model: torch.nn.Module, objective: Objective, x: torch.Tensor, y: torch.Tensor, batch: int,
                dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The objective's metric sums of `model` over (x, y), in float64 (x must hold at least one row); the forward
    pass autocast to `dtype` (None: float32), the sums taken on its predictions in float32."""
    model.eval()
    sums = None
    for start in range(0, len(x), batch):
        with autocast(x.device, dtype):
            prediction = model(x[start:start + batch])
        part = objective.metric_sums(prediction.float(), y[start:start + batch])
        sums = part if sums is None else sums + part
    return sums.double()


def score(model: torch.nn.Module, objective: Objective, x: torch.Tensor, y: torch.Tensor, group, batch: int,
          dtype: Optional[torch.dtype] = None) -> dict:
    """The objective's metrics of `model` over this rank's (x, y), summed over the group (GroupFailure on every
    rank if scoring failed on any)."""
    sums = agreed(group, lambda: metric_sums(model, objective, x, y, batch, dtype))
    return objective.metrics(group.sum(sums))


def score_split(model: torch.nn.Module, objective: Objective, split: str, batch: int, precision: str = "fp32") -> dict:
    """The objective's metrics of `model` over a whole split, in this process (on the model's device), the forward
    pass in `precision` (training.precision)."""
    device = next(model.parameters()).device
    x, y = (torch.as_tensor(a).to(device) for a in objective.load(split))
    return objective.metrics(metric_sums(model, objective, x, y, batch, autocast_dtype(precision, device)))


class Trainer:
    """Trains and scores genomes on data already loaded (this rank's shard) onto `device`."""

    def __init__(self, objective: Objective, space: SearchSpace, group, data: dict, budget: Budget, *,
                 device: torch.device, seed: int = 0, faults: FaultConfig = FaultConfig(),
                 interrupted: Callable[[], bool] = lambda: False):
        self.objective, self.space, self.group, self.data = objective, space, group, data
        self.budget, self.device, self.seed, self.faults = budget, device, seed, faults
        self.interrupted = interrupted
        autocast_dtype(budget.precision, device)  # a precision the device cannot compute in is a UserError now

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The dtype the forward pass autocasts to (None: float32)."""
        return autocast_dtype(self.budget.precision, self.device)

    def evaluate(self, genome: Genome, fault_key: Optional[str] = None, stage: Optional[Stage] = None) -> Outcome:
        """Train and score one genome (one `stage` of its training, with promotion). `fault_key` (the evaluation
        id) decides injected faults, if any."""
        start = time.monotonic()
        try:
            model = agreed(self.group, lambda: self._build(genome, stage))
            return self._train(model, genome, start, fault_plan(self.faults, fault_key or genome.key, self.seed),
                               stage)
        except GroupFailure as exc:
            return Outcome(exc.status, message=str(exc))

    def _build(self, genome: Genome, stage: Optional[Stage]) -> torch.nn.Module:
        torch.manual_seed(candidate_seed(self.seed, genome.key))
        model = self.space.build(genome)
        if stage is not None and stage.state is not None:
            model.load_state_dict(stage.state["model"])
        elif stage is not None and stage.inherit is not None:
            inherit_weights(model, stage.inherit)
        return laid_out(model, self.device)

    def _optimizer(self, genome: Genome, model: torch.nn.Module, stage: Optional[Stage]) -> torch.optim.Optimizer:
        genes = genome.training
        optimizer = make_optimizer(genes["optimizer"], model.parameters(), genes["learning_rate"],
                                   genes["weight_decay"])
        if stage is not None and stage.state is not None and "optimizer" in stage.state:
            optimizer.load_state_dict(stage.state["optimizer"])
            for g in optimizer.param_groups:  # a cosine stage ended at 0: each stage starts from the gene's rate
                g["lr"] = genes["learning_rate"]
        return optimizer

    def _scaler(self, stage: Optional[Stage]) -> Optional[torch.amp.GradScaler]:
        """fp16's gradient scaler, on from a stage's state when it holds one (None in fp32 and bf16)."""
        if self.budget.precision != "fp16":
            return None
        scaler = torch.amp.GradScaler(self.device.type)
        if stage is not None and stage.state is not None and "scaler" in stage.state:
            scaler.load_state_dict(stage.state["scaler"])
        return scaler

    def _rows(self, stage: Optional[Stage]) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's training rows, or a stage's share of them: the same rows for every candidate, and a lower
        rung's rows among a higher rung's."""
        x, y = self.data["train"]
        if stage is None or stage.data >= 1.0:
            return x, y
        n = max(1, int(stage.data * len(x)))
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))[:n].to(x.device)
        return x[keep], y[keep]

    def _train(self, model: torch.nn.Module, genome: Genome, start: float, fault: Optional[str],
               stage: Optional[Stage]) -> Outcome:
        genes, group, budget, dtype = genome.training, self.group, self.budget, self.dtype
        group.broadcast_parameters(model)
        optimizer, scaler = agreed(group, lambda: (self._optimizer(genome, model, stage), self._scaler(stage)))
        optimizer = group.distributed_optimizer(optimizer, model)
        x, y = self._rows(stage)
        batch = min(max(1, genes["batch_size"] // group.size), len(x))
        steps = len(x) // batch
        shuffle = torch.Generator().manual_seed(candidate_seed(self.seed, genome.key) + group.rank)
        before = stage.state if stage is not None and stage.state is not None else {"epochs": 0.0, "seconds": 0.0}
        if stage is not None:
            shuffle.manual_seed(candidate_seed(self.seed, genome.key) + group.rank + int(before["epochs"] * steps))
        limits = _limits(budget, stage, before)
        initial_lrs = [g["lr"] for g in optimizer.param_groups]
        train_start, curve, epoch, step, complete = time.monotonic(), [], 0, 0, 0
        failure: Optional[GroupFailure] = None  # this rank's, until the group's next agreement point
        spent = _reached(limits, before["epochs"], before["seconds"])
        while not spent:
            epoch += 1
            model.train()
            order = torch.randperm(len(x), generator=shuffle).to(x.device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # summed where the loss is
            for i in range(steps):
                step += 1
                stepped = False  # this rank has entered the step's gradient allreduce
                if failure is None:
                    try:
                        idx = order[i * batch:(i + 1) * batch]
                        inputs, targets = self.objective.augment(x[idx], y[idx], shuffle)
                        with autocast(self.device, dtype):  # (a task's own loss arithmetic gets float32)
                            loss = self.objective.loss(model(inputs).float(), targets)
                        if fault and step == 2:
                            loss = self._inject(fault, loss, start)
                        optimizer.zero_grad()
                        (loss if scaler is None else scaler.scale(loss)).backward()
                        stepped = True
                        group.step(optimizer, scaler)
                        loss_sum += loss.detach().double()
                    except Exception as exc:  # noqa: BLE001 - agreed on below, with the group
                        failure = failure_of(exc)
                if failure is not None and not stepped:
                    optimizer.step()  # the partners' allreduce of this step: gradients missing here count as 0
                epochs = before["epochs"] + epoch - 1 + (i + 1) / steps  # the same on every rank of the group
                if step % SYNC_EVERY == 0 or i == steps - 1 or epochs >= limits["epochs"][1] - 1e-9:
                    # any step's loss since the last agreement (fp16's scaler would skip a NaN step and go on)
                    nonfinite = failure is None and not torch.isfinite(loss_sum).item()
                    spent, progress = self._agree_to_stop(failure, nonfinite, limits, epochs,
                                                          before["seconds"] + time.monotonic() - train_start, start)
                    if spent:
                        break
                    if budget.lr_schedule == "cosine":
                        for g, lr in zip(optimizer.param_groups, initial_lrs):
                            g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            whole = i == steps - 1
            if whole or stage is not None:  # with stages, a part of an epoch too: rungs may be shorter than one
                complete += whole
                mean_loss = float(group.sum(loss_sum) / ((i + 1) * group.size))
                curve.append({"epoch": round(before["epochs"] + epoch - 1 + (i + 1) / steps, 6),
                              "train_loss": mean_loss, "seconds": before["seconds"] + time.monotonic() - train_start})
        train_seconds = time.monotonic() - train_start
        val = score(model, self.objective, *self.data["val"], group, budget.eval_batch_size, dtype)
        metrics = {f"val_{k}": v for k, v in val.items()}
        fitness = metrics[f"val_{self.objective.metric}"]
        if not all(map(_finite, metrics.values())):
            return Outcome(Status.NONFINITE, message=f"validation {self.objective.metric} is {fitness}", epochs=epoch,
                           train_seconds=train_seconds, curve=curve)
        state = None
        if stage is not None and stage.keep:
            epochs = before["epochs"] + (curve[-1]["epoch"] - before["epochs"] if curve else 0.0)
            state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                     "optimizer": optimizer.state_dict(), "epochs": epochs,
                     "seconds": before["seconds"] + train_seconds}
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
        return Outcome(Status.OK, fitness, metrics, epochs=complete, train_seconds=train_seconds, curve=curve,
                       model=model, state=state)

    def _agree_to_stop(self, failure: Optional[GroupFailure], nonfinite: bool, limits: dict, epochs: float,
                       seconds: float, start: float) -> tuple[bool, float]:
        """Every rank's view of (failed, stop requested, non-finite loss, hard time-out, budget spent), maxed over
        the group, and the share of this training's budget (time or epochs) used, the group's largest: one
        learning rate for all. Raises GroupFailure on every rank when the candidate ends here."""
        used = _used(limits, epochs, seconds)
        flags = torch.tensor([float(failure is not None), float(self.interrupted()), float(nonfinite),
                              float(time.monotonic() - start > self.budget.timeout), float(used >= 1.0), used])
        *flags, progress = self.group.max(flags).tolist()
        failed, interrupted, nonfinite, timed_out, spent = (bool(v) for v in flags)
        settle(self.group, failure, failed)
        if interrupted:
            raise GroupFailure(Status.INTERRUPTED, "abandoned: the search is stopping")
        if nonfinite:
            raise GroupFailure(Status.NONFINITE, "training loss became non-finite")
        if timed_out:
            raise GroupFailure(Status.TIMEOUT, f"exceeded the candidate time-out of {self.budget.timeout:g} s")
        return spent, progress

    def _inject(self, fault: str, loss: torch.Tensor, start: float) -> torch.Tensor:
        if fault == "exception":
            raise RuntimeError("injected fault: exception during training")
        if fault == "nonfinite":
            return loss * float("nan")
        time.sleep(max(0.0, self.budget.timeout - (time.monotonic() - start)) + 0.05)
        return loss


def _limits(budget: Budget, stage: Optional[Stage], before: dict) -> dict:
    """{unit: (from, to)} for each limit on this training: epochs and seconds, counted from scratch."""
    if stage is None:
        limits = {"epochs": (0.0, float(budget.epochs))}
        if budget.time_budget is not None:
            limits["seconds"] = (0.0, budget.time_budget)
        return limits
    limits = {"epochs": (before["epochs"], float(budget.epochs))}  # training.epochs caps every stage together
    limits[stage.unit] = (before[stage.unit], stage.budget)
    return limits


def _used(limits: dict, epochs: float, seconds: float) -> float:
    """The share of this training's budget used: the largest over its limits."""
    done = {"epochs": epochs + 1e-9, "seconds": seconds}  # (a sum of step fractions may fall just short)
    return max((done[unit] - low) / (high - low) if high > low else 1.0 for unit, (low, high) in limits.items())


def _reached(limits: dict, epochs: float, seconds: float) -> bool:
    """Whether a limit is already reached (a state trained as far as this stage goes)."""
    done = {"epochs": epochs, "seconds": seconds}
    return any(done[unit] >= high for unit, (_, high) in limits.items())


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
