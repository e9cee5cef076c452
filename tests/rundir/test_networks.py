"""menndl_py.rundir.networks: a network is written whole and put in use by one rename; its files belong together."""
import json
import random

import pytest
import torch

from menndl_py.errors import UserError
from menndl_py.rundir.networks import (
    install_network,
    load_network,
    read_record,
    save_network,
    settle_networks,
    stage_network,
)
from menndl_py.tasks import make_task


@pytest.fixture
def space():
    return make_task("elemnet").space()


def network(space, seed):
    genome = space.sample(random.Random(seed))
    torch.manual_seed(seed)
    return genome, space.build(genome).state_dict()


def record(i, genome):
    return {"id": i, "genome_hash": genome.key, "fitness": 0.5 - 0.1 * i}


def hidden(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


def test_a_saved_network_replaces_the_previous_one_whole(tmp_path, space):
    best = tmp_path / "best"
    for i in range(3):
        genome, weights = network(space, i)
        save_network(best, genome, weights, record(i, genome))
        loaded, model, got = load_network(best, space)
        assert loaded == genome and got["id"] == i
        assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert hidden(tmp_path) == [best.readlink().name]  # the network in use, and nothing left behind


def test_a_crash_between_storing_the_row_and_installing_the_network_is_mended(tmp_path, space):
    best = tmp_path / "best"
    first, weights = network(space, 1)
    save_network(best, first, weights, record(1, first))
    second, weights = network(space, 2)
    staged = stage_network(best, second, weights, record(2, second))  # the row of id 2 is stored, then the kill
    assert read_record(best)["id"] == 1
    settle_networks(best, best_id=2)
    assert read_record(best)["id"] == 2 and load_network(best, space)[0] == second
    assert hidden(tmp_path) == [staged.name]

    third, weights = network(space, 3)
    stage_network(best, third, weights, record(3, third))  # killed before its row was stored: not the best
    settle_networks(best, best_id=2)
    assert read_record(best)["id"] == 2 and hidden(tmp_path) == [staged.name]


def test_a_network_saved_the_old_way_is_replaced(tmp_path, space):
    best = tmp_path / "best"
    best.mkdir()
    (best / "genome.json").write_text("{}")
    genome, weights = network(space, 4)
    install_network(stage_network(best, genome, weights, record(4, genome)), best)
    assert best.is_symlink() and load_network(best, space)[0] == genome and len(hidden(tmp_path)) == 1


def test_files_of_different_networks_are_a_one_line_error(tmp_path, space):
    best = tmp_path / "best"
    genome, weights = network(space, 5)
    other, other_weights = network(space, 6)
    save_network(best, genome, weights, record(5, other))
    with pytest.raises(UserError, match="are of different networks"):
        load_network(best, space)
    save_network(best, genome, other_weights, record(5, genome))
    with pytest.raises(UserError, match="not the weights of the network") as error:
        load_network(best, space)
    assert "\n" not in str(error.value)
    assert json.loads((best / "result.json").read_text())["id"] == 5


@pytest.mark.parametrize("cut", range(1, 5))
def test_a_save_cut_short_leaves_the_old_network_or_the_new_one(tmp_path, space, monkeypatch, cut):
    """A kill in the middle of saving (here: the cut-th rename raises) leaves files that belong together."""
    import os

    best = tmp_path / "best"
    old, weights = network(space, 7)
    save_network(best, old, weights, record(7, old))
    new, new_weights = network(space, 8)
    renames, real_replace = [], os.replace

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == cut:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    try:
        save_network(best, new, new_weights, record(8, new))
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    genome, _, got = load_network(best, space)
    assert (genome, got["id"]) in ((old, 7), (new, 8)) and got["genome_hash"] == genome.key
