"""menndl_py.tasks.ebsd.data: simulated EBSD patterns and the experimental set, the same file from one process or
several MPI ranks, named by its recipe."""
import json

import h5py
import numpy as np
import pytest
from launchers import make_data_on_two_ranks

from menndl_py.errors import UserError
from menndl_py.physics import ebsd, randomization
from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.physics.orientation import disorientation_degrees
from menndl_py.tasks.ebsd import data as ebsd_data
from menndl_py.tasks.ebsd.data import BLOCK, file_name, make_dataset
from menndl_py.tasks.making import item_rng

SMALL = EbsdSettings(pattern_height=24, pattern_width=32)
COUNTS = {"train": BLOCK + 5, "val": 3, "test": 0}
def contents(path):
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: str(v) for k, v in f.attrs.items()}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["source"] = f["experimental"].attrs["source"]
    return out


@pytest.mark.mpi
def test_make_dataset_writes_the_splits_and_the_same_file_under_mpi(tmp_path):
    one = tmp_path / "one" / "ebsd.h5"
    result = make_dataset(one, SMALL, COUNTS, seed=7)
    assert [p.name for p in one.parent.iterdir()] == ["ebsd.h5"]  # no temporary file left
    assert result == {**COUNTS, "experimental": 9}
    data = contents(one)
    recipe = json.loads(data["attrs"]["recipe"])
    assert recipe["settings"] == SMALL.__dict__ and recipe["seed"] == 7 and recipe["counts"] == COUNTS
    for split, n in COUNTS.items():
        assert data[f"{split}/patterns"].shape == (n, 24, 32) and data[f"{split}/patterns"].dtype == np.float32
        assert data[f"{split}/quaternions"].shape == (n, 4) and data[f"{split}/pcs"].shape == (n, 3)
    # the train split's second block is simulate() with the generator of (seed, split, 1)
    sample = ebsd.simulate(SMALL, 5, item_rng(7, "train", 1))
    np.testing.assert_array_equal(data["train/patterns"][BLOCK:], sample.patterns)
    np.testing.assert_array_equal(data["train/quaternions"][BLOCK:], sample.quaternions)
    assert data["experimental/patterns"].shape == (9, 60, 60) and "PyEBSDIndex" in data["source"]
    assert disorientation_degrees(data["experimental/quaternions"], ebsd.experimental()["quaternions"]).max() < 1e-6

    two = tmp_path / "two" / "ebsd.h5"
    two.parent.mkdir()
    results = make_data_on_two_ranks("menndl_py.tasks.ebsd.data", SMALL, two, COUNTS, 7, timeout=180)
    assert results == [[result, result]]
    other = contents(two)
    assert other.keys() == data.keys() and other.pop("attrs") == data.pop("attrs")
    for key in data:
        np.testing.assert_array_equal(other[key], data[key], err_msg=key)


def test_a_failed_run_leaves_no_file(tmp_path, monkeypatch):
    real = ebsd.simulate
    made = []

    def failing(settings, n, generator):
        made.append(1)
        if len(made) == 2:
            raise RuntimeError("killed")
        return real(settings, n, generator)

    monkeypatch.setattr(ebsd_data.ebsd, "simulate", failing)
    with pytest.raises(RuntimeError, match="killed"):
        make_dataset(tmp_path / "ebsd.h5", SMALL, COUNTS, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_the_file_name_changes_with_every_part_of_the_recipe():
    names = {file_name(SMALL, COUNTS, 0), file_name(SMALL, COUNTS, 1), file_name(SMALL, {**COUNTS, "val": 4}, 0),
             file_name(EbsdSettings(pattern_height=24, pattern_width=32, counts=100.0), COUNTS, 0)}
    assert len(names) == 4 and file_name(SMALL, COUNTS, 0) == file_name(SMALL, dict(COUNTS), 0)
    assert file_name(SMALL, COUNTS, 0).startswith("ebsd-") and file_name(SMALL, COUNTS, 0).endswith(".h5")


@pytest.mark.parametrize("counts, seed, message", [
    ({"training": 3}, 0, "unknown data split(s) 'training' (expected train, val, test)"),
    ({"train": -1}, 0, "task.options.train_size: must be an integer >= 0, got -1"),
    ({"val": 2.5}, 0, "task.options.val_size: must be an integer >= 0, got 2.5"),
    ({"train": 3}, -2, "seed: must be an integer >= 0, got -2"),
])
def test_bad_counts_and_seeds_are_one_line_errors(tmp_path, counts, seed, message):
    with pytest.raises(UserError) as error:
        make_dataset(tmp_path / "ebsd.h5", SMALL, counts, seed)
    assert str(error.value) == message and list(tmp_path.iterdir()) == []


RANGES = {"counts": [1000, 4000, "log"], "yield_variation": [0.05, 0.1], "kikuchi_contrast": [0.015, 0.025]}


def test_randomized_training_blocks_draw_their_own_settings_and_leave_the_other_splits_as_they_were(tmp_path):
    ranges = ebsd.check_ranges(SMALL, RANGES)
    counts = {"train": BLOCK + 5, "val": 3, "test": 2}
    plain, varied = tmp_path / "plain.h5", tmp_path / "varied.h5"
    make_dataset(plain, SMALL, counts, seed=7)
    make_dataset(varied, SMALL, counts, seed=7, ranges=ranges)
    data, other = contents(plain), contents(varied)
    assert json.loads(other["attrs"]["recipe"])["randomize"] == {k: [*r[:2], r[2]] for k, r in ranges.items()}
    assert "randomize" not in json.loads(data["attrs"]["recipe"])  # files made before ranges keep their names
    for split in ("val", "test"):
        np.testing.assert_array_equal(other[f"{split}/patterns"], data[f"{split}/patterns"])
    # each training block: its settings drawn first from its generator, then its patterns from the same
    rng = item_rng(7, "train", 1)
    own = randomization.randomized(SMALL, ranges, rng)
    assert own != SMALL and 1000 <= own.counts <= 4000 and 0.05 <= own.yield_variation <= 0.1
    np.testing.assert_array_equal(other["train/patterns"][BLOCK:], ebsd.simulate(own, 5, rng).patterns)
    assert not np.array_equal(other["train/patterns"][BLOCK:], data["train/patterns"][BLOCK:])
    assert file_name(SMALL, counts, 7, ranges=ranges) != file_name(SMALL, counts, 7) \
        == file_name(SMALL, counts, 7, ranges={})


@pytest.mark.parametrize("ranges, message", [
    ({"pattern_width": [32, 40]}, "task.options.randomize.pattern_width: not a randomizable simulator field"),
    ({"counts": [4000, 1000]}, "task.options.randomize.counts: must be [low, high] (numbers, low <= high)"),
    ({"counts": [0.5, 10]}, "task.options.randomize: the ranges reach settings that are not valid "
                            "(task.options.simulator.counts: must be in [1, 1e7], got 0.5)"),
    ([1, 2], "task.options.randomize: must be a mapping of simulator fields to [low, high], got [1, 2]"),
])
def test_bad_ranges_are_one_line_errors_naming_the_field(ranges, message):
    with pytest.raises(UserError) as error:
        ebsd.check_ranges(SMALL, ranges)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
