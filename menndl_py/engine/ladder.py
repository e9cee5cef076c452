"""Asynchronous successive halving (ASHA; Li et al., MLSys 2020) over the rungs of `training.rungs`.

Every candidate is first trained to the lowest rung's budget. Whenever a group is free, a candidate in the best
1/eta of its rung that has not gone on yet is trained on, from where it stopped, to the next rung; otherwise the
search proposes a new genome. No rung waits to fill: a candidate is promoted as soon as it ranks high enough
among the results its rung has so far. With several objectives a rung's results rank by Pareto front, then crowding
distance (NSGA-II's order), and the leader is the network to use by default (`Objectives.preference`); that order
is sorted again once a 1/RESORT share of the rung's results is new, so its cost per result stays bounded (a result
waits for the next sort to be promoted). The ladder only decides; the master sends, stores and keeps the states.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Iterator, Mapping, Optional

from menndl_py.search.pareto import Objectives, fronts

RESORT = 32  # with several objectives, a rung is sorted again once this share (1/RESORT) of its results is new


class Ladder:
    """The results of every rung, ranked, and which candidates went on from each."""

    def __init__(self, budgets: list[float], eta: int, higher_is_better: bool, objectives: Optional[Objectives] = None):
        self.budgets, self.eta = list(budgets), eta
        self.objectives = objectives or Objectives(["metric"], higher_is_better)
        self.ranked: list[list[tuple[float, int]]] = [[] for _ in budgets]  # (−score, id), best first (one objective)
        self.score: list[dict] = [{} for _ in budgets]  # id → score, or vector of scores (higher is better)
        self.preference: list[dict[int, tuple]] = [{} for _ in budgets]  # id → Objectives.preference
        self._order: list[Optional[dict[int, int]]] = [None for _ in budgets]  # id → place, best first (cached)
        self._new = [0 for _ in budgets]  # results recorded since each rung's order was made
        self.promoted: list[set[int]] = [set() for _ in budgets]  # ids sent on from each rung
        self.reached: dict[int, int] = {}  # id → the highest rung with a stored result

    @property
    def top(self) -> int:
        return len(self.budgets) - 1

    def record(self, work_id: int, rung: int, fitness: Optional[float], costs: Mapping = {}) -> None:
        """A stored result (fitness None: it failed, and goes no further; `costs`: its latency and parameters)."""
        self.reached[work_id] = max(rung, self.reached.get(work_id, rung))
        if rung > 0:
            self.promoted[rung - 1].add(work_id)
        vector = self.objectives.vector(fitness, costs)
        if vector is None or work_id in self.score[rung]:
            return
        self.preference[rung][work_id] = self.objectives.preference(fitness, costs)
        self._new[rung] += 1
        if self.objectives.many:
            self.score[rung][work_id] = vector
        else:
            self.score[rung][work_id] = vector[0]
            bisect.insort(self.ranked[rung], (-vector[0], work_id))

    def order(self, rung: int) -> dict[int, int]:
        """id → place (0 best) of the results of `rung` with a fitness (with several objectives, those recorded up
        to its last sort)."""
        new = self._new[rung]
        if self._order[rung] is None or (new and (not self.objectives.many or RESORT * new >= len(self.score[rung]))):
            ids = [i for front in fronts(self.score[rung]) for i in front] if self.objectives.many \
                else [i for _, i in self.ranked[rung]]
            self._order[rung], self._new[rung] = {work_id: place for place, work_id in enumerate(ids)}, 0
        return self._order[rung]

    def sent(self, work_id: int, rung: int) -> None:
        """Training to `rung` was sent (or is in flight from before a restart)."""
        if rung > 0:
            self.promoted[rung - 1].add(work_id)

    def promotions(self) -> Iterator[tuple[int, int]]:
        """(id, next rung) of each candidate due for promotion, the highest rungs first, best first within one."""
        for rung in range(self.top - 1, -1, -1):
            order = self.order(rung)
            for work_id in itertools.islice(order, len(order) // self.eta):
                if work_id not in self.promoted[rung]:
                    yield work_id, rung + 1

    def leader(self) -> Optional[tuple[int, int]]:
        """(id, rung) of the network to use by default among the results of the highest rung that has any."""
        for rung in range(self.top, -1, -1):
            if self.preference[rung]:
                return max(self.preference[rung].items(), key=lambda item: (item[1], -item[0]))[0], rung
        return None

    def finishing(self) -> Optional[tuple[int, int]]:
        """(id, next rung) for taking the leader one rung up when it is below the top and not already on its way:
        how a search whose budget of new genomes is spent ends with its winner at the top rung."""
        leader = self.leader()
        if leader is None or leader[1] == self.top or leader[0] in self.promoted[leader[1]]:
            return None
        return leader[0], leader[1] + 1

    def runner_up(self) -> Optional[tuple[int, int]]:
        """(id, next rung) of the best candidate not yet promoted from the highest rung that has one: work for a
        group that would idle while the leader finishes its climb."""
        for rung in range(self.top - 1, -1, -1):
            for work_id in self.order(rung):
                if work_id not in self.promoted[rung]:
                    return work_id, rung + 1
        return None

    def hopeless(self, work_id: int) -> bool:
        """Whether a stored candidate will (almost surely) never be promoted again, so its training state can go:
        it reached the top, failed, or ranks below twice the share its rung promotes. (A hopeless candidate that is
        promoted after all trains from scratch.)"""
        rung = self.reached.get(work_id)
        if rung is None or work_id in self.promoted[rung]:
            return False
        if rung == self.top or work_id not in self.score[rung]:
            return True
        order = self.order(rung)
        return work_id in order and order[work_id] >= 2 * (len(order) // self.eta) + 2
