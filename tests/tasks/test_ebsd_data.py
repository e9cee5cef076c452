"""menndl_py.tasks.ebsd.data: simulated EBSD patterns and the experimental set, the same file from one process or
several MPI ranks, named by its recipe."""
import json

import h5py
import numpy as np
import pytest
from launchers import make_data_on_two_ranks

from menndl_py.errors import UserError
from menndl_py.physics import ebsd
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
