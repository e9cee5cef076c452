"""menndl_py.search.ga: the asynchronous steady-state GA (ask/tell), with and without its surrogate."""
import json
import random
import statistics
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr

from menndl_py.errors import CandidateRefused
from menndl_py.search import AsyncGA, Surrogate
from menndl_py.tasks.elemnet.task import ElemNetTask
from menndl_py.tasks.synthetic import SyntheticTask

SPACE = ElemNetTask().space()
# A space of 516 genomes: 300 evaluations use most of it, so duplicates are hard to avoid.
SMALL = SPACE.restricted({"depth": [1, 3], "width": [16, 32, 64], "activation": ["relu", "tanh"], "dropout": [0.0],
                          "batch_norm": [False], "learning_rate": [1e-3, 1e-2], "batch_size": [32],
                          "optimizer": ["adam"], "weight_decay": [0.0], "inputs": ["fractions"]})
# A space of 9 genomes (one layer of any width, everything else fixed).
TINY = SPACE.restricted({"depth": [1, 1], "activation": ["relu"], "dropout": [0.0], "batch_norm": [False],
                         "learning_rate": [1e-3], "batch_size": [32], "optimizer": ["adam"], "weight_decay": [0.0],
                         "inputs": ["fractions"]})


def landscape(space, genome) -> float:
    """A smooth, deterministic function of the genome's features (lower is better), minimum inside the space."""
    x = space.features(genome)
    return float(np.sum((x[3:] - 0.35) ** 2) + 0.02 * (x[0] - 6) ** 2)


def sample(space, rng):
    """A random genome within the parameter limit, as the searches sample."""
    while True:
        genome = space.sample(rng)
        try:
            space.cost(genome)
            return genome
        except CandidateRefused:
            pass


def fails(genome) -> bool:
    return int(genome.key, 16) % 4 == 0


def make_ga(space=SPACE, *, surrogate=False, seed=0, population=8, higher_is_better=False, **kwargs):
    sur = Surrogate(higher_is_better, min_results=8, max_train=64, refit_every=4) if surrogate else None
    return AsyncGA(space, population=population, higher_is_better=higher_is_better, seed=seed, surrogate=sur,
                   screen_factor=kwargs.pop("screen_factor", 6), **kwargs)


def drive(ga, n, *, in_flight=3, fitness=None, space=None):
    """n results, `in_flight` genomes out at a time, told oldest first. Returns the proposals in order."""
    space = space or ga.space
    fitness = fitness or (lambda g: None if fails(g) else landscape(space, g))
    out, pending = [], deque()
    while len(out) < n:
        while len(pending) < in_flight and len(out) + len(pending) < n:
            pending.append(ga.ask())
        p = pending.popleft()
        tell(ga, p.genome, fitness(p.genome))
        out.append(p)
    return out


def tell(ga, genome, fitness):
    """Tell one result and do the deferred work it makes due (as the serial master does between results)."""
    ga.tell(genome, fitness)
    while ga.idle_work():
        pass


def top(ga):
    """(genome, fitness) of the best member of the population."""
    best = max(ga.population, key=lambda m: m.fitness.values)
    return best.genome, ga.sign * best.fitness.values[1]


def summary(proposals):
    return [(p.genome.key, p.parents, p.origin, p.predicted, p.screened) for p in proposals]


# ----------------------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("surrogate", [False, True])
def test_same_seed_same_proposals(surrogate):
    first = summary(drive(make_ga(surrogate=surrogate, seed=3), 40))
    again = summary(drive(make_ga(surrogate=surrogate, seed=3), 40))
    other = summary(drive(make_ga(surrogate=surrogate, seed=4), 40))
    assert first == again
    assert [p[0] for p in first] != [p[0] for p in other]


def test_ga_leaves_global_random_alone():
    random.seed(5)
    before = random.getstate()
    drive(make_ga(surrogate=True), 30)
    assert random.getstate() == before


def test_state_restore_continues_the_same_sequence():
    original = make_ga(seed=9)
    told = drive(original, 40)
    out = [original.ask() for _ in range(3)]  # in flight when the run "dies"
    state = original.state()

    resumed = make_ga(seed=12345)  # the seed is overridden by the restored state
    for p in told:
        tell(resumed, p.genome, None if fails(p.genome) else landscape(SPACE, p.genome))
    for p in out:
        resumed.mark_in_flight(p.genome)
    resumed.restore(state)

    for p in out:
        for ga in (original, resumed):
            tell(ga, p.genome, landscape(SPACE, p.genome))
    assert summary(drive(original, 30)) == summary(drive(resumed, 30))


def test_state_is_json_able():
    ga = make_ga()
    drive(ga, 12)
    state = json.loads(json.dumps(ga.state()))
    other = make_ga(seed=77)
    other.restore(state)
    assert other.state() == ga.state() and other.n_random == ga.n_random
    assert len(json.dumps(state)) < 100  # two counters and the seed: cheap to journal with every genome sent


# --------------------------------------------------------------------------------------------- no repeats

@pytest.mark.parametrize("space, surrogate, n", [(SPACE, False, 300), (SMALL, False, 300), (SMALL, True, 120)],
                         ids=["full", "small", "small+surrogate"])
def test_never_proposes_a_genome_twice(space, surrogate, n):
    ga = make_ga(space, surrogate=surrogate, seed=1)
    proposals = drive(ga, n, in_flight=4)
    keys = [p.genome.key for p in proposals]
    assert len(set(keys)) == n
    assert all(space.outside(p.genome) is None for p in proposals)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("surrogate", [False, True])
def test_exhausting_a_tiny_space_is_an_error_not_a_hang(surrogate):
    # 9 genomes, a screening pool of 6: the pool must shrink to what is left, and the 10th ask must fail
    ga = make_ga(TINY, surrogate=surrogate, population=2, screen_factor=6)
    if surrogate:
        ga.surrogate.min_results = 2
    proposals = drive(ga, 9, in_flight=1, fitness=lambda g: float(g.layers[0]["width"]))
    assert sorted(p.genome.layers[0]["width"] for p in proposals) == list(SPACE.layer_genes["width"].values)
    if surrogate:
        assert any(p.predicted is not None for p in proposals)
    with pytest.raises(RuntimeError, match="exhausted"):
        ga.ask()


# ------------------------------------------------------------------------------------------ what it asks

def test_first_population_random_then_offspring_with_parents():
    ga = make_ga(population=6)
    first = [ga.ask() for _ in range(6)]
    assert all(p.origin == "random" and p.parents == () and p.predicted is None for p in first)
    for p in first:
        tell(ga, p.genome, landscape(SPACE, p.genome))
    for _ in range(40):
        members = {m.genome.key for m in ga.population}
        p = ga.ask()
        assert p.origin == "offspring" and 1 <= len(p.parents) <= 2
        assert set(p.parents) <= members
        assert p.params > 0 and p.flops > 0 and (p.params, p.flops) == SPACE.cost(p.genome)
        tell(ga, p.genome, landscape(SPACE, p.genome))


@pytest.mark.parametrize("crossover_rate", [0.0, 1.0])
def test_crossover_rate_decides_the_number_of_parents(crossover_rate):
    ga = make_ga(population=6, crossover_rate=crossover_rate)
    proposals = drive(ga, 60, in_flight=1, fitness=lambda g: landscape(SPACE, g))[6:]
    counts = [len(p.parents) for p in proposals]
    if crossover_rate == 0.0:
        assert set(counts) == {1}
    else:
        # two parents need two distinct tournament winners; with 6 members and tournaments of 3 the same
        # member (often the best) wins both picks about a third of the time, and the child then has one parent
        assert set(counts) <= {1, 2} and counts.count(2) > 0.5 * len(counts)


def test_random_until_two_members_exist():
    ga = make_ga(population=3)
    proposals = drive(ga, 12, in_flight=1, fitness=lambda g: None)  # everything fails
    assert all(p.origin == "random" for p in proposals) and ga.population == []
    tell(ga, ga.ask().genome, 1.0)
    assert ga.ask().origin == "random"  # one member: still nothing to breed from


# ------------------------------------------------------------------------------------------- the population

@pytest.mark.parametrize("higher_is_better", [False, True])
def test_population_keeps_the_best_mu(higher_is_better):
    ga = make_ga(population=5, higher_is_better=higher_is_better)
    told = {}

    def fitness(g):  # a tie-breaking jitter: genomes with equal features (layers reordered) score apart
        told[g.key] = landscape(SPACE, g) + 1e-7 * (int(g.key, 16) % 997)
        return told[g.key]

    drive(ga, 70, fitness=fitness)
    ranked = sorted(told, key=told.get, reverse=higher_is_better)
    assert len(set(told.values())) == len(told) == 70
    assert {m.genome.key for m in ga.population} == set(ranked[:5])
    best_genome, best_fitness = top(ga)
    assert best_genome.key == ranked[0] and best_fitness == told[ranked[0]]


def test_failed_results_never_join_the_population():
    ga = make_ga(population=6)
    failed = set()

    def fitness(g):
        if fails(g) or random.Random(g.key).random() < 0.4:
            failed.add(g.key)
            return None
        return landscape(SPACE, g)

    for _ in range(80):
        drive(ga, 1, in_flight=1, fitness=fitness)
        assert not failed & {m.genome.key for m in ga.population}
        assert len(ga.population) <= 6
    assert failed and len(ga.population) == 6
    assert top(ga)[0].key not in failed


# ------------------------------------------------------------------------------------------- with surrogate

def test_surrogate_proposals_carry_predictions_and_some_explore():
    ga = make_ga(surrogate=True, explore_fraction=0.25)
    before, after = [], []
    for _ in range(110):
        ready = ga.surrogate.ready
        p = ga.ask()
        if ready:
            expected = ga.surrogate.predict(SPACE.features(p.genome)[None])[0][0]
            assert p.predicted == pytest.approx(expected)
        (after if ready else before).append(p)
        tell(ga, p.genome, None if fails(p.genome) else landscape(SPACE, p.genome))
    assert before and all(p.predicted is None and not p.screened for p in before)
    assert len(after) > 90 and all(p.predicted is not None for p in after)
    explored = sum(not p.screened for p in after) / len(after)
    assert 0.12 < explored < 0.38


@pytest.mark.parametrize("explore_fraction, screened", [(0.0, True), (1.0, False)])
def test_explore_fraction_extremes(explore_fraction, screened):
    ga = make_ga(surrogate=True, explore_fraction=explore_fraction)
    proposals = drive(ga, 36, in_flight=1)
    later = [p for p in proposals if p.predicted is not None]
    assert len(later) > 20 and all(p.screened is screened for p in later)


# --------------------------------------------------------------------------------------------- it searches

@pytest.mark.parametrize("surrogate", [False, True])
def test_ga_beats_random_search_on_a_synthetic_landscape(surrogate):
    task = SyntheticTask()
    space = task.space()
    trainer = SimpleNamespace(space=space)

    def fitness(g):
        return task.evaluate(g, trainer).fitness

    ga_best, random_best = [], []
    for seed in range(3 if surrogate else 5):  # the surrogate's many small sklearn calls are the slow part
        ga = make_ga(space, surrogate=surrogate, seed=seed, population=16, screen_factor=8)
        told = drive(ga, 120, in_flight=2, fitness=fitness)
        ga_best.append(min(fitness(p.genome) for p in told))
        rng = random.Random(seed)
        random_best.append(min(fitness(sample(space, rng)) for _ in range(120)))
    assert statistics.median(ga_best) < statistics.median(random_best) - 0.05, (ga_best, random_best)


def test_with_rungs_members_compare_rung_first_and_a_promotion_replaces_its_lower_rung():
    ga = make_ga(population=3)
    rng = random.Random(5)
    genomes = [SPACE.sample(rng) for _ in range(4)]
    for g, f in zip(genomes, [0.5, 0.4, 0.3, 0.2]):
        ga.tell(g, f)
    ga.tell(genomes[0], 0.45, rung=1)  # the worst at rung 0, trained on: now above every rung-0 member
    members = [(m.genome.key, m.fitness.values[0]) for m in ga.population]
    assert (genomes[0].key, 1) in members and len(members) == 3
    assert [k for k, _ in members].count(genomes[0].key) == 1  # its rung-0 entry is gone
    assert top(ga) == (genomes[0], 0.45)


def test_the_promotion_surrogate_learns_the_next_rung_from_the_first():
    promotion = Surrogate(False, min_results=8, max_train=64, refit_every=4)
    ga = make_ga(promotion_surrogate=promotion)
    rng = random.Random(2)
    genomes = [sample(SPACE, rng) for _ in range(60)]
    truth = {g.key: landscape(SPACE, g) for g in genomes}
    curve = [{"epoch": 0.5, "train_loss": 1.0, "seconds": 1.0}, {"epoch": 1.0, "train_loss": 0.8, "seconds": 2.0}]
    for g in genomes:
        ga.tell(g, truth[g.key] + 0.3, rung=0, curve=curve)  # the first rung: worse, but in the same order
    assert ga.choose_promotion(genomes[:5]) == 0  # not fitted yet: the Ladder's order
    for g in genomes[:40]:
        ga.tell(g, truth[g.key], rung=1)
        while ga.idle_work():
            pass
    assert promotion.ready and not ga.surrogate
    held_out = genomes[40:]
    predicted = promotion.predict(np.stack([ga._first_rung[g.key] for g in held_out]))[0]
    assert spearmanr(predicted, [truth[g.key] for g in held_out]).statistic > 0.6
    chosen = ga.choose_promotion(held_out)
    assert chosen == int(np.argmin(predicted))
