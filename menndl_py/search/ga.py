"""Asynchronous steady-state genetic algorithm on DEAP's operators: ask() and tell(), no generation barrier."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from deap import base, tools

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Genome, SearchSpace
from menndl_py.rng import driving_global_random
from menndl_py.search.surrogate import Surrogate


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


class _Fitness(base.Fitness):
    weights = (1.0,)  # internal scores are signed so that higher is better


@dataclass
class _Member:
    genome: Genome
    fitness: _Fitness = field(default_factory=_Fitness)


class AsyncGA:
    """Steady state (μ+1): each result joins the population, which keeps its best `population` members (elitism).

    Offspring come from tournament selection, DEAP's messy one-point crossover and the space's mutation; a genome
    that was evaluated or is in flight is never proposed again. With a surrogate, each offspring is the best of
    `screen_factor` candidates, except for an `explore_fraction` share that is sent unscreened. `seeds` (known
    networks, say the task's hand-designed ones) are the first members of the random initial population.

    The i-th ask draws from a generator seeded with (seed, i): the state to checkpoint is two counters, and a
    resumed run continues the same sequence.
    """

    def __init__(self, space: SearchSpace, *, population: int, higher_is_better: bool, seed: int,
                 crossover_rate: float = 0.5, mutation_rate: float = 0.9, tournament_size: int = 3,
                 surrogate: Optional[Surrogate] = None, screen_factor: int = 8, explore_fraction: float = 0.25,
                 seeds: Sequence[Genome] = ()):
        self.space, self.mu, self.seed, self.seeds = space, population, seed, list(seeds)
        self.sign = 1.0 if higher_is_better else -1.0
        self.rng = random.Random(seed)
        self.asks = 0
        self.crossover_rate, self.mutation_rate = crossover_rate, mutation_rate
        self.surrogate, self.screen_factor, self.explore_fraction = surrogate, screen_factor, explore_fraction
        self.toolbox = base.Toolbox()
        self.toolbox.register("select", tools.selTournament, tournsize=tournament_size)
        self.toolbox.register("mate", space.crossover, rng=self.rng)
        self.toolbox.register("mutate", space.mutate, rng=self.rng)
        self.population: list[_Member] = []
        self.seen: set[str] = set()  # evaluated or in flight
        self.n_random = 0
        self.n_refused = 0
        self._features: dict[str, np.ndarray] = {}  # of genomes in flight, computed when they were screened

    # -- the two calls ---------------------------------------------------------------------------------
    def ask(self) -> Proposal:
        self.rng.seed(f"{self.seed}:{self.asks}")
        self.asks += 1
        with driving_global_random(self.rng):  # for DEAP's selection, which draws from the global generator
            if self.n_random < self.mu or len(self.population) < 2:
                self.n_random += 1
                proposal = self._seed() or self._fresh(lambda: (self.space.sample(self.rng), (), "random"))
            elif self.surrogate is not None and self.surrogate.ready:
                proposal = self._screened()
            else:
                proposal = self._fresh(self._offspring)
        self.seen.add(proposal.genome.key)
        return proposal

    def tell(self, genome: Genome, fitness: Optional[float], refit: bool = True) -> Optional[dict]:
        """Fold in one result (fitness None = failed). Returns a closed surrogate log row, if any.
        `refit=False` leaves a due refit to `refit()` (the master's deferred work), or to the surrogate's
        `restart()` after a stored history is replayed."""
        self.seen.add(genome.key)
        closed = None
        if self.surrogate is not None:
            try:
                features = self._features.pop(genome.key, None)
                if features is None:
                    features = self.space.features(genome)
                closed = self.surrogate.observe(features, fitness, refit)
            except CandidateRefused:
                pass
        if fitness is not None:
            member = _Member(genome)
            member.fitness.values = (self.sign * fitness,)
            self.population.append(member)
            if len(self.population) > self.mu:
                self.population.remove(min(self.population, key=lambda m: m.fitness.values[0]))
        return closed

    def refit(self) -> Optional[dict]:
        """Refit the surrogate if it is due. Returns a closed surrogate log row, if any."""
        if self.surrogate is not None and self.surrogate.due:
            return self.surrogate.refit()
        return None

    def mark_in_flight(self, genome: Genome) -> None:
        """A genome sent out before a restart: never propose it again."""
        self.seen.add(genome.key)

    @property
    def best(self) -> Optional[tuple[Genome, float]]:
        if not self.population:
            return None
        top = max(self.population, key=lambda m: m.fitness.values[0])
        return top.genome, self.sign * top.fitness.values[0]

    # -- making proposals ------------------------------------------------------------------------------
    def _offspring(self) -> tuple[Genome, tuple[str, ...], str]:
        a, b = self.toolbox.select(self.population, 2)  # within ask()'s driving_global_random
        child, parents = a.genome, (a.genome.key,)
        if self.rng.random() < self.crossover_rate and a.genome.key != b.genome.key:
            child = self.toolbox.mate(a.genome, b.genome)[0]
            parents = (a.genome.key, b.genome.key)
        if self.rng.random() < self.mutation_rate or child.key in self.seen:
            child = self.toolbox.mutate(child)
        return child, parents, "offspring"

    def _seed(self) -> Optional[Proposal]:
        """The next seed genome not yet evaluated or in flight, if any."""
        while self.seeds:
            genome = self.seeds.pop(0)
            if genome.key not in self.seen:
                params, flops = self.space.cost(genome)
                return Proposal(genome, (), "seed", params=params, flops=flops)
        return None

    def _fresh(self, make, tries: int = 64) -> Proposal:
        """A proposal that is new, and that the space does not refuse; random if breeding keeps repeating."""
        for attempt in range(tries):
            genome, parents, origin = make() if attempt < tries // 2 else (self.space.sample(self.rng), (), "random")
            if genome.key in self.seen:
                continue
            try:
                params, flops = self.space.cost(genome)
            except CandidateRefused:
                self.n_refused += 1
                continue
            return Proposal(genome, parents, origin, params=params, flops=flops)
        raise SpaceExhausted(f"no new genome found in {tries} tries: the search space is exhausted or too small")

    def _screened(self) -> Proposal:
        """The surrogate's pick of `screen_factor` offspring, or (an `explore_fraction` share) one unscreened."""
        explore = self.rng.random() < self.explore_fraction
        pool: list[Proposal] = []
        try:
            while len(pool) < (1 if explore else self.screen_factor):
                try:
                    proposal = self._fresh(self._offspring)
                except SpaceExhausted:
                    if not pool:
                        raise
                    break  # fewer new genomes are left than a full pool: screen those there are
                pool.append(proposal)
                self.seen.add(proposal.genome.key)  # so that the pool holds distinct genomes
        finally:
            for p in pool:
                self.seen.discard(p.genome.key)  # ask() marks the chosen one
        x = np.stack([self.space.features(p.genome, (p.params, p.flops)) for p in pool])
        if explore:
            chosen, predicted = 0, float(self.surrogate.predict(x)[0][0])
        else:
            chosen, predicted = self.surrogate.choose(x)
        proposal = pool[chosen]
        proposal.predicted, proposal.screened = predicted, not explore
        self._features[proposal.genome.key] = x[chosen]
        return proposal

    # -- checkpointing ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"seed": self.seed, "asks": self.asks, "n_random": self.n_random}

    def restore(self, state: dict) -> None:
        """Continue from `state()`. A checkpoint of an older version (a generator state instead of counters)
        continues from a fresh stream past every genome seen."""
        self.seed, self.asks = state.get("seed", self.seed), state.get("asks", len(self.seen))
        self.n_random = state["n_random"]
