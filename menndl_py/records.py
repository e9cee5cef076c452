"""The evaluation records, defined once: the work sent to a group, the outcome of training, the result sent back,
their statuses, and the row stored for each evaluation; "is this fitness better" is written here and nowhere else.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


class Status(str, Enum):
    """How an evaluation ended. Every status but INTERRUPTED is stored; an interrupted one is sent again."""

    OK = "ok"
    REFUSED = "refused"
    ERROR = "error"
    NONFINITE = "nonfinite"
    TIMEOUT = "timeout"
    OOM = "oom"
    INTERRUPTED = "interrupted"  # abandoned because the search is stopping: never stored, sent again on resume
    LOST = "lost"  # its group went silent past the candidate time-out (a hung or dead rank): never sent again
    CRASHED = "crashed"  # in flight at two crashes of the job: never sent again

    def __str__(self) -> str:
        return self.value


STORED_STATUSES = tuple(s for s in Status if s is not Status.INTERRUPTED)


def better(fitness: Optional[float], than: Optional[float], higher_is_better: bool) -> bool:
    """Whether `fitness` beats `than` (None: no fitness, which beats nothing and is beaten by anything)."""
    if fitness is None:
        return False
    return than is None or (fitness > than if higher_is_better else fitness < than)


@dataclass
class Work:
    """One genome sent to a worker group. Journalled in the checkpoint as `to_json()`; a resumed run sends it again
    under the same id."""

    id: int
    genome: dict
    parents: list = field(default_factory=list)  # evaluation ids
    origin: str = "random"
    predicted: Optional[float] = None
    screened: bool = False
    params: int = 0
    flops: int = 0
    group: Optional[int] = None
    submit_time: Optional[float] = None
    best: Optional[float] = None  # the best fitness so far: a group sends weights only when it beats this
    rung: int = 0  # with training.rungs: the rung this training reaches
    budget: Optional[float] = None  # ... its budget there, counted from scratch (training.rungs.unit)
    data: float = 1.0  # ... the share of the training rows it trains on
    state: Optional[bytes] = None  # ... the training state (rung - 1's) it continues from; never journalled
    inherit: Optional[bytes] = None  # the first parent's training state, whose weights it starts from
    #                                  (`search.inherit`); never journalled

    def to_json(self) -> dict:
        """All but the training states, which the run directory keeps."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("state", "inherit")}

    @classmethod
    def from_json(cls, data: dict) -> "Work":
        return cls(**data)


@dataclass
class Outcome:
    """What training (and scoring) one genome gave, on the rank that did it."""

    status: Status
    fitness: Optional[float] = None
    metrics: dict = field(default_factory=dict)
    message: str = ""
    epochs: int = 0
    train_seconds: float = 0.0
    curve: list = field(default_factory=list)
    model: Any = None  # the trained torch module, when status is OK
    state: Any = None  # the training state to continue from (a dict), when a higher rung may follow


@dataclass
class Result:
    """A group's report on one Work, sent to the master (complete on the group's leader)."""

    id: int
    status: Status
    fitness: Optional[float]
    metrics: dict
    message: str
    epochs: int
    train_seconds: float
    curve: list
    start_time: float
    end_time: float
    host: str
    ranks: int
    weights: Optional[bytes] = None  # the state dict, saved, when the fitness beat Work.best
    state: Optional[bytes] = None  # the training state to continue from, saved, when a higher rung may follow


# -- the stored row: the columns of the results table ----------------------------------------------------
BASE_COLUMNS = ["id", "rung", "budget", "genome_hash", "parents", "origin", "status", "fitness", "predicted",
                "screened", "params", "flops", "depth", "group", "host", "ranks", "submit_time", "start_time",
                "end_time", "train_seconds", "epochs"]
TAIL_COLUMNS = ["message", "genome", "curve"]
INT_COLUMNS = {"id", "rung", "screened", "params", "flops", "depth", "group", "ranks", "epochs"}
STR_COLUMNS = {"genome_hash", "parents", "origin", "status", "host", "message", "genome", "curve"}


def columns(metric_names) -> list[str]:
    """The results table's columns for a task with these metrics (stored as `m:<metric>`)."""
    return BASE_COLUMNS + [f"m:{m}" for m in metric_names] + TAIL_COLUMNS


def stored_row(work: Work, result: Result, genome) -> dict:
    """The row stored for a finished evaluation (`genome`: the Genome of `work`)."""
    ok = result.status == Status.OK
    row = {"id": work.id, "rung": work.rung, "budget": work.budget, "origin": work.origin,
           "predicted": work.predicted, "params": work.params,
           "flops": work.flops, "group": work.group, "submit_time": work.submit_time,
           "status": str(result.status), "message": result.message, "host": result.host, "ranks": result.ranks,
           "start_time": result.start_time, "end_time": result.end_time, "train_seconds": result.train_seconds,
           "epochs": result.epochs, "curve": result.curve,
           "genome_hash": genome.key, "parents": ";".join(map(str, work.parents)),
           "fitness": result.fitness if ok else None, "screened": int(work.screened),
           "depth": genome.depth, "genome": genome.canonical(),
           **{f"m:{k}": v for k, v in result.metrics.items()}}
    if result.curve:
        row["m:train_loss"] = result.curve[-1]["train_loss"]
    return row
