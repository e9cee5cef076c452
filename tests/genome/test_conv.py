"""menndl_py.genome.networks.conv: encoder–decoder genomes build networks of the input's size, or are refused with
a reason."""
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Choice, SearchSpace
from menndl_py.genome.networks.conv import DOWN, NORMS, UP, EncoderDecoder

GENES = {"filters": Choice((4, 8, 12)), "kernel": Choice((3, 5)), "convs": Choice((1, 2)),
         "activation": Choice(("relu", "gelu")), "norm": Choice(NORMS), "down": Choice(DOWN), "up": Choice(UP),
         "skip": Choice((False, True)), "dropout": Choice((0.0, 0.1))}
TRAINING = {"learning_rate": Choice((1e-3,)), "batch_size": Choice((4,)), "optimizer": Choice(("adam",)),
            "weight_decay": Choice((0.0,))}


def space(shape=(1, 32, 32), depth=(1, 4)):
    return SearchSpace(GENES, TRAINING, depth, EncoderDecoder(5), shape)


def test_every_sampled_genome_keeps_the_input_size_and_counts_its_parameters_exactly():
    s, rng = space(), random.Random(0)
    for _ in range(60):
        genome = s.sample(rng)
        model = s.build(genome).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 1, 32, 32))
        assert out.shape == (2, 5, 32, 32)
        assert s.cost(genome)[0] == sum(p.numel() for p in model.parameters())


def test_flops_of_the_convolutions_match_torch_counter():
    s, rng = space(), random.Random(1)
    for _ in range(10):
        genome = s.sample(rng)
        model = s.build(genome).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.randn(1, 1, 32, 32))
        counted = counter.get_total_flops()  # convolutions (incl. transposed) only, no bias/norm/activation
        assert counted <= s.cost(genome)[1] <= 1.35 * counted + 1e5


def test_a_size_that_cannot_be_halved_is_refused_with_the_reason():
    s = space(shape=(1, 36, 36))
    genome = s.sample(random.Random(2))
    deep = type(genome)([dict(genome.layers[0])] * 4, genome.training)
    with pytest.raises(CandidateRefused, match="not divisible by 8"):
        s.build(deep)
    shallow = type(genome)([dict(genome.layers[0])] * 3, genome.training)
    assert s.build(shallow)(torch.randn(1, 1, 36, 36)).shape[-2:] == (36, 36)


def test_normalisation_at_a_one_pixel_bottleneck_is_refused():
    s = space(shape=(1, 8, 8))
    level = {k: g.values[0] for k, g in GENES.items()}
    genome = s.sample(random.Random(3))
    levels = [level] * 3 + [dict(level, norm="batch")]
    with pytest.raises(CandidateRefused, match="1-pixel bottleneck"):
        s.cost(type(genome)(levels, genome.training))


def test_skip_connections_change_the_network():
    s = space()
    level = {k: g.values[0] for k, g in GENES.items()}
    genome = s.sample(random.Random(4))
    without = type(genome)([dict(level, skip=False)] * 3, genome.training)
    with_skips = type(genome)([dict(level, skip=True)] * 3, genome.training)
    assert s.cost(with_skips)[0] > s.cost(without)[0]
    assert s.build(with_skips)(torch.randn(1, 1, 32, 32)).shape == (1, 5, 32, 32)


def test_mutation_and_crossover_stay_buildable_or_refused():
    s, rng = space(shape=(1, 16, 16), depth=(1, 5)), random.Random(5)
    a, b = s.sample(rng), s.sample(rng)
    for _ in range(80):
        a = s.mutate(a, rng)
        a, b = s.crossover(a, b, rng)
        assert s.outside(a) is None
        try:
            params, _ = s.cost(a)
        except CandidateRefused as exc:
            assert "divisible" in str(exc) or "bottleneck" in str(exc)
            continue
        assert params == sum(p.numel() for p in s.build(a).parameters())
