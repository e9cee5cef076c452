"""menndl_py.genome.networks.windownet: window CNNs give, on the slabs of periodic volumes, what they give on each
voxel's window."""
import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from menndl_py.errors import CandidateRefused
from menndl_py.genome import Choice, Genome, SearchSpace
from menndl_py.genome.networks.windownet import NORMS, POOL, WindowNet, slabs

GENES = {"filters": Choice((2, 4, 6)), "kernel": Choice((1, 3, 5)), "convs": Choice((1, 2)),
         "norm": Choice(NORMS), "activation": Choice(("relu", "gelu", "elu")), "pool": Choice(POOL),
         "dropout": Choice((0.0, 0.1)), "dense": Choice((0, 8, 16))}
TRAINING = {"learning_rate": Choice((1e-3,)), "batch_size": Choice((4,)), "optimizer": Choice(("adam",)),
            "weight_decay": Choice((0.0,))}
W = 9


def space(depth=(1, 4)):
    return SearchSpace(GENES, TRAINING, depth, WindowNet(), (W, W, W))


def networks(seed: int, count: int):
    """`count` sampled networks that build, in eval mode, with batch-norm statistics that are not the identity."""
    s, rng, out = space(), random.Random(seed), []
    while len(out) < count:
        genome = s.sample(rng)
        try:
            model = s.build(genome)
        except CandidateRefused:
            continue
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
        out.append((s, genome, model.eval()))
    return out


def windows(volumes: torch.Tensor) -> torch.Tensor:
    """Every voxel's periodic W×W×W neighbourhood, (N·n1·n2·n3, W, W, W), channels along x1."""
    h = W // 2
    padded = F.pad(volumes[:, None], (h,) * 6, mode="circular")[:, 0]
    return padded.unfold(1, W, 1).unfold(2, W, 1).unfold(3, W, 1).reshape(-1, W, W, W)


@pytest.mark.parametrize("sides", [(10, 11, 12), (W, W, W)], ids=["unequal sides", "window is the whole volume"])
def test_slabs_give_each_voxel_the_value_of_its_window_image(sides):
    torch.manual_seed(0)
    volumes = torch.randint(0, 2, (2, *sides)).float() * 2 - 1  # unequal sides: no axis may be mixed up
    for _, genome, model in networks(seed=3, count=12):
        with torch.no_grad():
            planes = model(slabs(volumes, W))
            fields = planes.reshape(2, *sides)
            each = model(windows(volumes)).reshape(fields.shape)
        assert planes.shape == (2 * sides[0], 1, *sides[1:])
        torch.testing.assert_close(fields, each, rtol=1e-4, atol=1e-5, msg=lambda m: f"{genome.to_json()}: {m}")


def test_parameters_are_counted_exactly_and_flops_cover_what_torch_counts():
    for s, genome, model in networks(seed=5, count=10):
        assert s.cost(genome)[0] == sum(p.numel() for p in model.parameters())
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            assert model(torch.randn(1, W, W, W)).shape == (1, 1)
        counted = counter.get_total_flops()  # convolutions and matrix products only
        assert counted <= s.cost(genome)[1] <= 1.35 * counted + 1e4


def test_layers_that_do_not_fit_are_refused_with_the_reason():
    s = space(depth=(1, 5))
    training = {"learning_rate": 1e-3, "batch_size": 4, "optimizer": "adam", "weight_decay": 0.0}

    def layer(**over):
        return {"filters": 2, "kernel": 3, "convs": 1, "norm": "none", "activation": "relu", "pool": "none",
                "dropout": 0.0, "dense": 0, **over}

    ok = Genome([layer(), layer(pool="max"), layer()], training)  # 9 → 7 → 5 → 2 → ... 3×3 does not fit 2×2
    with pytest.raises(CandidateRefused, match="layer 2: a 3×3 valid convolution does not fit its 2×2 input"):
        s.cost(ok)
    fits = Genome([layer(), layer(pool="max"), layer(kernel=1, pool="avg")], training)  # 9 → 7 → 5 → 2 → 1
    assert s.build(fits)(torch.zeros(1, 1, 9, 9, 9)).shape == (1, 1, 9, 9)
    deep = Genome([layer(kernel=5)] + [layer(kernel=1, pool="max")] * 3, training)  # 9 → 5 → 2 → 1 → ...
    with pytest.raises(CandidateRefused, match="layer 3: 2×2 pooling does not fit its 1×1 input"):
        s.cost(deep)


def test_other_inputs_are_refused_in_one_line():
    _, _, model = networks(seed=1, count=1)[0]
    with pytest.raises(ValueError, match=r"expected window images \(N, w, w, w\) or slabs"):
        model(torch.zeros(2, 2, 9, 9, 9))
