"""The stem_defects task's data for transfer: randomized training images of many sizes (stored ragged, tiled one by
one, calibrated at their own pixel sizes) and multislice validation and test sets, each split its own microscope,
made over 2 MPI ranks and resumed after a failure; multislice training images of other microscopes after the
simulated ones, and validation images of more microscopes after the validation microscope's."""
import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch
import yaml
from launchers import MENNDL, PYTHON, mpirun, results_of

from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.physics import multislice
from menndl_py.physics.multislice import Microscope
from menndl_py.physics.stem_sim import StemSettings
from menndl_py.tasks import make_task
from menndl_py.tasks.making import item_rng
from menndl_py.tasks.stem import multislice_data
from menndl_py.tasks.stem.task import standardize

SPECIMEN = StemSettings(pixel_size=0.3, chalcogen_vacancy_density=0.2, metal_vacancy_density=0.2)
SMALL = Microscope(cells_x=2, cells_y=1, sampling=0.06, prism_interpolation=1)
MICROSCOPE = {"cells_x": 3, "cells_y": 2, "sampling": 0.06, "prism_interpolation": 1, "size_multiple": 8}
OPTIONS = {"train_images": 4, "val_images": 1, "test_images": 1, "tile": 32, "simulator": {"pixel_size": 0.3},
           "randomize": {"image_size": [48, 80], "image_width": [48, 80], "pixel_size": [0.25, 0.4],
                         "chalcogen_contrast": [0.8, 2.0]},
           "multislice": {"val": dict(MICROSCOPE), "test": dict(MICROSCOPE, voltage=60.0, detector_inner=80.0,
                                                                     jitter=0.0)}}
# two training microscopes, neither the validation's nor the test's: 2 images of C, 1 of D (at a lower dose)
TRAINING = [dict(MICROSCOPE, voltage=120.0, convergence=28.0, detector_inner=70.0, detector_outer=180.0, count=2),
            dict(MICROSCOPE, voltage=200.0, convergence=20.0, detector_inner=50.0, detector_outer=130.0,
                 dose=500.0, count=1)]
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
    _, _, radii = task.calibration_set((0, 1))
    np.testing.assert_allclose(radii, [task.options.match_radius / d["pixel_size"] for d in drawn])
    model = task.space().build(Genome([LEVEL, dict(LEVEL, filters=8)], {"learning_rate": 1e-3, "batch_size": 4,
                                                                         "optimizer": "adam", "weight_decay": 0.0}))
    counts = task._threshold_counts(model, (0, 1), torch.device("cpu"), 4)
    true = sum(len(t) for t in task.calibration_set((0, 1))[1])
    assert counts[:, 0, [0, 2]].sum() == true   # every true defect found or missed, images of every size


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
    ({"training": {}}, "task.options.multislice: must map 'val' and/or 'test'"),
    ({"train": {"voltage": 200.0}}, "task.options.multislice.train: must be a list"),
    ({"train": [dict(TRAINING[0], probe=1.0)]}, "task.options.multislice.train[0].probe: unknown"),
    ({"train": [TRAINING[0], dict(TRAINING[1], count=0)]}, "task.options.multislice.train[1].count: must be an "
                                                           "integer in [1, 100000]"),
    ({"train": [dict(TRAINING[0], count="ten")]}, "task.options.multislice.train[0].count: must be an integer"),
    ({"train": [{k: v for k, v in TRAINING[0].items() if k != "count"}]},
     "task.options.multislice.train[0].count: must be an integer"),
    ({"train": [dict(TRAINING[0], detector_outer=400.0)]},
     "task.options.multislice.train[0].detector_outer: 400 mrad is beyond"),
    ({**OPTIONS["multislice"], "train": [TRAINING[0], dict(OPTIONS["multislice"]["test"], defocus=20.0, count=1)]},
     "task.options.multislice.train[1]: has the test microscope's voltage, convergence, detector_inner"),
    ({"more_val": [dict(TRAINING[0], count=1)]}, "task.options.multislice.more_val: needs multislice.val"),
    ({**OPTIONS["multislice"], "more_val": [dict(TRAINING[0], cells_x=2, count=1)]},
     "task.options.multislice.more_val[0]: makes 40×24 images, multislice.val 40×32"),
    ({**OPTIONS["multislice"], "more_val": [dict(OPTIONS["multislice"]["test"], count=1)]},
     "task.options.multislice.more_val[0]: has the test microscope's voltage"),
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


def test_a_tile_larger_than_the_multislice_training_images_is_refused(tmp_path):
    options = {**OPTIONS, "tile": 40, "multislice": {"train": TRAINING}}
    with pytest.raises(UserError, match=r"task.options.tile: 40 is larger than the smallest training image \(32"):
        make_task("stem_defects", options, tmp_path)


@pytest.fixture(scope="module")
def trained(task):
    """The task's data with the TRAINING microscopes' images after the simulated ones (val and test files reused),
    two rolled copies of each per epoch."""
    options = {**OPTIONS, "multislice_repeat": 2, "multislice": {**OPTIONS["multislice"], "train": TRAINING}}
    t = make_task("stem_defects", options, task.data_dir)
    t.summary_line = t.make_data()
    t.check_data()
    return t


def test_multislice_training_images_follow_the_simulated_ones_with_their_labels(task, trained):
    n = OPTIONS["train_images"]
    with h5py.File(trained.data_path, "r") as f, h5py.File(task.data_path, "r") as before:
        train = f["train"]
        shapes, defects = train["shapes"][()], train["defects"][()]
        assert len(shapes) == n + 3 and shapes[n:].tolist() == [[40, 32]] * 3
        np.testing.assert_array_equal(shapes[:n], before["train"]["shapes"][()])
        for i in range(n):   # the simulated images are those of the data file without multislice training
            np.testing.assert_array_equal(train["images"][i], before["train"]["images"][i])
        row = n
        for k, block in enumerate(TRAINING):
            with h5py.File(trained.multislice_path("train", k), "r") as made:
                group = made["train"]
                pixel = math.sqrt(np.prod(group.attrs["pixel_size"]))
                for i in range(block["count"]):
                    np.testing.assert_array_equal(train["images"][row].reshape(40, 32), group["images"][i])
                    np.testing.assert_array_equal(train["labels"][row].reshape(40, 32), group["labels"][i])
                    np.testing.assert_array_equal(defects[defects[:, 0] == row, 1:],
                                                  group["defects"][()][group["defects"][:, 0] == i, 1:])
                    own = json.loads(train["settings"][row])
                    assert own["pixel_size"] == pytest.approx(pixel) and own["dose"] == block.get("dose", 100000.0)
                    row += 1
        source = train.attrs["source"]
        image = train["images"][n + 2].reshape(40, 32)
    assert (defects[:, 0] >= n).sum() > 0   # the tiny cells do hold defects
    assert source.startswith("images 0-3: stem_sim (fast simulator, randomized: ")
    assert "; images 4-5: abTEM PRISM (interpolation 1): 120 kV" in source and "; image 6: abTEM PRISM" in source
    assert "train: images 0-3" in trained.summary_line and "train[1] made in" in trained.summary_line
    settings, microscope, _ = trained.multislice_lists["train"][1]
    again = multislice.simulate(settings, microscope, item_rng(0, "train", 0, 2))   # block 1: its own stream
    np.testing.assert_array_equal(image, again.image)


def test_the_data_file_is_named_by_its_training_microscopes_each_file_by_its_own(task, trained):
    assert trained.data_path != task.data_path
    assert [trained.multislice_path(s) for s in ("val", "test")] == [task.multislice_path(s) for s in ("val", "test")]
    paths = [trained.multislice_path("train", k) for k in range(2)]
    assert all(p.exists() for p in paths) and paths[0] != paths[1]
    more = make_task("stem_defects", {**OPTIONS, "multislice": {**OPTIONS["multislice"], "train": [
        TRAINING[0], dict(TRAINING[1], count=2)]}}, task.data_dir)
    assert more.multislice_path("train", 0) == paths[0] and more.multislice_path("train", 1) != paths[1]
    assert more.data_path not in (task.data_path, trained.data_path)
    same = make_task("stem_defects", {**OPTIONS, "multislice": {**OPTIONS["multislice"], "train": TRAINING}},
                     task.data_dir)
    assert same.data_path == trained.data_path   # the repeat is how the images are used, not what they are


def test_multislice_training_images_give_rolled_tiles_and_calibrate_detection(trained):
    n = OPTIONS["train_images"]
    with h5py.File(trained.data_path, "r") as f:
        shapes = f["train"]["shapes"][()]
        image, labels = f["train"]["images"][n].reshape(40, 32), f["train"]["labels"][n].reshape(40, 32)
        pixels = [json.loads(s)["pixel_size"] for s in f["train"]["settings"][n:]]
    x, y = trained.load("train")
    simulated = sum((h // 32) * (w // 32) for h, w in shapes[:n])
    assert len(x) == len(y) == simulated + 2 * 3   # each 40×32 image: one 32×32 tile, in 2 rolled copies
    np.testing.assert_array_equal(x[simulated, 0], standardize(image)[:32, :32])
    np.testing.assert_array_equal(x[simulated + 1, 0], np.roll(standardize(image), (20, 16), (0, 1))[:32, :32])
    np.testing.assert_array_equal(y[simulated + 1], np.roll(labels, (20, 16), (0, 1))[:32, :32])
    assert trained._calibration_rows().tolist() == [n, n + 1, n + 2]
    images, _ = trained._calibration_images()
    assert [i.shape for i in images] == [(40, 32)] * 3
    _, _, radii = trained.calibration_set((0, 1))
    np.testing.assert_allclose(radii, [trained.options.match_radius / p for p in pixels])


@pytest.mark.mpi
def test_a_multislice_training_image_made_on_two_ranks_by_menndl_data_make(tmp_path, task, trained):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("val", "test"):   # made already: reused, not made again
        shutil.copy(task.multislice_path(split), data)
    options = {**OPTIONS, "multislice": {**OPTIONS["multislice"], "train": [dict(TRAINING[0], count=1)]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"task": {"name": "stem_defects", "data_dir": "data",
                                                               "options": options}}))
    done = mpirun(2, MENNDL, "data", "make", "stem_defects", "--config", "c.yaml", timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train[0] made in" in done.stdout and "val made" not in done.stdout
    made = make_task("stem_defects", options, data)
    assert sorted(p.name for p in data.iterdir()) == sorted(
        p.name for p in (made.data_path, made.multislice_path("train", 0), task.multislice_path("val"),
                         task.multislice_path("test")))
    n = OPTIONS["train_images"]
    with h5py.File(made.data_path, "r") as f, h5py.File(trained.data_path, "r") as g:
        assert len(f["train"]["images"]) == n + 1
        for i in range(n + 1):   # the same image i: the simulated ones, then block 0's first
            np.testing.assert_array_equal(f["train"]["images"][i], g["train"]["images"][i])
            np.testing.assert_array_equal(f["train"]["labels"][i], g["train"]["labels"][i])
        for split in ("val", "test"):
            np.testing.assert_array_equal(f[split]["images"][()], g[split]["images"][()])


def test_validation_images_of_more_microscopes_follow_the_validation_microscopes(task):
    options = {**OPTIONS, "multislice": {**OPTIONS["multislice"], "more_val": TRAINING}}
    both = make_task("stem_defects", options, task.data_dir)
    summary = both.make_data()
    both.check_data()
    assert both.data_path != task.data_path and both.multislice_path("val") == task.multislice_path("val")
    assert "val[0] made in" in summary and "val[1] made in" in summary
    files = [task.multislice_path("val")] + [both.multislice_path("val", k) for k in range(2)]
    with h5py.File(both.data_path, "r") as f:
        val = f["val"]
        defects, row = val["defects"][()], 0
        assert val["images"].shape == (4, 40, 32) and "shapes" not in val
        for path in files:
            with h5py.File(path, "r") as made:
                group = made["val"]
                for i in range(len(group["images"])):
                    np.testing.assert_array_equal(val["images"][row], group["images"][i])
                    np.testing.assert_array_equal(val["labels"][row], group["labels"][i])
                    np.testing.assert_array_equal(defects[defects[:, 0] == row, 1:],
                                                  group["defects"][()][group["defects"][:, 0] == i, 1:])
                    row += 1
        source, last = val.attrs["source"], val["images"][3]
        with h5py.File(task.data_path, "r") as before:   # the other splits as without more_val
            np.testing.assert_array_equal(f["test"]["images"][()], before["test"]["images"][()])
            for i in range(OPTIONS["train_images"]):
                np.testing.assert_array_equal(f["train"]["images"][i], before["train"]["images"][i])
    assert source.startswith("image 0: abTEM PRISM") and "; images 1-2: abTEM PRISM (interpolation 1): 120 kV" in source
    x, y = both.load("val")
    assert x.shape == (4, 1, 40, 32) and y.shape == (4, 40, 32)
    settings, microscope, _ = both.multislice_lists["val"][1]
    again = multislice.simulate(settings, microscope, item_rng(0, "val", 0, 2))   # block 1: its own stream
    np.testing.assert_array_equal(last, again.image)
