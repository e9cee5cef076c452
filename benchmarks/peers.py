"""The searches search_efficiency.py compares, each with its own early stopping, behind one interface: ``run(train)``.

``train(genome, rung)`` trains a genome on from its state at the rung below to rung ``rung``'s budget (epochs,
counted from scratch) and returns a ``Trained`` (fitness: validation MAE, lower is better, None if it failed; the
learning curve); it raises ``Spent`` once the run's compute is used up, which ends ``run``. Peers see the menndl
search space as flat parameters: ``depth``, ``l{i}_{gene}`` for each layer i < depth, and the training genes;
every Choice is categorical (its values as they are), depth an integer range.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from menndl_py.engine.ladder import Ladder
from menndl_py.engine.master import CHOICES
from menndl_py.genome import Genome, SearchSpace


class Spent(Exception):
    """The run's compute budget is used up."""


@dataclass
class Trained:
    fitness: Optional[float]
    curve: list


Train = Callable[[Genome, int], Trained]


def _value(gene, v: Any) -> Any:
    """The Choice's own value equal to `v` (peers may hand back numpy scalars, which JSON cannot hold)."""
    return gene.values[list(gene.values).index(v)]


def genome_from_params(space: SearchSpace, params: dict) -> Genome:
    depth = int(params["depth"])
    layers = [{g: _value(c, params[f"l{i}_{g}"]) for g, c in space.layer_genes.items()} for i in range(depth)]
    return Genome(layers, {g: _value(c, params[g]) for g, c in space.training_genes.items()})


class MenndlSearch:
    """A menndl Search (the AsyncGA, or random search) as the master drives it with one worker group: with
    `promotion`, a free group takes the Ladder's promotion (the search choosing among the first CHOICES offered to
    the same rung), else a new genome at the lowest rung; without, every genome trains to the top budget and the
    search is told that result alone."""

    def __init__(self, search, budgets: list[float], eta: int, promotion: bool):
        self.search, self.top, self.promotion = search, len(budgets) - 1, promotion
        self.ladder = Ladder(budgets, eta, higher_is_better=False)
        self.genomes: list[Genome] = []
        self.log: list[dict] = []  # per new genome: how it was proposed

    def run(self, train: Train) -> None:
        try:
            while True:
                if self.promotion:
                    self._step(train)
                else:
                    genome = self._ask()
                    for rung in range(self.top + 1):
                        done = train(genome, rung)
                        if done.fitness is None:
                            break
                    self._tell(genome, done.fitness, 0, done.curve)
        except Spent:
            pass

    def _step(self, train: Train) -> None:
        offered = self.ladder.promotions()
        first = next(offered, None)
        if first is None:
            genome_id, rung = len(self.genomes), 0
            self.genomes.append(self._ask())
        else:
            options = [first, *itertools.islice(itertools.takewhile(lambda p: p[1] == first[1], offered),
                                                CHOICES - 1)]
            pick = self.search.choose_promotion([self.genomes[i] for i, _ in options]) if len(options) > 1 else 0
            genome_id, rung = options[pick]
            self.ladder.sent(genome_id, rung)
        done = train(self.genomes[genome_id], rung)
        self.ladder.record(genome_id, rung, done.fitness)
        self._tell(self.genomes[genome_id], done.fitness, rung, done.curve)

    def _ask(self) -> Genome:
        p = self.search.ask()
        self.log.append({"origin": p.origin, "screened": p.screened, "predicted": p.predicted, "key": p.genome.key})
        return p.genome

    def _tell(self, genome: Genome, fitness: Optional[float], rung: int, curve: list) -> None:
        self.search.tell(genome, fitness, rung, curve)
        while self.search.idle_work():  # the surrogates' refits, as the master does them between results
            pass

    def summary(self) -> dict:
        out = {"proposals": self.log}
        for name in ("surrogate", "promotion_surrogate"):
            s = getattr(self.search, name, None)
            if s is not None:
                s.close_log()
                out[name] = [{k: r[k] for k in ("n_results", "spearman", "n_scored")} for r in s.log]
        return out


class OptunaHyperband:
    """Optuna's TPESampler (its defaults, seeded) with its HyperbandPruner over the same budgets (min, max, eta),
    the space written define-by-run: depth, then each layer's genes. A trial reports at each rung's budget."""

    def __init__(self, space: SearchSpace, seed: int, budgets: list[float], eta: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.space, self.budgets = optuna, space, budgets
        pruner = optuna.pruners.HyperbandPruner(min_resource=int(budgets[0]), max_resource=int(budgets[-1]),
                                                reduction_factor=eta)
        self.study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                         pruner=pruner)

    def _ask(self):
        t = self.study.ask()
        params = {"depth": t.suggest_int("depth", *self.space.depth)}
        for i in range(params["depth"]):
            for g, c in self.space.layer_genes.items():
                params[f"l{i}_{g}"] = t.suggest_categorical(f"l{i}_{g}", list(c.values))
        for g, c in self.space.training_genes.items():
            params[g] = t.suggest_categorical(g, list(c.values))
        return t, genome_from_params(self.space, params)

    def run(self, train: Train) -> None:
        states = self.optuna.trial.TrialState
        try:
            while True:
                trial, genome = self._ask()
                for rung, budget in enumerate(self.budgets):
                    fitness = train(genome, rung).fitness
                    if fitness is None:
                        self.study.tell(trial, state=states.FAIL)
                        break
                    trial.report(fitness, step=int(budget))
                    if rung < len(self.budgets) - 1 and trial.should_prune():
                        self.study.tell(trial, state=states.PRUNED)
                        break
                else:
                    self.study.tell(trial, fitness)
        except Spent:
            pass

    def summary(self) -> dict:
        states = [t.state.name for t in self.study.trials]
        return {"trials": {s: states.count(s) for s in set(states)}}


class DeepHyperSH:
    """DeepHyper's CBO (its default surrogate and acquisition) through ask/tell, each job watched by its
    SuccessiveHalvingStopper over the same budgets, as its evaluators wire a stopper (a RunningJob on one shared
    storage). A stopped job is told its last objective, as DeepHyper does. Each layer's genes exist up to the
    space's maximum depth and are active when depth > i (ConfigSpace conditions). Two settings differ from CBO's
    defaults, for cost: ``n_initial_points`` (default 2 x parameters + 1, more than the whole budget here) and
    ``acq_optimizer="sampling"`` with ``n_points`` samples (the default "mixedga" took 40-100 s per tell here)."""

    def __init__(self, space: SearchSpace, seed: int, log_dir: str, budgets: list[float], eta: int,
                 n_initial_points: int, n_points: int):
        import ConfigSpace as cs
        from deephyper.evaluator.storage import MemoryStorage
        from deephyper.hpo import CBO, HpProblem

        logging.getLogger("deephyper").setLevel(logging.WARNING)
        self.space, self.budgets, self.eta = space, budgets, eta
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
        self.storage = MemoryStorage()
        self.search_id = self.storage.create_new_search()
        self.stopped = 0

    def run(self, train: Train) -> None:
        from deephyper.evaluator import RunningJob
        from deephyper.stopper import SuccessiveHalvingStopper

        try:
            while True:
                config = self.search.ask(1)[0]
                genome = genome_from_params(self.space, config)
                stopper = SuccessiveHalvingStopper(max_steps=int(self.budgets[-1]), min_steps=int(self.budgets[0]),
                                                   reduction_factor=self.eta)
                job = RunningJob(self.storage.create_new_job(self.search_id), config, self.storage, stopper)
                stopper.job = job
                objective = "F"
                for rung, budget in enumerate(self.budgets):
                    fitness = train(genome, rung).fitness
                    objective = "F" if fitness is None else -fitness  # DeepHyper maximises
                    job.record(int(budget), objective)
                    if job.stopped():
                        self.stopped += rung < len(self.budgets) - 1
                        break
                self.search.tell([(config, objective)])
        except Spent:
            pass

    def summary(self) -> dict:
        return {"stopped_early": self.stopped}
