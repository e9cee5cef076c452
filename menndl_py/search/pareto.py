"""Several objectives at once (`search.objectives`): each result as a vector of scores, Pareto fronts in NSGA-II's
order (DEAP's non-dominated sorting and crowding distance), and which network to use by default."""
from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

from deap import base, tools

COSTS = ("latency", "parameters")  # the objectives besides the metric, lower is better


class Objectives:
    """The task's metric and, optionally, the inference latency (seconds per sample) and the parameter count.
    A result's vector holds one score per objective, signed so that higher is better."""

    def __init__(self, names: Sequence[str], higher_is_better: bool, max_latency: Optional[float] = None):
        self.names, self.max_latency = tuple(names), max_latency
        self.sign = 1.0 if higher_is_better else -1.0

    @property
    def many(self) -> bool:
        return len(self.names) > 1

    def vector(self, fitness: Optional[float], costs: Mapping[str, Optional[float]]) -> Optional[tuple]:
        """The scores of a result (None if it failed or a cost was not measured)."""
        if fitness is None or any(costs.get(n) is None for n in self.names if n in COSTS):
            return None
        return tuple(self.sign * fitness if n == "metric" else -float(costs[n]) for n in self.names)

    def preference(self, fitness: float, costs: Mapping[str, Optional[float]]) -> tuple:
        """Sort key (higher first) of the network to use by default: the most accurate within `max_latency`, or,
        when none is that fast, the fastest."""
        latency = costs.get("latency")
        if self.max_latency is None or latency is None or latency <= self.max_latency:
            return 1, self.sign * fitness
        return 0, -latency


class _Point:
    """A vector as DEAP's sorting wants it: something with a fitness."""

    def __init__(self, key, fitness: base.Fitness):
        self.key, self.fitness = key, fitness


@functools.cache
def fitness_class(n: int) -> type:
    """A DEAP fitness of `n` scores, each higher is better."""
    return type("Scores", (base.Fitness,), {"weights": (1.0,) * n})


def fronts(vectors: Mapping) -> list[list]:
    """The keys of `vectors` (key → scores, higher better) in NSGA-II's order: non-dominated fronts, the first
    first; within a front, the widest crowding distance first (the extremes), then the key."""
    if not vectors:
        return []
    scores = fitness_class(len(next(iter(vectors.values()))))
    points = [_Point(k, scores(v)) for k, v in vectors.items()]
    ordered = []
    for front in tools.sortLogNondominated(points, len(points)):
        tools.emo.assignCrowdingDist(front)
        front.sort(key=lambda p: (-p.fitness.crowding_dist, p.key))
        ordered.append([p.key for p in front])
    return ordered


def pareto_front(vectors: Mapping) -> list:
    """The keys of the non-dominated vectors."""
    ordered = fronts(vectors)
    return ordered[0] if ordered else []
