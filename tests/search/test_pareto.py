"""Several objectives: Pareto fronts in NSGA-II's order, the network to use by default, the NSGA-II population of
the GA and its screening, and the ladder's promotions by front."""
import random

import numpy as np
import pytest
from test_ga import SMALL

from menndl_py.engine.ladder import Ladder
from menndl_py.genome import Genome
from menndl_py.search import AsyncGA, Proposal, Surrogate
from menndl_py.search.pareto import Objectives, fronts, pareto_front


def dominated(a, b) -> bool:
    """Whether scores `a` are dominated by `b` (higher is better), written out."""
    return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))


def test_the_front_is_what_no_other_point_dominates_and_comes_first():
    rng = random.Random(1)
    vectors = {i: (rng.random(), rng.random(), rng.random()) for i in range(200)}
    order = fronts(vectors)
    assert sorted(k for front in order for k in front) == list(range(200))
    expected = {i for i, v in vectors.items() if not any(dominated(v, w) for w in vectors.values())}
    assert set(order[0]) == expected == set(pareto_front(vectors))
    for better, worse in zip(order, order[1:]):  # every point of a later front is dominated by one of the one before
        assert all(any(dominated(vectors[w], vectors[b]) for b in better) for w in worse)


def test_within_a_front_the_extremes_come_first():
    vectors = {"a": (0.0, 1.0), "b": (0.4, 0.65), "c": (0.5, 0.5), "d": (1.0, 0.0)}
    assert fronts(vectors)[0][:2] == ["a", "d"]


def test_vectors_are_signed_so_that_higher_is_better_and_need_every_cost():
    mae = Objectives(["metric", "latency", "parameters"], higher_is_better=False)
    assert mae.vector(0.3, {"latency": 2e-6, "parameters": 100}) == (-0.3, -2e-6, -100.0)
    assert mae.vector(None, {"latency": 2e-6, "parameters": 100}) is None
    assert mae.vector(0.3, {"latency": None, "parameters": 100}) is None
    f1 = Objectives(["metric", "parameters"], higher_is_better=True)
    assert f1.vector(0.8, {"latency": None, "parameters": 5}) == (0.8, -5.0)


def test_the_default_network_is_the_most_accurate_within_the_latency_else_the_fastest():
    objectives = Objectives(["metric", "latency"], higher_is_better=True, max_latency=1e-3)
    results = {"accurate_slow": (0.9, 5e-3), "fast": (0.7, 1e-4), "good_within": (0.8, 9e-4)}
    key = {name: objectives.preference(f, {"latency": t}) for name, (f, t) in results.items()}
    assert max(key, key=key.get) == "good_within"
    none_within = {name: objectives.preference(f, {"latency": t + 1.0}) for name, (f, t) in results.items()}
    assert max(none_within, key=none_within.get) == "fast"
    unlimited = Objectives(["metric", "latency"], higher_is_better=True)
    key = {name: unlimited.preference(f, {"latency": t}) for name, (f, t) in results.items()}
    assert max(key, key=key.get) == "accurate_slow"


def test_the_ladder_promotes_by_front_and_its_leader_is_the_default_network():
    objectives = Objectives(["metric", "latency"], higher_is_better=False, max_latency=1.0)
    ladder = Ladder([1, 3], eta=2, higher_is_better=False, objectives=objectives)
    results = {0: (0.10, 5.0), 1: (0.20, 0.5), 2: (0.30, 0.1), 3: (0.25, 0.6), 4: (0.40, 4.0), 5: (0.35, 0.05)}
    for work_id, (mae, latency) in results.items():  # front: 0, 1, 2, 5 (3 is dominated by 1, 4 by every one)
        ladder.record(work_id, 0, mae, {"latency": latency})
    promoted = {work_id for work_id, _ in ladder.promotions()}
    assert len(promoted) == 3 and promoted < {0, 1, 2, 5}
    assert ladder.order(0)[4] == 5 and ladder.order(0)[3] == 4  # the second front, then the third
    assert ladder.leader() == (1, 0)  # the most accurate within 1 s; 0 is more accurate but slower
    ladder.record(2, 1, 0.28, {"latency": 0.1})
    assert ladder.leader() == (2, 1)  # the highest rung first


def test_the_nsga2_population_keeps_the_front_of_what_it_was_told():
    space = SMALL
    ga = AsyncGA(space, population=6, higher_is_better=False, seed=0,
                 objectives=Objectives(["metric", "latency"], higher_is_better=False))
    rng = np.random.default_rng(0)
    told = {}
    for _ in range(30):
        genome = ga.ask().genome
        told[genome.key] = (float(rng.random()), float(rng.random()))
        ga.tell(genome, told[genome.key][0], costs={"latency": told[genome.key][1]})
    scores = {k: (-mae, -latency) for k, (mae, latency) in told.items()}
    front = set(pareto_front(scores))
    kept = {m.genome.key for m in ga.population}
    assert len(kept) == 6
    assert front <= kept or kept <= front  # NSGA-II keeps the whole first front when it fits, else part of it
    assert min(m.place for m in ga.population) == 0


def test_screening_sends_the_offspring_whose_predicted_scores_dominate():
    surrogate, latency = Surrogate(False, min_results=4), Surrogate(False, min_results=4)
    ga = AsyncGA(SMALL, population=4, higher_is_better=False, seed=0, surrogate=surrogate, screen_factor=6,
                 explore_fraction=0.0, objectives=Objectives(["metric", "latency"], False),
                 latency_surrogate=latency)

    def truth(genome):  # wider is more accurate and slower; relu beats tanh at no cost in time
        width = sum(layer["width"] for layer in genome.layers)
        relu = all(layer["activation"] == "relu" for layer in genome.layers)
        return 1.0 / width + (0.0 if relu else 0.05), 1e-6 * width

    for _ in range(40):
        proposal = ga.ask()
        mae, t = truth(proposal.genome)
        ga.tell(proposal.genome, mae, costs={"latency": t})
        while ga.idle_work():
            pass
    assert surrogate.ready and latency.ready
    relu = Genome([{**layer, "activation": "relu"} for layer in SMALL.sample(random.Random(5)).layers],
                  dict(ga.population[0].genome.training))
    tanh = Genome([{**layer, "activation": "tanh"} for layer in relu.layers], relu.training)
    pool = [Proposal(g, params=SMALL.cost(g)[0], flops=SMALL.cost(g)[1]) for g in (tanh, relu)]
    x = np.stack([SMALL.features(p.genome, (p.params, p.flops)) for p in pool])
    assert ga._choose_pareto(x, pool)[0] == 1


@pytest.mark.parametrize("names", [["metric", "latency"], ["metric", "parameters"]])
def test_the_front_search_never_proposes_a_genome_twice(names):
    ga = AsyncGA(SMALL, population=4, higher_is_better=True, seed=2, objectives=Objectives(names, True),
                 surrogate=Surrogate(True, min_results=4), latency_surrogate=Surrogate(False, min_results=4))
    seen = set()
    for i in range(25):
        proposal = ga.ask()
        assert proposal.genome.key not in seen
        seen.add(proposal.genome.key)
        ga.tell(proposal.genome, (i * 7919 % 13) / 13, costs={"latency": (i % 5) * 1e-6 + 1e-7,
                                                              "parameters": proposal.params})
        ga.idle_work()


def test_a_large_rung_is_sorted_again_once_a_share_of_its_results_is_new():
    ladder = Ladder([1, 3], eta=3, higher_is_better=True, objectives=Objectives(["metric", "latency"], True))
    rng = random.Random(0)
    for work_id in range(64):
        ladder.record(work_id, 0, rng.random(), {"latency": rng.random()})
    assert len(ladder.order(0)) == 64
    ladder.record(100, 0, 2.0, {"latency": 0.0})  # dominates every other result
    assert 100 not in ladder.order(0) and not ladder.hopeless(100)  # waits for the next sort, its state kept
    for work_id in (101, 102):
        ladder.record(work_id, 0, 0.0, {"latency": 1.0})
    assert ladder.order(0)[100] == 0 and len(ladder.order(0)) == 67  # 3 new of 67: past 1/32
    assert next(ladder.promotions()) == (100, 1)
