"""menndl_py.tasks.stem.data: the simulated data set, the same file from one process or several MPI ranks."""
import json

import h5py
import numpy as np
import pytest
from launchers import make_data_on_two_ranks

from menndl_py.errors import UserError
from menndl_py.physics import stem_sim
from menndl_py.physics.stem_sim import CLASSES, StemSettings, simulate
from menndl_py.tasks.making import item_rng
from menndl_py.tasks.stem.data import make_dataset

SMALL = StemSettings(image_size=64, chalcogen_vacancy_density=0.05, dopant_density=0.05)
COUNTS = {"train": 20, "val": 3, "test": 2}
def contents(path):
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.mpi
def test_make_dataset_writes_the_splits_and_the_same_file_under_mpi(tmp_path):
    one = tmp_path / "one" / "stem.h5"
    result = make_dataset(one, SMALL, COUNTS, seed=7)
    assert [p.name for p in one.parent.iterdir()] == ["stem.h5"]  # no temporary file left
    data = contents(one)
    assert json.loads(data["attrs"]["settings"]) == json.loads(json.dumps(SMALL.__dict__))
    assert data["attrs"]["classes"] == list(CLASSES) and data["attrs"]["seed"] == 7
    for split, n in COUNTS.items():
        assert data[f"{split}/images"].shape == (n, 64, 64) and data[f"{split}/labels"].dtype == np.uint8
        defects = data[f"{split}/defects"]
        assert defects.shape[1] == 4 and np.all(np.diff(defects[:, 0]) >= 0)
        found = np.bincount(defects[:, 3].astype(int), minlength=len(CLASSES))
        assert result[split] == {"images": n, **{name: int(found[c]) for c, name in enumerate(CLASSES) if c}}
        i = n - 1   # image i is simulate() with the generator of (seed, split, i)
        sample = simulate(SMALL, item_rng(7, split, i))
        np.testing.assert_array_equal(data[f"{split}/images"][i], sample.image)
        np.testing.assert_array_equal(defects[defects[:, 0] == i, 1:], sample.defects)
    assert sum(result["train"].values()) > COUNTS["train"]   # some defects were drawn

    two = tmp_path / "two" / "stem.h5"
    two.parent.mkdir()
    results = make_data_on_two_ranks("menndl_py.tasks.stem.data", SMALL, two, COUNTS, 7, timeout=120)
    assert results == [[result, result]]
    other = contents(two)
    assert other.keys() == data.keys() and other.pop("attrs") == data.pop("attrs")
    for key in data:
        np.testing.assert_array_equal(other[key], data[key], err_msg=key)


def test_a_failed_run_leaves_no_file(tmp_path, monkeypatch):
    real = stem_sim.simulate
    made = []

    def failing(settings, generator):
        made.append(1)
        if len(made) == 3:
            raise RuntimeError("killed")
        return real(settings, generator)

    monkeypatch.setattr(stem_sim, "simulate", failing)
    path = tmp_path / "stem.h5"
    with pytest.raises(RuntimeError, match="killed"):
        make_dataset(path, SMALL, COUNTS, seed=1)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


@pytest.mark.parametrize("counts, seed, words", [
    ({"training": 3}, 0, "unknown data split"), ({"train": -1}, 0, "train_size"), ({"train": 1}, -2, "seed"),
])
def test_make_dataset_rejects_bad_arguments(tmp_path, counts, seed, words):
    with pytest.raises(UserError, match=words):
        make_dataset(tmp_path / "x.h5", SMALL, counts, seed=seed)
    assert not list(tmp_path.iterdir())
