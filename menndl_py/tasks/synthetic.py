"""A task with no training: fitness is a smooth function of the genome, optionally after a simulated delay.

For benchmarks of the search machinery (master overhead, utilization) and tests of the cluster, where the cost of
training would hide what is measured.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass

import numpy as np

from menndl_py.config import setting
from menndl_py.engine.transport.share import Solo
from menndl_py.genome import Genome
from menndl_py.records import Outcome, Status
from menndl_py.tasks.elemnet.task import ElemNetTask


@dataclass(frozen=True)
class SyntheticOptions:
    seconds: float = setting(0.0, min=0.0)  # mean evaluation time (with rungs: per unit of budget)
    sigma: float = setting(0.0, min=0.0)  # log-normal spread of the evaluation time
    failure_rate: float = setting(0.0, min=0.0, max=1.0)


class SyntheticTask(ElemNetTask):
    """ElemNet's search space with an analytic landscape in place of training."""

    name = "synthetic"
    summary = "no training: analytic fitness over ElemNet's space, with simulated evaluation times (benchmarks)"
    unit = "a.u."
    Options = SyntheticOptions

    def make_data(self, share: Solo = Solo()) -> str:
        return "synthetic: no data needed"

    def check_data(self) -> None:
        pass

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((0, 86), np.float32), np.zeros(0, np.float32)

    def evaluate(self, genome: Genome, trainer, fault_key: str | None = None, stage=None) -> Outcome:
        """With a stage (promotion): the time is `seconds` per unit of budget trained on, and the fitness falls
        as the budget grows."""
        rng = random.Random(int(hashlib.sha1(genome.key.encode()).hexdigest()[:8], 16))
        before = stage.state["budget"] if stage is not None and stage.state is not None else 0.0
        if self.options.seconds > 0:
            mu = math.log(self.options.seconds) - self.options.sigma ** 2 / 2
            time.sleep(rng.lognormvariate(mu, self.options.sigma) * (1.0 if stage is None else stage.budget - before))
        if rng.random() < self.options.failure_rate:
            return Outcome(Status.ERROR, message="synthetic failure")
        x = trainer.space.features(genome)
        fitness = float(np.sum((x[3:] - 0.35) ** 2) + 0.02 * (x[0] - 6) ** 2 + 0.05 * rng.random())
        state = None
        if stage is not None:
            fitness += 0.5 / (1.0 + stage.budget)
            state = {"model": {}, "optimizer": {}, "epochs": 0.0, "seconds": 0.0, "budget": stage.budget} \
                if stage.keep else None
        return Outcome(Status.OK, fitness, {"val_mae": fitness, "val_rmse": fitness}, epochs=1, state=state)
