"""The stem_defects task: options, data per recipe, tiles and shards, class-weighted losses, detection metrics, and a
search end to end whose best network `menndl predict` then runs."""
import subprocess

import h5py
import numpy as np
import pytest
import torch
import yaml

from launchers import MENNDL, mpi_env, mpirun
from menndl_py.errors import UserError
from menndl_py.tasks import make_task
from menndl_py.tasks.stem_defects import tiles, true_defects

OPTIONS = {"train_images": 6, "val_images": 3, "test_images": 3, "tile": 64, "simulator": {"image_size": 128}}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    t = make_task("stem_defects", OPTIONS, tmp_path_factory.mktemp("stem-data"))
    t.make_data()
    t.check_data()
    return t


def one_hot_logits(labels: np.ndarray, classes: int = 5) -> torch.Tensor:
    return 10 * torch.nn.functional.one_hot(torch.from_numpy(labels).long(), classes).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("options, message", [
    ({"loss": "dice"}, "task.options.loss: must be 'cross_entropy' or 'focal', got 'dice'"),
    ({"simulator": {"dose": -1.0}}, "task.options.dose: must be > 0"),
    ({"simulator": {"voltage": 80}}, "task.options.simulator: "),
    ({"tile": 8}, "task.options.tile: must be an integer >= 16, got 8"),
])
def test_bad_options_name_the_key(options, message, tmp_path):
    with pytest.raises(UserError) as err:
        make_task("stem_defects", options, tmp_path)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_each_recipe_has_its_own_data_file(tmp_path):
    a = make_task("stem_defects", OPTIONS, tmp_path)
    assert make_task("stem_defects", dict(OPTIONS), tmp_path).data_path == a.data_path
    assert make_task("stem_defects", {**OPTIONS, "seed": 1}, tmp_path).data_path != a.data_path
    other = {**OPTIONS, "simulator": {"image_size": 128, "dose": 5e4}}
    assert make_task("stem_defects", other, tmp_path).data_path != a.data_path
    with pytest.raises(UserError, match="make it again"):
        a.check_data()


def test_training_tiles_and_whole_validation_images_sharded_without_overlap(task):
    x, y = task.load("train")
    assert x.shape == (6 * 4, 1, 64, 64) and y.shape == (24, 64, 64) and x.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(5))
    xv, yv = task.load("val")
    assert xv.shape == (3, 1, 128, 128)
    assert np.allclose(xv.mean(axis=(1, 2, 3)), 0, atol=1e-4) and np.allclose(xv.std(axis=(1, 2, 3)), 1, atol=1e-3)
    parts = [task.load("train", (r, 2))[0] for r in range(2)]
    assert len(parts[0]) + len(parts[1]) == len(x)
    assert np.array_equal(np.concatenate([parts[0][:4], parts[1][:4]]), np.concatenate([x[:4], x[4:8]]))


def test_tiles_cover_the_image_in_order():
    image = np.arange(2 * 1 * 6 * 4).reshape(2, 1, 6, 4)
    t = tiles(image, 2)
    assert t.shape == (2 * 3 * 2, 1, 2, 2)
    assert np.array_equal(t[1, 0], image[0, 0, 0:2, 2:4]) and np.array_equal(t[6, 0], image[1, 0, 0:2, 0:2])


def test_rare_defect_classes_weigh_more_in_the_loss(task):
    task.load("train")
    w = task._weights
    assert w[0] == 1.0 and np.all(w[1:] > 5)
    _, y = task.load("val")
    perfect = task.loss(one_hot_logits(y), torch.from_numpy(y))
    flat = task.loss(torch.zeros(len(y), 5, *y.shape[1:]), torch.from_numpy(y))
    assert float(perfect) < 1e-3 < float(flat)


def test_focal_loss_down_weights_easy_pixels(tmp_path, task):
    focal = make_task("stem_defects", {**OPTIONS, "loss": "focal"}, task.data_dir)
    focal.load("train")
    _, y = task.load("val")
    target = torch.from_numpy(y)
    logits = 0.5 * one_hot_logits(y) / 10  # right but unsure everywhere
    assert 0 < float(focal.loss(logits, target)) < float(task.loss(logits, target))


def test_metrics_of_a_perfect_and_an_empty_prediction(task):
    _, y = task.load("val")
    perfect = task.metrics(task.metric_sums(one_hot_logits(y), torch.from_numpy(y)))
    assert perfect["defect_f1"] == 1.0 and perfect["mean_iou"] == 1.0
    nothing = task.metrics(task.metric_sums(one_hot_logits(np.zeros_like(y)), torch.from_numpy(y)))
    assert nothing["defect_f1"] == 0.0 and nothing["iou_lattice"] > 0.9
    n_true = sum(len(true_defects(t)) for t in y)
    assert n_true > 0


def test_data_made_under_mpi_is_the_data_made_in_one_process(tmp_path):
    config = {"task": {"name": "stem_defects", "data_dir": "data", "options": OPTIONS}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = mpirun(2, MENNDL, "data", "make", "stem_defects", "--config", "c.yaml", "--data-dir", "mpi",
                  timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    serial = subprocess.run([MENNDL, "data", "make", "stem_defects", "--config", "c.yaml", "--data-dir", "one"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert serial.returncode == 0, serial.stderr
    [a], [b] = list((tmp_path / "mpi").glob("*.h5")), list((tmp_path / "one").glob("*.h5"))
    assert a.name == b.name
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for split in ("train", "val", "test"):
            for name in ("images", "labels", "defects"):
                assert np.array_equal(fa[split][name][()], fb[split][name][()])


def test_a_search_then_predict_with_its_best_network(tmp_path):
    config = {"run": {"name": "s", "directory": "runs"},
              "task": {"name": "stem_defects", "data_dir": "data", "options": OPTIONS},
              "search": {"population": 2, "max_evaluations": 3, "seed": 3, "space": {"depth": [1, 2],
                                                                                      "filters": [4, 8]}},
              "cluster": {"candidate_timeout": 120},
              "training": {"epochs": 1, "eval_batch_size": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([MENNDL, "run", "c.yaml", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=mpi_env())
    assert done.returncode == 0, done.stderr
    assert "validation defect_f1" in done.stdout
    data = next((tmp_path / "data").glob("*.h5"))
    with h5py.File(data, "r") as f:
        n_test = len(f["test"]["images"])
    found = subprocess.run([MENNDL, "predict", "runs/s", str(data), "--dataset", "test/images", "--output",
                            "out.h5", "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env=mpi_env())
    assert found.returncode == 0, found.stderr
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert len(f["maps"]) == n_test and f["maps"]["0000000"].dtype == np.uint8
