"""Search: the Search protocol, the asynchronous GA with its SVM surrogate, and random search. No MPI, no torch."""
from menndl_py.config import SearchConfig
from menndl_py.genome import Genome, SearchSpace
from menndl_py.search.base import Proposal, Search, SpaceExhausted
from menndl_py.search.ga import AsyncGA
from menndl_py.search.pareto import Objectives
from menndl_py.search.random import RandomSearch
from menndl_py.search.seeds import seed_genomes
from menndl_py.search.surrogate import Surrogate

__all__ = ["AsyncGA", "Objectives", "Proposal", "RandomSearch", "Search", "SpaceExhausted", "Surrogate", "make_search"]


def make_search(s: SearchConfig, space: SearchSpace, higher_is_better: bool, baselines: dict[str, Genome],
                promotion: bool = False) -> Search:
    """The search the config names (`search.algorithm`), seeded with `search.seed_genomes`; `promotion`: the run
    has rungs (the GA's surrogate then orders promotions too)."""
    seeds = seed_genomes(s.seed_genomes, baselines, space, s.seed_sweep)
    if s.algorithm == "random":
        return RandomSearch(space, seed=s.seed, seeds=seeds)
    objectives = objectives_of(s, higher_is_better)
    surrogate, promoting, latency = (
        Surrogate(hib, min_results=s.surrogate_min_results, max_train=s.surrogate_max_train,
                  refit_every=s.surrogate_refit_every) if on else None
        for on, hib in ((s.surrogate, higher_is_better), (s.surrogate and promotion, higher_is_better),
                        (s.surrogate and "latency" in objectives.names, False)))
    return AsyncGA(space, population=s.population, higher_is_better=higher_is_better, seed=s.seed,
                   crossover_rate=s.crossover_rate, mutation_rate=s.mutation_rate,
                   tournament_size=s.tournament_size, surrogate=surrogate, screen_factor=s.screen_factor,
                   explore_fraction=s.explore_fraction, seeds=seeds, promotion_surrogate=promoting,
                   objectives=objectives, latency_surrogate=latency)


def objectives_of(s: SearchConfig, higher_is_better: bool) -> Objectives:
    """The objectives `search.objectives` names, for a task whose metric is better higher or lower."""
    return Objectives(s.objectives, higher_is_better, s.max_latency)
