"""search.seed_genomes: known networks start the search, and a bad entry is one clear error."""
import json
import random

import pytest

from menndl_py.errors import CandidateRefused, UserError
from menndl_py.search import AsyncGA
from menndl_py.search.seeds import seed_genomes
from menndl_py.tasks import make_task
from menndl_py.tasks.elemnet.task import HAND_MLP


@pytest.fixture
def task(tmp_path):
    return make_task("localization", {"size": 11, "window": 11}, tmp_path)


def test_seeds_are_the_first_proposals_then_random_ones(task, tmp_path):
    space, rng = task.space(), random.Random(3)
    while True:
        other = space.sample(rng)
        try:
            space.cost(other)
            break
        except CandidateRefused:
            continue
    (tmp_path / "g.json").write_text(json.dumps(other.to_json()))
    run = tmp_path / "run" / "best"
    run.mkdir(parents=True)
    (run / "genome.json").write_text(json.dumps(other.to_json()))
    seeds = seed_genomes(["baselines", str(tmp_path / "g.json"), str(tmp_path / "run")], task.baseline_genomes(),
                         space)
    assert seeds == [*task.baseline_genomes().values(), other, other]
    ga = AsyncGA(space, population=4, higher_is_better=False, seed=0, seeds=seeds)
    proposals = [ga.ask() for _ in range(4)]
    assert [p.origin for p in proposals] == ["seed", "seed", "random", "random"]  # the repeat is skipped
    assert [p.genome for p in proposals[:2]] == seeds[:2] and proposals[0].params > 0


def test_one_baseline_is_seeded_by_its_name(tmp_path):
    elemnet = make_task("elemnet", {}, tmp_path)
    baselines = elemnet.baseline_genomes()
    space = elemnet.space().restricted({"depth": [1, 8]})  # ElemNet-17 lies outside: only the named one is taken
    assert seed_genomes([HAND_MLP], baselines, space) == [baselines[HAND_MLP]]


@pytest.mark.parametrize("items, message", [
    ("baselines", "search.seed_genomes: must be a list"),
    ([3], "search.seed_genomes[0]: expected \"baselines\", a baseline's name, a genome JSON file or a run "
          "directory, got 3"),
    (["nowhere.json"], "search.seed_genomes[0]: cannot read nowhere.json"),
    (["bad.json"], "search.seed_genomes[0]: bad.json is not a genome JSON file"),
])
def test_bad_entries_name_the_entry(task, tmp_path, monkeypatch, items, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text('{"layers": 1}')
    with pytest.raises(UserError) as err:
        seed_genomes(items, task.baseline_genomes(), task.space())
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_seed_outside_the_restricted_space_says_which_gene(task):
    space = task.space().restricted({"filters": [8, 16]})
    with pytest.raises(UserError) as err:
        seed_genomes(["baselines"], task.baseline_genomes(), space)
    assert str(err.value) == ("search.seed_genomes[0]: outside the search space: filters=32, expected one of "
                              "[8, 16]")
    with pytest.raises(UserError, match="depth 3, expected 1 to 2"):
        seed_genomes(["baselines"], task.baseline_genomes(), task.space().restricted({"depth": [1, 2]}))


def test_a_sweep_plants_each_seed_on_every_value_of_the_named_genes(tmp_path):
    elemnet = make_task("elemnet", {}, tmp_path)
    baselines = elemnet.baseline_genomes()
    space = elemnet.space().restricted({"depth": [1, 8], "inputs": ["fractions", "mat2vec", "magpie"]})
    seeds = seed_genomes([HAND_MLP], baselines, space, ["inputs"])
    hand = baselines[HAND_MLP]
    assert seeds[0] == hand and len(seeds) == 3
    assert [s.training["inputs"] for s in seeds] == ["fractions", "mat2vec", "magpie"]
    assert all(s.layers == hand.layers and {**s.training, "inputs": "fractions"} == hand.training for s in seeds)


@pytest.mark.parametrize("sweep, message", [
    ("inputs", "search.seed_sweep: must be a list of training genes, got 'inputs'"),
    (["colour"], "search.seed_sweep[0]: 'colour' is not a training gene of this space; expected one of"),
])
def test_a_bad_sweep_names_the_entry(task, sweep, message):
    with pytest.raises(UserError) as err:
        seed_genomes(["baselines"], task.baseline_genomes(), task.space(), sweep)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
