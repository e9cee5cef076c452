"""ElemNet's `inputs` gene: element descriptor averages computed inside the network, beside the fractions."""
import numpy as np
import pytest
import torch

from menndl_py.genome import Genome
from menndl_py.tasks.elemnet.data import ELEMENTS
from menndl_py.tasks.elemnet.descriptors import TABLES, table
from menndl_py.tasks.elemnet.task import ElemNetTask

SPACE = ElemNetTask().space()
LAYER = {"width": 16, "activation": "relu", "dropout": 0.0, "batch_norm": False}
TRAINING = {"learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0}


@pytest.mark.parametrize("name", TABLES)
def test_each_table_covers_every_element_standardised(name):
    t = table(name)
    assert t.shape[0] == len(ELEMENTS) and t.shape[1] >= 20 and np.isfinite(t).all()
    assert np.abs(t.mean(axis=0)).max() < 0.2  # standardised over the elements (a lacking element counts as 0)


def test_a_genome_with_descriptors_feeds_the_fractions_average_of_the_table():
    genome = Genome([LAYER], {**TRAINING, "inputs": "mat2vec"})
    net = SPACE.build(genome)
    x = torch.zeros(2, len(ELEMENTS))
    x[0, ELEMENTS.index("Fe")], x[0, ELEMENTS.index("O")] = 0.4, 0.6
    x[1, ELEMENTS.index("Na")] = 1.0
    features = net[0](x)
    expected = 0.4 * table("mat2vec")[ELEMENTS.index("Fe")] + 0.6 * table("mat2vec")[ELEMENTS.index("O")]
    assert torch.allclose(features[0, :86], x[0]) and np.allclose(features[0, 86:].numpy(), expected, atol=1e-5)
    assert net(x).shape == (2, 1)
    assert "0.descriptors" in net.state_dict() and not any(p.numel() == table("mat2vec").size
                                                            for p in net.parameters())  # fixed, not trained


def test_descriptors_cost_flops_and_a_wider_first_layer_but_fractions_cost_nothing():
    plain = SPACE.cost(Genome([LAYER], {**TRAINING, "inputs": "fractions"}))
    magpie = SPACE.cost(Genome([LAYER], {**TRAINING, "inputs": "magpie"}))
    width = table("magpie").shape[1]
    assert magpie[0] - plain[0] == width * LAYER["width"]
    assert magpie[1] > plain[1] + 2 * 86 * width - 1


def test_a_genome_written_without_the_gene_takes_the_fractions_alone():
    old = Genome([LAYER], TRAINING)
    assert SPACE.cost(old) == SPACE.cost(Genome([LAYER], {**TRAINING, "inputs": "fractions"}))
    assert SPACE.build(old)(torch.zeros(3, 86)).shape == (3, 1)
