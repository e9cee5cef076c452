"""What every rank of a worker group does with a genome: train it with the group and report the outcome."""
from __future__ import annotations

import io
import os
import socket
import time
from typing import Callable, Optional

import torch

from menndl_py.cluster.signals import StopRequest
from menndl_py.config import Config
from menndl_py.genome import Genome
from menndl_py.tasks.base import Task
from menndl_py.train.trainer import Budget, Faults, Trainer


def pick_device(local_rank: int) -> torch.device:
    """One GPU per rank, chosen by node-local rank, when CUDA exists; the CPU otherwise."""
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def set_threads(cfg: Config, ranks_on_node: int) -> int:
    """CPU threads per rank: the configured number, or this process's cores shared among the node's ranks."""
    threads = cfg.cluster.threads_per_rank or max(1, len(os.sched_getaffinity(0)) // max(ranks_on_node, 1))
    torch.set_num_threads(threads)
    return threads


def better(fitness: Optional[float], than: Optional[float], higher_is_better: bool) -> bool:
    if fitness is None:
        return False
    return than is None or (fitness > than if higher_is_better else fitness < than)


class Evaluator:
    """Holds this rank's data shard on its device and evaluates the genomes the master sends."""

    def __init__(self, cfg: Config, task: Task, group, device: torch.device,
                 interrupted: Callable[[], bool] = StopRequest.requested):
        self.cfg, self.task, self.group = cfg, task, group
        data = {}
        for split in ("train", "val"):
            x, y = (torch.as_tensor(a).to(device) for a in task.load(split, (group.rank, group.size)))
            data[split] = (x, y)
        x, y = data["train"]
        n = -int(group.max(torch.tensor([-float(len(x))])))  # equal step counts on every rank
        data["train"] = (x[:n], y[:n])
        t = cfg.training
        f = cfg.debug.inject_faults
        self.trainer = Trainer(task, task.space().restricted(cfg.search.space), group, data,
                               Budget(t.epochs, t.time_budget, cfg.cluster.candidate_timeout, t.eval_batch_size,
                                      t.lr_schedule),
                               device=device, seed=cfg.search.seed,
                               faults=Faults(f.exception, f.nonfinite, f.timeout), interrupted=interrupted)
        self.host = socket.gethostname()
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimizer imports torch._dynamo (~3 s)

    def evaluate(self, work: dict) -> dict:
        """The result message for one work message (complete on the group's rank 0)."""
        start = time.time()
        outcome = self.task.evaluate(Genome.from_json(work["genome"]), self.trainer, str(work["id"]))
        weights = None
        if self.group.rank == 0 and outcome.model is not None and \
                better(outcome.fitness, work.get("best"), self.task.higher_is_better):
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}, buf)
            weights = buf.getvalue()
        return {"id": work["id"], "status": outcome.status, "fitness": outcome.fitness, "metrics": outcome.metrics,
                "message": outcome.message, "epochs": outcome.epochs, "train_seconds": outcome.train_seconds,
                "curve": outcome.curve, "start_time": start, "end_time": time.time(), "host": self.host,
                "ranks": self.group.size, "weights": weights}
