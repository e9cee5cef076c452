"""menndl_py.genome: genome identity, sampling/mutation/crossover within bounds, cost, features, overrides."""
import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from menndl_py.errors import CandidateRefused, UserError
from menndl_py.genome import Genome
from menndl_py.tasks.elemnet.task import ElemNetTask

SPACE = ElemNetTask().space()
N_FEATURES = len(SPACE.feature_names())


def layer(width=64, activation="relu", dropout=0.0, batch_norm=False):
    return {"width": width, "activation": activation, "dropout": dropout, "batch_norm": batch_norm}


def training(learning_rate=1e-3, batch_size=64, optimizer="adam", weight_decay=0.0, inputs="fractions"):
    return {"learning_rate": learning_rate, "batch_size": batch_size, "optimizer": optimizer,
            "weight_decay": weight_decay, "inputs": inputs}


# -------------------------------------------------------------------------------------------- identity

def test_key_survives_a_json_round_trip():
    rng = random.Random(1)
    for _ in range(50):
        g = SPACE.sample(rng)
        again = Genome.from_json(json.dumps(g.to_json()))
        assert again.key == g.key and again == g and hash(again) == hash(g)
        assert Genome.from_json(g.to_json()).key == g.key
        assert len(g.key) == 16 and int(g.key, 16) >= 0


def test_key_ignores_dict_ordering_but_not_content():
    g = Genome([layer(64), layer(128, "tanh", 0.1, True)], training())
    shuffled = Genome([dict(reversed(list(x.items()))) for x in g.layers], dict(reversed(list(g.training.items()))))
    assert shuffled.key == g.key
    assert Genome([layer(128, "tanh", 0.1, True), layer(64)], training()).key != g.key  # layer order matters
    assert Genome([layer(64), layer(128, "tanh", 0.1, False)], training()).key != g.key
    assert Genome(g.layers, training(learning_rate=2e-3)).key != g.key
    assert g.depth == 2


def test_genome_does_not_share_its_inputs():
    layers, train = [layer()], training()
    g = Genome(layers, train)
    key = g.key
    layers[0]["width"] = 1024
    train["optimizer"] = "sgd"
    assert g.layers[0]["width"] == 64 and g.training["optimizer"] == "adam" and g.key == key


# ------------------------------------------------------------------------------------- staying in bounds

def test_outside_names_what_puts_a_genome_outside():
    g = Genome([layer()], training())
    assert SPACE.outside(g) is None
    assert SPACE.outside(Genome([layer(width=17)], training())).startswith("width=17")
    assert SPACE.outside(Genome([layer(activation="swish")], training()))
    assert SPACE.outside(Genome([{**layer(), "kernel": 3}], training()))
    assert SPACE.outside(Genome([layer()], {**training(), "momentum": 0.9}))
    assert SPACE.outside(Genome([layer()], training(learning_rate=0.3)))
    assert SPACE.outside(Genome([layer()] * 25, training()))
    assert SPACE.outside(Genome([], training()))


@pytest.mark.parametrize("overrides", [{}, {"depth": [2, 4], "width": [16, 32, 64], "optimizer": ["adam", "sgd"]}])
def test_sample_mutate_crossover_stay_in_the_space(overrides):
    space = SPACE.restricted(overrides)
    lo, hi = space.depth
    depths = set()
    for seed in range(150):
        rng = random.Random(seed)
        a, b = space.sample(rng), space.sample(rng)
        m = space.mutate(a, rng)
        c, d = space.crossover(a, b, rng)
        for g in (a, b, m, c, d):
            assert space.outside(g) is None, (seed, g.to_json())
            assert lo <= g.depth <= hi
            depths.add(g.depth)
        # repeated mutation walks without ever leaving
        for _ in range(10):
            m = space.mutate(m, rng)
            assert space.outside(m) is None and lo <= m.depth <= hi
    assert min(depths) == lo and max(depths) == hi  # the bounds are reached, not just respected


def test_crossover_repairs_depth_at_both_bounds():
    space = SPACE.restricted({"depth": [3, 4]})
    deep = Genome([layer(16)] * 4, training())
    also_deep = Genome([layer(1024)] * 4, training(optimizer="sgd"))
    for seed in range(100):
        for child in space.crossover(deep, also_deep, random.Random(seed)):
            assert 3 <= child.depth <= 4 and space.outside(child) is None


def test_mutation_always_changes_the_genome():
    rng = random.Random(0)
    kinds = set()
    for _ in range(400):
        g = SPACE.sample(rng)
        m = SPACE.mutate(g, rng)
        assert m != g and m.key != g.key
        kinds.add("deeper" if m.depth > g.depth else "shallower" if m.depth < g.depth
                  else "training" if m.training != g.training else "layer")
    assert kinds == {"deeper", "shallower", "training", "layer"}


def test_mutation_does_not_touch_its_input():
    g = SPACE.sample(random.Random(3))
    before = json.dumps(g.to_json())
    for seed in range(30):
        SPACE.mutate(g, random.Random(seed))
    assert json.dumps(g.to_json()) == before


def test_crossover_is_deterministic_and_leaves_global_random_alone():
    rng = random.Random(11)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    random.seed(123)
    before = random.getstate()
    first = SPACE.crossover(a, b, random.Random(5))
    assert random.getstate() == before
    random.seed(999)  # another global state must not change the children
    second = SPACE.crossover(a, b, random.Random(5))
    assert first == second
    children = {SPACE.crossover(a, b, random.Random(seed)) for seed in range(20)}
    assert len(children) > 1  # the rng does drive it


def test_crossover_children_inherit_from_their_parents():
    rng = random.Random(2)
    checked = 0
    for _ in range(100):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        c, d = SPACE.crossover(a, b, rng)
        parent_layers = [json.dumps(x, sort_keys=True) for x in a.layers + b.layers]
        for child in (c, d):
            for name, value in child.training.items():
                assert value in (a.training[name], b.training[name])
        # without a depth repair (a child empty or over 24 layers), the children share out the parents' layers
        if c.depth + d.depth == a.depth + b.depth:
            assert sorted(json.dumps(x, sort_keys=True) for x in c.layers + d.layers) == sorted(parent_layers)
            checked += 1
    assert checked > 50


# ------------------------------------------------------------------------------------------ cost & build

GENOMES = [
    Genome([layer(16)], training()),
    Genome([layer(64, batch_norm=True)], training()),
    Genome([layer(1024, "gelu", 0.2, True), layer(32, "tanh"), layer(256, "selu", 0.1, True)], training()),
    Genome([layer(w, batch_norm=i % 2 == 0) for i, w in enumerate((512, 384, 128, 64, 32, 16))], training()),
    *ElemNetTask().baseline_genomes().values(),
]


@pytest.mark.parametrize("genome", GENOMES, ids=lambda g: f"depth{g.depth}")
def test_cost_is_the_parameter_count_of_the_built_module(genome):
    params, flops = SPACE.cost(genome)
    model = SPACE.build(genome)
    assert params == sum(p.numel() for p in model.parameters())
    assert flops > 0
    model.eval()
    assert model(torch.zeros(5, 86)).shape == (5, 1)


def test_cost_by_hand():
    # 86→64 (+ batch norm) → 1
    g = Genome([layer(64, batch_norm=True)], training())
    assert SPACE.cost(g)[0] == 86 * 64 + 64 + 2 * 64 + 64 + 1


def test_refused_above_max_params():
    big = Genome([layer(1024)] * 9, training())  # 86*1024 + 8*1024*1024 + ... > 8,000,000
    with pytest.raises(CandidateRefused) as info:
        SPACE.cost(big)
    assert "exceed the limit of 8,000,000" in str(info.value)
    with pytest.raises(CandidateRefused):
        SPACE.build(big)
    small_limit = dataclasses.replace(SPACE, max_params=10_000)
    with pytest.raises(CandidateRefused, match="parameters exceed the limit of 10,000"):
        small_limit.cost(Genome([layer(128)], training()))
    assert small_limit.cost(Genome([layer(16)], training()))[0] < 10_000


# ---------------------------------------------------------------------------------------------- features

def test_features_have_a_fixed_length_at_every_depth():
    rng = random.Random(4)
    names = SPACE.feature_names()
    assert len(names) == len(set(names)) and names[:3] == ["depth", "log10_params", "log10_flops"]
    for depth in range(SPACE.depth[0], SPACE.depth[1] + 1):
        g = Genome([SPACE.sample_layer(rng) for _ in range(depth)], SPACE.sample(rng).training)
        try:
            cost = SPACE.cost(g)
        except CandidateRefused:
            g = Genome([layer(16)] * depth, g.training)
            cost = SPACE.cost(g)
        x = SPACE.features(g)
        assert x.shape == (N_FEATURES,) and x.dtype.kind == "f"
        assert np.isfinite(x).all()
        assert x[0] == depth
        assert (SPACE.features(g, cost) == x).all()


def test_features_tell_genomes_apart():
    a = Genome([layer(16)], training())
    b = Genome([layer(1024)], training())
    c = Genome([layer(16)], training(optimizer="sgd"))
    xa, xb, xc = (SPACE.features(g) for g in (a, b, c))
    assert (xa != xb).any() and (xa != xc).any()
    assert xb[1] > xa[1]  # log10 params grows with width


# --------------------------------------------------------------------------------------------- overrides

def test_restricted_applies_overrides_and_leaves_the_original():
    space = SPACE.restricted({"depth": [2, 5], "width": [64, 16], "activation": ["tanh", "relu"],
                              "learning_rate": [3e-4, 1e-3], "batch_norm": [False]})
    assert space.depth == (2, 5)
    assert space.layer_genes["width"].values == (16, 64)  # numeric values are sorted
    assert space.layer_genes["activation"].values == ("tanh", "relu")
    assert space.training_genes["learning_rate"].values == (3e-4, 1e-3)  # a new grid point within the range
    assert space.layer_genes["batch_norm"].values == (False,)
    assert SPACE.depth == (1, 24) and len(SPACE.layer_genes["width"].values) == 9
    rng = random.Random(0)
    for _ in range(100):
        g = space.sample(rng)
        assert 2 <= g.depth <= 5 and all(x["width"] in (16, 64) and not x["batch_norm"] for x in g.layers)
    assert len(space.feature_names()) == len(space.features(space.sample(rng)))
    assert SPACE.restricted({}) == SPACE


DEPTH = "search.space.depth: must be [min, max] with 1 <= min <= max <= 24 (the task's range), got "


@pytest.mark.parametrize("overrides, message", [
    ({"widht": [16]}, "search.space.widht: unknown gene (expected depth or one of: width, activation, dropout, "
                      "batch_norm, learning_rate, batch_size, optimizer, weight_decay, inputs)"),
    ({"activation": ["relu", "swish"]}, "search.space.activation: values must be among ['relu', 'elu', 'selu', "
                                        "'gelu', 'silu', 'tanh'], got ['relu', 'swish']"),
    ({"optimizer": ["lbfgs"]}, "search.space.optimizer: values must be among ['adam', 'adamw', 'sgd', "
                               "'rmsprop'], got ['lbfgs']"),
    ({"width": "16"}, "search.space.width: must be a non-empty list of values, got '16'"),
    ({"width": []}, "search.space.width: must be a non-empty list of values, got []"),
    ({"width": ["wide"]}, "search.space.width: must be a list of numbers, got ['wide']"),
    ({"width": [True]}, "search.space.width: must be a list of numbers, got [True]"),
    ({"width": [16, -5]}, "search.space.width: values must be integers from 16 to 1024, got [16, -5]"),
    ({"width": [16.5]}, "search.space.width: values must be integers from 16 to 1024, got [16.5]"),
    ({"batch_size": [0]}, "search.space.batch_size: values must be integers from 32 to 512, got [0]"),
    ({"dropout": [0.0, 1.5]}, "search.space.dropout: values must be numbers from 0.0 to 0.3, got [0.0, 1.5]"),
    ({"learning_rate": [-1.0]}, "search.space.learning_rate: values must be numbers from 0.0001 to 0.01, "
                                "got [-1.0]"),
    ({"activation": ["relu", "relu"]}, "search.space.activation: values must be distinct, got ['relu', 'relu']"),
    ({"width": [16, 16]}, "search.space.width: values must be distinct, got [16, 16]"),
    ({"depth": [0, 3]}, DEPTH + "[0, 3]"),
    ({"depth": [5, 2]}, DEPTH + "[5, 2]"),
    ({"depth": 3}, DEPTH + "3"),
    ({"depth": [1, 2, 3]}, DEPTH + "[1, 2, 3]"),
    ({"depth": [1.0, 3]}, DEPTH + "[1.0, 3]"),
    ({"depth": [True, 3]}, DEPTH + "[True, 3]"),
    ({"depth": [50_000_000, 50_000_000]},  # ran out of memory after 34 s
     DEPTH + "[50000000, 50000000]"),
    ({"depth": [1, 25]}, DEPTH + "[1, 25]"),
])
def test_bad_override_message(overrides, message):
    with pytest.raises(UserError) as info:
        SPACE.restricted(overrides)
    assert str(info.value) == message


def test_single_valued_genes_still_mutate_and_never_crash():
    # every gene pinned but one: mutation must still find a change (or a depth move), never raise
    space = SPACE.restricted({"activation": ["relu"], "dropout": [0.0], "batch_norm": [False],
                              "learning_rate": [1e-3], "batch_size": [32], "optimizer": ["adam"],
                              "weight_decay": [0.0], "width": [16, 32]})
    rng = random.Random(0)
    g = space.sample(rng)
    for _ in range(300):
        g = space.mutate(g, rng)
        assert space.outside(g) is None
