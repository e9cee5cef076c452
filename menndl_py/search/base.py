"""The Search protocol that the master drives: ask for a genome, tell a result, checkpoint, deferred work.

A search never imports MPI or torch, and never sees the run directory: what it has to record (the surrogate's
refit log) it hands to `log`, which the master points at the run directory.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Genome, SearchSpace
from menndl_py.rng import driving_global_random


class SpaceExhausted(RuntimeError):
    """No genome that was neither evaluated nor in flight could be found."""


@dataclass
class Proposal:
    """A genome to evaluate, with where it came from and what the surrogate expected of it."""

    genome: Genome
    parents: tuple[str, ...] = ()
    origin: str = "random"
    predicted: Optional[float] = None
    screened: bool = False
    params: int = 0
    flops: int = 0


class Search(ABC):
    """Proposes genomes one at a time and learns from each result as it arrives; never proposes a genome twice.

    Seed genomes (known networks) are proposed first. The i-th ask draws from a generator seeded with (seed, i),
    so the state to checkpoint is a few counters and a resumed run continues the same sequence.
    """

    def __init__(self, space: SearchSpace, *, seed: int, seeds: Sequence[Genome] = ()):
        self.space, self.seed, self.seeds = space, seed, list(seeds)
        self.rng = random.Random(seed)
        self.asks = 0
        self.seen: set[str] = set()  # evaluated or in flight
        self.n_refused = 0
        self.log: Callable[[dict], None] = lambda row: None  # receives the search's own records (e.g. refits)

    def ask(self) -> Proposal:
        """The next genome to evaluate; SpaceExhausted when no new one can be found."""
        self.rng.seed(f"{self.seed}:{self.asks}")
        self.asks += 1
        with driving_global_random(self.rng):  # for DEAP's operators, which draw from the global generator
            proposal = self._ask()
        self.seen.add(proposal.genome.key)
        return proposal

    @abstractmethod
    def _ask(self) -> Proposal:
        """A new proposal (or `_seed()`), drawing from `self.rng`, seeded for this ask."""

    def tell(self, genome: Genome, fitness: Optional[float], rung: int = 0, curve: Sequence[dict] = (),
             costs: Mapping[str, Optional[float]] = {}) -> None:
        """Fold in one result (fitness None: it failed) at `rung` (with multi-fidelity promotion: the same genome
        is told again at each rung it reaches; its highest rung's fitness counts), with its training `curve` and
        its `costs` (the other objectives: "latency" in seconds per sample, "parameters").
        Costly updates wait for `idle_work`."""
        self.seen.add(genome.key)

    def parents(self) -> list[str]:
        """The keys of the genomes that offspring may yet be bred from (none: this search breeds none)."""
        return []

    def choose_promotion(self, genomes: Sequence[Genome]) -> int:
        """Which of these candidates, due for promotion from one rung, to train on first (an index); by default
        the first, the best at that rung."""
        return 0

    def mark_in_flight(self, genome: Genome) -> None:
        """A genome sent out before a restart: never propose it again."""
        self.seen.add(genome.key)

    def replayed(self) -> None:
        """Called once a stored history has been told again on resume (before any ask)."""

    def idle_work(self, late: int = 1) -> bool:
        """Do one piece of deferred work if it is due (`late` times over, under a backlog); whether any was done."""
        return False

    def finish(self) -> None:
        """The search is over: close what is open (hand the last records to `log`)."""

    def state(self) -> dict:
        return {"seed": self.seed, "asks": self.asks}

    def restore(self, state: dict) -> None:
        """Continue from `state()`. A checkpoint of an older version (a generator state instead of counters)
        continues from a fresh stream past every genome seen."""
        self.seed, self.asks = state.get("seed", self.seed), state.get("asks", len(self.seen))

    # -- for subclasses -------------------------------------------------------------------------------
    def _seed(self) -> Optional[Proposal]:
        """The next seed genome not yet evaluated or in flight, if any."""
        while self.seeds:
            genome = self.seeds.pop(0)
            if genome.key not in self.seen:
                params, flops = self.space.cost(genome)
                return Proposal(genome, (), "seed", params=params, flops=flops)
        return None

    def _fresh(self, make, tries: int = 64) -> Proposal:
        """A proposal from `make()` that is new and that the space does not refuse; random if making keeps
        repeating."""
        for attempt in range(tries):
            genome, parents, origin = make() if attempt < tries // 2 else self._random()
            if genome.key in self.seen:
                continue
            try:
                params, flops = self.space.cost(genome)
            except CandidateRefused:
                self.n_refused += 1
                continue
            return Proposal(genome, parents, origin, params=params, flops=flops)
        raise SpaceExhausted(f"no new genome found in {tries} tries: the search space is exhausted or too small")

    def _random(self) -> tuple[Genome, tuple, str]:
        return self.space.sample(self.rng), (), "random"
