"""The Search protocol: every search (the GA, with and without its surrogate, and random search) passes these."""
import random

import pytest

from menndl_py.search import AsyncGA, RandomSearch, SpaceExhausted, Surrogate
from menndl_py.tasks.elemnet.task import ElemNetTask

SPACE = ElemNetTask().space().restricted({"depth": [1, 3], "width": [16, 32, 64]})
TINY = ElemNetTask().space().restricted({"depth": [1, 1], "activation": ["relu"], "dropout": [0.0],
                                         "batch_norm": [False], "learning_rate": [1e-3], "batch_size": [32],
                                         "optimizer": ["adam"], "weight_decay": [0.0], "inputs": ["fractions"]})
SEED_GENOME = SPACE.sample(random.Random(99))


def make(kind, space=SPACE, seed=0, seeds=()):
    if kind == "random":
        return RandomSearch(space, seed=seed, seeds=seeds)
    surrogate = Surrogate(False, min_results=4, refit_every=2) if kind == "ga+surrogate" else None
    return AsyncGA(space, population=4, higher_is_better=False, seed=seed, surrogate=surrogate, screen_factor=3,
                   seeds=seeds)


def fitness(genome) -> float:
    return float(sum(layer["width"] for layer in genome.layers)) / genome.depth


def drive(search, n):
    out = []
    for _ in range(n):
        p = search.ask()
        search.tell(p.genome, fitness(p.genome))
        while search.idle_work():
            pass
        out.append(p)
    return out


KINDS = ["ga", "ga+surrogate", "random"]
WITHOUT_REFITS = ["ga", "random"]  # a surrogate refits afresh on resume: its asks then differ


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_asks_the_same_genomes_and_another_seed_others(kind):
    keys = [p.genome.key for p in drive(make(kind, seed=3), 20)]
    assert keys == [p.genome.key for p in drive(make(kind, seed=3), 20)]
    assert keys != [p.genome.key for p in drive(make(kind, seed=4), 20)]


@pytest.mark.parametrize("kind", KINDS)
def test_seed_genomes_come_first_and_nothing_is_asked_twice(kind):
    proposals = drive(make(kind, seeds=[SEED_GENOME]), 40)
    assert proposals[0].genome == SEED_GENOME and proposals[0].origin == "seed"
    assert len({p.genome.key for p in proposals}) == 40
    assert all(SPACE.outside(p.genome) is None and (p.params, p.flops) == SPACE.cost(p.genome) for p in proposals)


@pytest.mark.parametrize("kind", WITHOUT_REFITS)
def test_state_and_restore_continue_the_same_sequence(kind):
    original = make(kind, seed=7)
    told = drive(original, 12)
    state = original.state()
    next_keys = [p.genome.key for p in drive(original, 5)]
    resumed = make(kind, seed=7)
    for p in told:
        resumed.tell(p.genome, fitness(p.genome))
    resumed.replayed()
    resumed.restore(state)
    assert [p.genome.key for p in drive(resumed, 5)] == next_keys


@pytest.mark.parametrize("kind", KINDS)
def test_a_genome_in_flight_before_a_restart_is_never_asked_again(kind):
    first = [p.genome for p in drive(make(kind, seed=2), 6)]
    again = make(kind, seed=2)
    for genome in first:
        again.mark_in_flight(genome)
    assert not {g.key for g in first} & {p.genome.key for p in drive(again, 10)}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_an_exhausted_space_is_an_error_not_a_hang(kind):
    search = make(kind, TINY)
    assert len({p.genome.key for p in drive(search, 9)}) == 9
    with pytest.raises(SpaceExhausted, match="exhausted"):
        search.ask()


def test_the_ga_hands_each_closed_surrogate_refit_to_its_log():
    ga = make("ga+surrogate")
    rows = []
    ga.log = rows.append
    drive(ga, 16)
    ga.finish()
    assert [r["refit"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 4
    assert all(r["n_scored"] >= 0 and r["n_train"] <= r["n_results"] for r in rows)
