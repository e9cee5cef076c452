"""The stem_defects task: options, data per recipe, tiles and shards, class-weighted losses, detection metrics,
detection thresholds calibrated on training images (alone and over a group's ranks), and a search end to end whose
best network is retrained and `menndl predict` then runs, each with the network's own thresholds."""
import json
import subprocess
import threading

import h5py
import numpy as np
import pytest
import torch
import yaml
from launchers import MENNDL, mpi_env, mpirun

from menndl_py import config as config_module
from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.physics import stem_analysis
from menndl_py.physics.stem_analysis import THRESHOLD_GRID, DetectionRule
from menndl_py.rundir.networks import read_record as network_record
from menndl_py.rundir.networks import score_on_test
from menndl_py.tasks import make_task
from menndl_py.tasks.stem.task import standardize, tiles, true_defects
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import Budget, Trainer

OPTIONS = {"train_images": 6, "val_images": 3, "test_images": 3, "tile": 64, "simulator": {"image_size": 128}}
LEVEL = {"filters": 8, "kernel": 3, "convs": 1, "activation": "relu", "norm": "batch", "down": "max",
         "up": "nearest", "skip": True, "dropout": 0.0}
GENOME = Genome([LEVEL, dict(LEVEL, filters=12)], {"learning_rate": 3e-3, "batch_size": 4, "optimizer": "adam",
                                                   "weight_decay": 0.0})


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
    ({"tile": 8}, "task.options.tile: must be an integer >= 16 and <= 4096, got 8"),
    ({"train_images": 10**12}, "task.options.train_images: must be an integer >= 1 and <= 1000000, got 1000000000000"),
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


def test_flips_mirror_tiles_and_labels_alike_and_keep_rows_rows(task):
    x, y = (torch.from_numpy(a) for a in task.load("train"))
    assert task.augment(x, y, torch.Generator().manual_seed(0)) == (x, y)  # off by default
    flipping = make_task("stem_defects", {**OPTIONS, "flips": True}, task.data_dir)
    fx, fy = flipping.augment(x, y, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(len(x)):
        kind = next(k for k, dims in {"none": (), "rows": (-2,), "columns": (-1,), "both": (-2, -1)}.items()
                    if torch.equal(fx[i], x[i].flip(dims)) and torch.equal(fy[i], y[i].flip(dims)))
        seen.add(kind)
        # a scan row of the input stays one row (reversed or not) of the flipped tile
        assert any(torch.equal(fx[i, 0, 0], x[i, 0, r].flip(d)) for r in (0, -1) for d in ((), (-1,)))
    assert seen == {"none", "rows", "columns", "both"}  # every one of the four turns up in a training split


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


@pytest.fixture(scope="module")
def evaluated(task, cpu):
    """A task of its own (it keeps its network's rule), the trainer and the outcome of a short training."""
    calibrated = make_task("stem_defects", OPTIONS, task.data_dir)
    data = {split: tuple(torch.as_tensor(a) for a in calibrated.load(split)) for split in ("train", "val")}
    trainer = Trainer(calibrated, calibrated.space(), LocalGroup(), data, Budget(3, None, 300.0, 4), device=cpu)
    return calibrated, trainer, calibrated.evaluate(GENOME, trainer)


def probabilities(model, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(standardize(images)[:, None])), 1).numpy()


def test_evaluate_scores_validation_with_the_rule_best_on_training_images(evaluated):
    task, trainer, outcome = evaluated
    assert outcome.status == "ok", outcome.message
    rule, names = task.rule, task.class_names[1:]
    assert rule is not None
    assert {k: outcome.metrics[k] for k in task.rule_record()} == {
        **{f"threshold_{n}": t for n, t in zip(names, rule.thresholds)}, "smoothing": task.smoothing_px}
    with h5py.File(task.data_path, "r") as f:
        images, labels = f["train"]["images"][()], f["train"]["labels"][()]
    p, truth = probabilities(outcome.model, images), [true_defects(t) for t in labels]

    def train_f1(c: int, threshold: float) -> float:
        one = DetectionRule((threshold,) * 4, task.smoothing_px)
        tp, fp, fn = sum(stem_analysis.match_counts(stem_analysis.threshold_defects(q, one), t, task.radius_px, 5)
                         for q, t in zip(p, truth))[c - 1]
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0

    for c in range(1, 5):  # no rule of the grid does better on the training images
        chosen = train_f1(c, rule.thresholds[c - 1])
        assert all(train_f1(c, t) <= chosen for t in THRESHOLD_GRID), names[c - 1]
    x, y = trainer.data["val"]
    p = probabilities(outcome.model, x[:, 0].numpy())
    counts = sum(stem_analysis.match_counts(stem_analysis.threshold_defects(q, rule), true_defects(t),
                                            task.radius_px, 5) for q, t in zip(p, y.numpy()))
    val_f1 = stem_analysis.f1_scores(counts, names)["defect_f1"]
    assert outcome.fitness == outcome.metrics["val_defect_f1"] == pytest.approx(val_f1)


class ThreadGroup:
    """One rank of a group whose ranks are threads of this process: `sum` adds every rank's tensor and `max` takes
    their largest, as Horovod's allreduce does (a barrier with a time-out, so a rank left waiting fails the test
    instead of hanging it)."""

    def __init__(self, rank: int, size: int, barrier: threading.Barrier, slots: list):
        self.rank, self.size, self.barrier, self.slots = rank, size, barrier, slots

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._reduce(tensor, sum)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._reduce(tensor, lambda tensors: torch.stack(tensors).amax(0))

    def _reduce(self, tensor: torch.Tensor, combine) -> torch.Tensor:
        self.slots[self.rank] = tensor
        self.barrier.wait()
        total = combine(self.slots)
        self.barrier.wait()
        return total


class ShardOnly(LocalGroup):
    """A rank of a group of two that does not sum: the rule of its own share of the images."""

    size = 2

    def __init__(self, rank: int):
        self.rank = rank


def test_every_rank_of_a_group_picks_the_rule_of_all_calibration_images(evaluated, cpu):
    task, _, outcome = evaluated
    alone = task.calibrate(outcome.model, LocalGroup(), cpu, 2)
    barrier, slots, rules = threading.Barrier(2, timeout=120), [None, None], [None, None]

    def rank(r: int) -> None:
        rules[r] = task.calibrate(outcome.model, ThreadGroup(r, 2, barrier, slots), cpu, 2)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert rules[0] == rules[1] == alone == task.rule
    shares = [task.calibrate(outcome.model, ShardOnly(r), cpu, 2) for r in range(2)]
    assert shares[0] != shares[1]  # each share alone would choose otherwise: the sum is what agrees


def test_a_recorded_rule_is_taken_up_and_its_absence_noted(tmp_path, task):
    rule = DetectionRule((0.1, 0.2, 0.3, 0.9), 1.25)
    other = make_task("stem_defects", OPTIONS, task.data_dir)
    other.rule = rule
    (tmp_path / "result.json").write_text(json.dumps({f"m:{k}": v for k, v in other.rule_record().items()}))
    other.rule = None
    assert other.load_calibration(network_record(tmp_path)) == "" and other.rule == rule
    note = other.load_calibration({"val_defect_f1": 0.5})
    assert other.rule is None and note.startswith("no calibrated detection rule") and "\n" not in note


@pytest.mark.mpi
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


@pytest.mark.mpi
def test_a_search_retrain_and_predict_each_with_the_network_s_own_thresholds(tmp_path, monkeypatch):
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
    best = network_record(tmp_path / "runs" / "s" / "best")
    assert {"threshold_dopant", "smoothing"} <= set(best)
    cfg = config_module.load(tmp_path / "runs" / "s" / "config.yaml")
    task = make_task("stem_defects", OPTIONS, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    space = task.space().restricted(cfg.search.space)
    test = score_on_test(task, tmp_path / "runs" / "s" / "best", space, cfg.training.eval_batch_size, print)
    # the search's test score is that of the best network's own rule
    assert task.rule_record() == {k: best[k] for k in task.rule_record()}
    assert json.loads((tmp_path / "runs" / "s" / "run.json").read_text())["best_test"] == test
    retrained = subprocess.run([MENNDL, "retrain", "runs/s", "--budget", "5", "--epochs", "1"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300, env=mpi_env())
    assert retrained.returncode == 0, retrained.stderr
    final = json.loads((tmp_path / "runs" / "s" / "final" / "result.json").read_text())
    assert set(task.rule_record()) <= set(final) and "test_defect_f1" in final
    data = next((tmp_path / "data").glob("*.h5"))
    with h5py.File(data, "r") as f:
        n_test = len(f["test"]["images"])
    found = subprocess.run([MENNDL, "predict", "runs/s", str(data), "--dataset", "test/images", "--output",
                            "out.h5", "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env=mpi_env())
    assert found.returncode == 0, found.stderr
    assert "note" not in found.stderr
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert len(f["maps"]) == n_test and f["maps"]["0000000"].dtype == np.uint8
