"""Asynchronous steady-state genetic algorithm on DEAP's operators: ask() and tell(), no generation barrier."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from deap import base, tools

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Genome, SearchSpace
from menndl_py.search.base import Proposal, Search, SpaceExhausted
from menndl_py.search.pareto import Objectives, fitness_class, fronts
from menndl_py.search.surrogate import Surrogate, curve_features


class _Fitness(base.Fitness):
    weights = (1.0, 1.0)  # (rung, score): a higher rung first, then the score, signed so that higher is better


@dataclass
class _Member:
    genome: Genome
    fitness: base.Fitness = field(default_factory=_Fitness)
    place: int = 0  # with several objectives: its place in the population's NSGA-II order (0 best)

    @property
    def nsga(self) -> int:
        """What tournaments compare with several objectives (higher is better)."""
        return -self.place


class AsyncGA(Search):
    """Steady state (μ+1): each result joins the population, which keeps its best `population` members (elitism).

    With multi-fidelity promotion a member's fitness is that of its highest rung, and members compare rung first
    (a candidate trained longer beats one trained less). The surrogate learns from the lowest rung, where every
    candidate has a result. Offspring come from tournament selection, DEAP's messy one-point crossover and the
    space's mutation; a genome that was evaluated or is in flight is never proposed again. With a surrogate,
    each offspring is the best of `screen_factor` candidates, except for an `explore_fraction` share that is sent
    unscreened. `seeds` (known networks, say the task's hand-designed ones) are the first members of the random
    initial population.
    The GA owns its surrogate: refits are its deferred work (`idle_work`), and each refit's log row goes to `log`.
    With promotion, a second surrogate (`promotion_surrogate`) learns the second rung's fitness from the genome
    and its first rung's result and curve (`curve_features`), and orders candidates due for promotion.

    With several `objectives` the population is NSGA-II's: members hold their first-rung scores (every candidate
    has those), the population keeps what DEAP's `selNSGA2` keeps, and tournaments pick by Pareto front, then
    crowding distance. The surrogate then screens offspring on predicted scores: the metric, the latency (from
    `latency_surrogate`) and the exact parameter count; the offspring that falls in the best place of NSGA-II's
    order among the population is sent.
    """

    def __init__(self, space: SearchSpace, *, population: int, higher_is_better: bool, seed: int,
                 crossover_rate: float = 0.5, mutation_rate: float = 0.9, tournament_size: int = 3,
                 surrogate: Optional[Surrogate] = None, screen_factor: int = 8, explore_fraction: float = 0.25,
                 seeds: Sequence[Genome] = (), promotion_surrogate: Optional[Surrogate] = None,
                 objectives: Optional[Objectives] = None, latency_surrogate: Optional[Surrogate] = None):
        super().__init__(space, seed=seed, seeds=seeds)
        self.mu = population
        self.sign = 1.0 if higher_is_better else -1.0
        self.objectives = objectives or Objectives(["metric"], higher_is_better)
        self.latency_surrogate = latency_surrogate if "latency" in self.objectives.names else None
        self.crossover_rate, self.mutation_rate = crossover_rate, mutation_rate
        self.surrogate, self.screen_factor, self.explore_fraction = surrogate, screen_factor, explore_fraction
        self.toolbox = base.Toolbox()
        self.toolbox.register("select", tools.selTournament, tournsize=tournament_size,
                              fit_attr="nsga" if self.objectives.many else "fitness")
        self.toolbox.register("mate", space.crossover, rng=self.rng)
        self.toolbox.register("mutate", space.mutate, rng=self.rng)
        self.population: list[_Member] = []
        self.n_random = 0
        self._features: dict[str, np.ndarray] = {}  # of genomes in flight, computed when they were screened
        self.promotion_surrogate = promotion_surrogate
        self._first_rung: dict[str, np.ndarray] = {}  # genome and first-rung features, for the promotion surrogate

    # -- the protocol ---------------------------------------------------------------------------------
    def _ask(self) -> Proposal:
        if self.n_random < self.mu or len(self.population) < 2:
            self.n_random += 1
            return self._seed() or self._fresh(self._random)
        if self.surrogate is not None and self.surrogate.ready and \
                (self.latency_surrogate is None or self.latency_surrogate.ready):
            return self._screened()
        return self._fresh(self._offspring)

    def tell(self, genome: Genome, fitness: Optional[float], rung: int = 0, curve: Sequence[dict] = (),
             costs: Mapping[str, Optional[float]] = {}) -> None:
        """Fold in one result (fitness None = failed); a refit it makes due waits for `idle_work`."""
        super().tell(genome, fitness, rung, curve, costs)
        self._tell_promotion(genome, fitness, rung, curve)
        features = self._features.pop(genome.key, None)
        if rung == 0 and self.surrogate is not None:
            try:
                if features is None:
                    features = self.space.features(genome)
                self.surrogate.observe(features, fitness, refit=False)
                if self.latency_surrogate is not None and (fitness is None or costs.get("latency") is not None):
                    self.latency_surrogate.observe(features, None if fitness is None else costs["latency"],
                                                   refit=False)
            except CandidateRefused:
                pass
        if self.objectives.many:
            self._join_front(genome, self.objectives.vector(fitness, costs) if rung == 0 else None)
            return
        if rung > 0:
            self.population = [m for m in self.population if m.genome.key != genome.key]
        if fitness is not None:
            member = _Member(genome)
            member.fitness.values = (rung, self.sign * fitness)
            self.population.append(member)
            if len(self.population) > self.mu:
                self.population.remove(min(self.population, key=lambda m: m.fitness.values))

    def _join_front(self, genome: Genome, scores: Optional[tuple]) -> None:
        """With several objectives: a first-rung result joins the population, which NSGA-II then cuts back to
        `population` members and orders for the tournaments."""
        if scores is None:
            return
        self.population.append(_Member(genome, fitness_class(len(scores))(scores)))
        if len(self.population) > self.mu:
            self.population = tools.selNSGA2(self.population, self.mu)
        place = {key: i for i, key in enumerate(k for front in fronts(
            {m.genome.key: m.fitness.values for m in self.population}) for k in front)}
        for m in self.population:
            m.place = place[m.genome.key]

    def _tell_promotion(self, genome: Genome, fitness: Optional[float], rung: int, curve: Sequence[dict]) -> None:
        """The promotion surrogate learns from second-rung results, given the genome's first-rung features."""
        if self.promotion_surrogate is None:
            return
        if rung == 0 and fitness is not None:
            try:
                self._first_rung[genome.key] = np.concatenate([self.space.features(genome),
                                                               curve_features(self.sign * fitness, curve)])
            except CandidateRefused:
                pass
        elif rung == 1 and genome.key in self._first_rung:
            self.promotion_surrogate.observe(self._first_rung[genome.key], fitness, refit=False)

    def parents(self) -> list[str]:
        """The population's keys: tournaments draw parents from it."""
        return [m.genome.key for m in self.population]

    def choose_promotion(self, genomes: Sequence[Genome]) -> int:
        """The candidate the promotion surrogate expects to do best at the next rung (the first, until it is
        fitted or if a candidate's first-rung features are missing)."""
        s = self.promotion_surrogate
        if s is None or not s.ready or not all(g.key in self._first_rung for g in genomes):
            return 0
        return s.choose(np.stack([self._first_rung[g.key] for g in genomes]))[0]

    def replayed(self) -> None:
        for s in (self.surrogate, self.latency_surrogate, self.promotion_surrogate):
            if s is not None:
                s.restart()

    def idle_work(self, late: int = 1) -> bool:
        """Refit a surrogate when it is due (under a backlog, only once `late` times its refit interval); only the
        screening surrogate's refits are logged."""
        for s in (self.surrogate, self.latency_surrogate, self.promotion_surrogate):
            if s is None or not s.due or (s.ready and s.since_refit < late * s.refit_every):
                continue
            closed = s.refit()
            if closed is not None and s is self.surrogate:
                self.log(closed)
            return True
        return False

    def finish(self) -> None:
        if self.surrogate is not None and self.surrogate.log:
            closed = self.surrogate.close_log()
            if closed is not None:
                self.log(closed)

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
        elif self.objectives.many:
            chosen, predicted = self._choose_pareto(x, pool)
        else:
            chosen, predicted = self.surrogate.choose(x)
        proposal = pool[chosen]
        proposal.predicted, proposal.screened = predicted, not explore
        self._features[proposal.genome.key] = x[chosen]
        return proposal

    def _choose_pareto(self, x: np.ndarray, pool: list[Proposal]) -> tuple[int, float]:
        """The pool's offspring whose predicted scores take the best place in NSGA-II's order among the
        population's (likely failures last) and its predicted fitness."""
        fitness, fails = self.surrogate.predict(x)
        latency = self.latency_surrogate.predict(x)[0] if self.latency_surrogate is not None else [None] * len(x)
        scores = {("pool", i): self.objectives.vector(f, {"latency": t, "parameters": p.params})
                  for i, (f, t, p) in enumerate(zip(fitness, latency, pool))}
        scores.update({("member", m.genome.key): m.fitness.values for m in self.population})
        ranked = [key for front in fronts(scores) for key in front if key[0] == "pool"]
        chosen = next((i for _, i in ranked if not fails[i]), ranked[0][1])
        return chosen, float(fitness[chosen])

    # -- checkpointing ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {**super().state(), "n_random": self.n_random}

    def restore(self, state: dict) -> None:
        super().restore(state)
        self.n_random = state["n_random"]
