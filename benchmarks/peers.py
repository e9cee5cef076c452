"""The searches compared by search_efficiency.py, behind one interface: ``ask() -> Genome``, ``tell(genome, fitness)``.

Fitness is the task's metric (lower is better here), ``None`` for a failed candidate. Peers see the menndl search
space as flat parameters: ``depth``, ``l{i}_{gene}`` for each layer i < depth, and the training genes; every Choice
is categorical (its values as they are), depth an integer range.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Optional

from menndl_py.genome import Genome, SearchSpace


def _value(gene, v: Any) -> Any:
    """The Choice's own value equal to `v` (peers may hand back numpy scalars, which JSON cannot hold)."""
    return gene.values[list(gene.values).index(v)]


def genome_from_params(space: SearchSpace, params: dict) -> Genome:
    depth = int(params["depth"])
    layers = [{g: _value(c, params[f"l{i}_{g}"]) for g, c in space.layer_genes.items()} for i in range(depth)]
    return Genome(layers, {g: _value(c, params[g]) for g, c in space.training_genes.items()})


class GASearch:
    """menndl_py's AsyncGA, built from a SearchConfig as the master builds it; one genome in flight at a time."""

    def __init__(self, space: SearchSpace, seed: int, search, surrogate: bool):
        from menndl_py.search import AsyncGA, Surrogate

        s = search
        sur = Surrogate(False, min_results=s.surrogate_min_results, max_train=s.surrogate_max_train,
                        refit_every=s.surrogate_refit_every) if surrogate else None
        self.ga = AsyncGA(space, population=s.population, higher_is_better=False, seed=seed,
                          crossover_rate=s.crossover_rate, mutation_rate=s.mutation_rate,
                          tournament_size=s.tournament_size, surrogate=sur, screen_factor=s.screen_factor,
                          explore_fraction=s.explore_fraction)
        self.last: dict = {}

    def ask(self) -> Genome:
        p = self.ga.ask()
        self.last = {"origin": p.origin, "screened": p.screened, "predicted": p.predicted}
        return p.genome

    def tell(self, genome: Genome, fitness: Optional[float]) -> None:
        self.ga.tell(genome, fitness)
        while self.ga.idle_work():  # the surrogate's refits, as the serial master does them between results
            pass

    def summary(self) -> dict:
        sur = self.ga.surrogate
        if sur is None:
            return {}
        sur.close_log()
        return {"surrogate_log": [{k: r[k] for k in ("n_results", "spearman", "n_scored")} for r in sur.log]}


class RandomSearch:
    """Uniform samples of the space (depth, then each gene), never the same genome twice."""

    def __init__(self, space: SearchSpace, seed: int):
        self.space, self.rng, self.seen = space, random.Random(seed), set()
        self.last: dict = {}

    def ask(self) -> Genome:
        for _ in range(10_000):
            g = self.space.sample(self.rng)
            if g.key not in self.seen:
                self.seen.add(g.key)
                return g
        raise RuntimeError("random search found no new genome in 10,000 samples")

    def tell(self, genome: Genome, fitness: Optional[float]) -> None:
        pass

    def summary(self) -> dict:
        return {}


class OptunaTPE:
    """Optuna's TPESampler (its defaults, seeded), the space written define-by-run: depth, then each layer's genes."""

    def __init__(self, space: SearchSpace, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.space = optuna, space
        self.study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        self.trial = None
        self.last: dict = {}

    def ask(self) -> Genome:
        t = self.trial = self.study.ask()
        params = {"depth": t.suggest_int("depth", *self.space.depth)}
        for i in range(params["depth"]):
            for g, c in self.space.layer_genes.items():
                params[f"l{i}_{g}"] = t.suggest_categorical(f"l{i}_{g}", list(c.values))
        for g, c in self.space.training_genes.items():
            params[g] = t.suggest_categorical(g, list(c.values))
        return genome_from_params(self.space, params)

    def tell(self, genome: Genome, fitness: Optional[float]) -> None:
        if fitness is None:
            self.study.tell(self.trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(self.trial, fitness)

    def summary(self) -> dict:
        return {}


class DeepHyperCBO:
    """DeepHyper's CBO (its default surrogate, extremely randomised trees, and acquisition), through ask/tell.

    Each layer's genes exist up to the space's maximum depth and are active when depth > i (ConfigSpace
    conditions). Three settings differ from CBO's defaults, all for cost at this budget: ``n_initial_points``
    (default 2 x parameters + 1, more than the whole budget here), ``acq_optimizer="sampling"`` (the default
    "mixedga" took 40-100 s per tell here, 20-50 trainings' worth) with ``n_points`` samples (default 10,000, drawn
    through ConfigSpace at about 1.5 ms each).
    """

    def __init__(self, space: SearchSpace, seed: int, log_dir: str, n_initial_points: int, n_points: int):
        import ConfigSpace as cs
        from deephyper.hpo import CBO, HpProblem

        logging.getLogger("deephyper").setLevel(logging.WARNING)
        self.space = space
        problem = HpProblem()
        depth = problem.add_hyperparameter(tuple(space.depth), "depth")
        for i in range(space.depth[1]):
            for g, c in space.layer_genes.items():
                hp = problem.add_hyperparameter(list(c.values), f"l{i}_{g}")
                if i >= space.depth[0]:
                    problem.add_condition(cs.GreaterThanCondition(hp, depth, i))
        for g, c in space.training_genes.items():
            problem.add_hyperparameter(list(c.values), g)
        self.search = CBO(problem, random_state=seed, log_dir=log_dir, checkpoint_history_to_csv=False,
                          n_initial_points=n_initial_points, acq_optimizer="sampling",
                          acq_optimizer_kwargs={"n_points": n_points})
        self.config: dict = {}
        self.last: dict = {}

    def ask(self) -> Genome:
        self.config = self.search.ask(1)[0]
        return genome_from_params(self.space, self.config)

    def tell(self, genome: Genome, fitness: Optional[float]) -> None:
        self.search.tell([(self.config, "F" if fitness is None else -fitness)])  # CBO maximises

    def summary(self) -> dict:
        return {}
