"""The stem_defects task's data for transfer: randomized training images of many sizes (stored ragged, tiled one by
one, calibrated at their own pixel sizes) and multislice validation and test sets, each split its own microscope,
made over 2 MPI ranks and resumed after a failure."""
import json

import h5py
import numpy as np
import pytest
import torch
from launchers import PYTHON, mpirun, results_of

from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.physics import multislice
from menndl_py.physics.multislice import Microscope
from menndl_py.physics.stem_sim import StemSettings
from menndl_py.tasks import make_task
from menndl_py.tasks.making import item_rng
from menndl_py.tasks.stem import multislice_data

SPECIMEN = StemSettings(pixel_size=0.3, chalcogen_vacancy_density=0.2, metal_vacancy_density=0.2)
SMALL = Microscope(cells_x=2, cells_y=1, sampling=0.06, prism_interpolation=1)
MICROSCOPE = {"cells_x": 3, "cells_y": 2, "sampling": 0.06, "prism_interpolation": 1, "size_multiple": 8}
OPTIONS = {"train_images": 4, "val_images": 1, "test_images": 1, "tile": 32, "simulator": {"pixel_size": 0.3},
           "randomize": {"image_size": [48, 80], "image_width": [48, 80], "pixel_size": [0.25, 0.4],
                         "chalcogen_contrast": [0.8, 2.0]},
           "multislice": {"val": dict(MICROSCOPE), "test": dict(MICROSCOPE, voltage=60.0, detector_inner=80.0,
                                                                     jitter=0.0)}}
LEVEL = {"filters": 4, "kernel": 3, "convs": 1, "activation": "relu", "norm": "none", "down": "max",
         "up": "nearest", "skip": True, "dropout": 0.0}


def read_all(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in ("val/images", "val/labels", "val/defects")}


@pytest.mark.mpi
def test_multislice_data_on_two_ranks_is_the_data_resumed_in_one_process(tmp_path, monkeypatch):
    script = ("import json, sys\nfrom mpi4py import MPI\nfrom menndl_py.engine.transport import mpi\n"
              "from menndl_py.physics.multislice import Microscope\nfrom menndl_py.physics.stem_sim import "
              "StemSettings\nfrom menndl_py.tasks.stem.multislice_data import make_dataset\n"
              "result = make_dataset(sys.argv[1], StemSettings(**json.loads(sys.argv[2])), "
              "Microscope(**json.loads(sys.argv[3])), 'val', 3, 5, share=mpi.share())\n"
              "everyone = MPI.COMM_WORLD.gather(result, root=0)\n"
              "if MPI.COMM_WORLD.rank == 0:\n    print('RESULT ' + json.dumps(everyone))\n")
    two = tmp_path / "two.h5"
    out = mpirun(2, PYTHON, "-W", "ignore", "-c", script, str(two), json.dumps(SPECIMEN.__dict__),
                 json.dumps(SMALL.__dict__), timeout=240, cwd=tmp_path)
    [[result, same]] = results_of(out)
    assert result == same and result["val"]["images"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.h5"]   # no resume or partial file left

    one, real, calls, failing = tmp_path / "one.h5", multislice_data.simulate, [], [True]

    def fails_second(*args):
        calls.append(1)
        if len(calls) == 2 and failing[0]:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(multislice_data, "simulate", fails_second)
    with pytest.raises(RuntimeError):
        multislice_data.make_dataset(one, SPECIMEN, SMALL, "val", 3, 5)
    assert not one.exists() and (tmp_path / "one.h5.resume").exists()
    calls.clear()
    failing[0] = False
    assert multislice_data.make_dataset(one, SPECIMEN, SMALL, "val", 3, 5) == result
    assert len(calls) == 2   # only the images the failed call did not finish
    first, second = read_all(one), read_all(two)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    sample = multislice.simulate(SPECIMEN, SMALL, item_rng(5, "val", 2))
    np.testing.assert_array_equal(first["val/images"][2], sample.image)
    with h5py.File(one, "r") as f:
        assert f["val"].attrs["source"].startswith("abTEM PRISM")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    t = make_task("stem_defects", OPTIONS, tmp_path_factory.mktemp("transfer-data"))
    t.summary_line = t.make_data()
    t.check_data()
    return t


def test_randomized_training_images_are_stored_ragged_and_tiled_one_by_one(task):
    with h5py.File(task.data_path, "r") as f:
        shapes = f["train"]["shapes"][()]
        drawn = [json.loads(s) for s in f["train"]["settings"][()]]
        assert [len(i) for i in f["train"]["images"][()]] == [h * w for h, w in shapes]
    assert len({tuple(s) for s in shapes}) > 1 and all(48 <= n <= 80 for n in shapes.ravel())
    assert [[d["image_size"], d["image_width"]] for d in drawn] == shapes.tolist()
    x, y = task.load("train")
    assert len(x) == sum((h // 32) * (w // 32) for h, w in shapes) and x.shape[1:] == (1, 32, 32)
    assert y.shape == (len(x), 32, 32) and y.dtype == np.int64
    _, _, radii = task._calibration_set((0, 1))
    np.testing.assert_allclose(radii, [task.options.match_radius / d["pixel_size"] for d in drawn])
    model = task.space().build(Genome([LEVEL, dict(LEVEL, filters=8)], {"learning_rate": 1e-3, "batch_size": 4,
                                                                         "optimizer": "adam", "weight_decay": 0.0}))
    counts = task._threshold_counts(model, (0, 1), torch.device("cpu"), 4)
    true = sum(len(t) for t in task._calibration_set((0, 1))[1])
    assert counts[:, 0, 0, [0, 2]].sum() == true   # every true defect found or missed, images of every size


def test_validation_and_test_come_from_their_own_microscopes(task):
    sources = task.data_sources()
    assert sources["train"].startswith("stem_sim (fast simulator, randomized: chalcogen_contrast in [0.8, 2]")
    assert "80 kV" in sources["val"] and "60 kV" in sources["test"] and "HAADF 80-200 mrad" in sources["test"]
    assert "abTEM PRISM" in task.summary_line and "test: abTEM" in task.summary_line
    for split in ("val", "test"):
        x, y = task.load(split)
        assert x.shape == (1, 1, 40, 32) and y.shape == (1, 40, 32)
        assert task.multislice_path(split).exists()
    with h5py.File(task.data_path, "r") as f:
        assert not np.array_equal(f["val"]["images"][0], f["test"]["images"][0])
    again = make_task("stem_defects", {**OPTIONS, "train_images": 5}, task.data_dir)
    assert again.data_path != task.data_path and again.multislice_path("test") == task.multislice_path("test")


@pytest.mark.parametrize("multislice, message", [
    ({"train": {}}, "task.options.multislice: must map 'val' and/or 'test'"),
    ({"test": {"voltage": 5.0}}, "task.options.multislice.test.voltage: must be >= 10"),
    ({"val": {"pixel_size": 0.2}}, "task.options.multislice.val.pixel_size: unknown"),
    ({"val": {"dose": -1.0}}, "task.options.multislice.val.dose: must be > 0"),
])
def test_bad_multislice_settings_name_the_key(multislice, message, tmp_path):
    with pytest.raises(UserError) as info:
        make_task("stem_defects", {**OPTIONS, "multislice": multislice}, tmp_path)
    assert str(info.value).startswith(message), str(info.value)


def test_a_tile_larger_than_the_smallest_randomized_image_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"task.options.tile: 64 is larger than the smallest training image \(48"):
        make_task("stem_defects", {**OPTIONS, "tile": 64}, tmp_path)
