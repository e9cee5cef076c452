"""menndl_py.genome.networks.convnet: convolutional regressors count their parameters exactly and refuse
over-pooling."""
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Choice, Genome, SearchSpace
from menndl_py.genome.networks.conv import NORMS
from menndl_py.genome.networks.convnet import POOL, ConvNet

GENES = {"filters": Choice((2, 4, 6)), "kernel": Choice((3, 5)), "convs": Choice((1, 2)), "norm": Choice(NORMS),
         "activation": Choice(("relu", "gelu")), "pool": Choice(POOL), "dropout": Choice((0.0, 0.1)),
         "dense": Choice((0, 8, 16))}
TRAINING = {"learning_rate": Choice((1e-3,)), "batch_size": Choice((4,)), "optimizer": Choice(("adam",)),
            "weight_decay": Choice((0.0,))}


def space(shape, dims, depth=(1, 4)):
    return SearchSpace(GENES, TRAINING, depth, ConvNet(dims=dims), shape)


@pytest.mark.parametrize("shape, dims", [((11, 11, 11), 2), ((1, 9, 9, 9), 3)])
def test_sampled_genomes_give_one_value_per_sample_and_count_their_parameters_exactly(shape, dims):
    torch.set_num_threads(1)
    s, rng, built = space(shape, dims), random.Random(0), 0
    for _ in range(40):
        genome = s.sample(rng)
        try:
            model = s.build(genome).eval()
        except CandidateRefused:
            continue
        built += 1
        with torch.no_grad():
            out = model(torch.randn(2, *shape))
        assert out.shape == (2, 1)
        assert s.cost(genome)[0] == sum(p.numel() for p in model.parameters())
    assert built >= 20


def test_flops_cover_what_torch_counts():
    s, rng = space((11, 11, 11), 2), random.Random(1)
    checked = 0
    while checked < 8:
        genome = s.sample(rng)
        try:
            model = s.build(genome).eval()
        except CandidateRefused:
            continue
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.randn(1, 11, 11, 11))
        counted = counter.get_total_flops()  # convolutions and matrix products only
        assert counted <= s.cost(genome)[1] <= 1.35 * counted + 1e4
        checked += 1


def layer(pool, **over):
    return {"filters": 2, "kernel": 3, "convs": 1, "norm": "none", "activation": "relu", "pool": pool,
            "dropout": 0.0, "dense": 0, **over}


def test_pooling_below_one_voxel_is_refused_with_the_reason():
    s = space((1, 9, 9, 9), 3, depth=(1, 5))
    training = {"learning_rate": 1e-3, "batch_size": 4, "optimizer": "adam", "weight_decay": 0.0}
    ok = Genome([layer("max"), layer("avg"), layer("conv")], training)  # 9 → 4 → 2 → 1
    assert s.build(ok)(torch.zeros(1, 1, 9, 9, 9)).shape == (1, 1)
    deep = Genome([layer("max"), layer("none"), layer("avg"), layer("conv"), layer("max")], training)
    with pytest.raises(CandidateRefused, match="4 poolings shrink the 9×9×9 input below 1 voxel"):
        s.cost(deep)
    lonely = Genome([layer("max"), layer("max"), layer("max"), layer("none", norm="instance")], training)
    with pytest.raises(CandidateRefused, match="instance normalisation of a 1-voxel"):
        s.build(lonely)


def test_dense_genes_add_layers_in_genome_order():
    s = space((3, 4, 4), 2)
    training = {"learning_rate": 1e-3, "batch_size": 4, "optimizer": "adam", "weight_decay": 0.0}
    genome = Genome([layer("none", dense=16), layer("max", dense=8)], training)
    linears = [m for m in s.build(genome) if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2 * 2 * 2, 16), (16, 8), (8, 1)]
