"""The `images` task on users' files: stacks in HDF5, npy and folders with CSV labels, shards of the splits,
standardisation inside the network, predict's methods, one-line errors for bad data (also through the CLI), and a
short real search that beats the reference."""
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from launchers import menndl, one_line_error
from PIL import Image

from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.tasks import make_task
from menndl_py.tasks.base import SkipImage
from menndl_py.tasks.files.stacks import Rescale, Standardise

CONV = {"filters": 8, "kernel": 3, "convs": 1, "norm": "batch", "activation": "relu", "pool": "max",
        "dropout": 0.0, "dense": 0}
GENOME = Genome([CONV, dict(CONV, filters=16), dict(CONV, dense=32)],
                {"learning_rate": 3e-3, "batch_size": 16, "optimizer": "adam", "weight_decay": 0.0})


def stripes(n: int = 80, side: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of stripes across (label 1) or along (label 0) the rows, at random phases, in noise: no linear map
    of the pixels tells them apart, a small conv net does."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:side, :side]
    across = np.where(labels[:, None, None] == 1, xx, yy)
    images = 100 + 20 * np.sin(1.3 * across + rng.uniform(0, 2 * np.pi, (n, 1, 1))) + rng.normal(0, 6, (n, side, side))
    return images.astype(np.float32), labels


@pytest.fixture
def stripes_h5(tmp_path):
    images, labels = stripes()
    path = tmp_path / "stripes.h5"
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["kind"] = np.array(["along", "across"])[labels].astype("S")
        f["width"] = labels * 2.0 + 1.0
    return path


def test_loads_shard_the_splits_and_read_labels_in_order(stripes_h5):
    task = make_task("images", {"path": str(stripes_h5), "labels": "kind"})
    task.check_data()
    assert task.class_names == ("across", "along") and task.stack.dims == 2 and task.stack.shape == (16, 16)
    images, labels = stripes()
    for split in ("train", "val", "test"):
        rows = task.splits[split]
        parts = [task.load(split, (rank, 3)) for rank in range(3)]
        assert sum(len(x) for x, _ in parts) == len(rows)
        for rank, (x, y) in enumerate(parts):
            np.testing.assert_array_equal(x[:, 0], images[rows[rank::3]])
            np.testing.assert_array_equal(y, 1 - labels[rows[rank::3]])  # "across" sorts first


def test_standardisation_and_the_target_scale_live_in_the_network(stripes_h5):
    task = make_task("images", {"path": str(stripes_h5), "labels": "width", "kind": "regression"})
    model = task.space().build(GENOME).eval()
    assert isinstance(model[0], Standardise) and isinstance(model[-1], Rescale)
    mean, std = task._target_scale
    assert {"2.mean", "2.std"} <= set(model.state_dict()) and float(model[-1].mean) == pytest.approx(mean)
    x = torch.from_numpy(task.load("val")[0])
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(3 * x - 40), rtol=1e-4, atol=1e-4)  # raw values in
    assert task.metric == "mae" and not task.higher_is_better


def test_folder_of_pngs_with_labels_matched_by_file_name(tmp_path):
    images, labels = stripes(n=24)
    folder = tmp_path / "pngs"
    folder.mkdir()
    names = [f"img{i:03d}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        Image.fromarray(image.astype(np.uint8)).save(folder / name)
    order = np.random.default_rng(1).permutation(len(names))
    pd.DataFrame({"file": np.array(names)[order], "stripes": labels[order]}).to_csv(tmp_path / "l.csv", index=False)
    task = make_task("images", {"path": str(folder), "labels_path": str(tmp_path / "l.csv"),
                                "label_column": "stripes"})
    task.check_data()
    np.testing.assert_array_equal(task.targets, labels)
    x, _ = task.load("train")
    np.testing.assert_array_equal(x[:, 0], images[task.splits["train"]].astype(np.uint8))


def test_3d_volumes_from_npy_and_predict_columns(tmp_path):
    volumes = np.random.default_rng(0).random((20, 8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", volumes)
    pd.DataFrame({"label": volumes.mean(axis=(1, 2, 3))}).to_csv(tmp_path / "v.csv", index=False)
    task = make_task("images", {"path": str(tmp_path / "v.npy"), "labels_path": str(tmp_path / "v.csv"),
                                "kind": "regression", "fitness": "rmse"})
    task.check_data()
    assert task.stack.dims == 3 and task.space().input_shape == (1, 8, 8, 8) and task.metric == "rmse"
    model = task.space().build(GENOME).eval()
    x = np.stack([task.prepare_image(v, GENOME) for v in volumes[:3]])
    with torch.no_grad():
        columns = task.output_columns(model(torch.from_numpy(x)))
    assert list(columns) == ["predicted_label"] and columns["predicted_label"].shape == (3,)
    for bad, words in [(volumes[0, 0], "expected a 3-D single-channel volume"), (volumes[0, :4], "the network takes"),
                       (np.full((8, 8, 8), np.nan), "NaN")]:
        with pytest.raises(SkipImage, match=words):
            task.prepare_image(bad, GENOME)


def test_classification_columns_are_class_names_and_probabilities(stripes_h5):
    task = make_task("images", {"path": str(stripes_h5), "labels": "kind"})
    columns = task.output_columns(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    assert list(columns["predicted_class"]) == ["across", "along"]
    np.testing.assert_allclose(columns["probability"], [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-1))], rtol=1e-6)
    io = task.network_io(GENOME)
    assert io["input"]["shape"] == [None, 1, 16, 16] and io["input"]["normalisation"].startswith("none: raw pixel")


def bad_case(tmp_path, case):
    """(options, expected words) of one kind of bad data, written under tmp_path."""
    images, labels = stripes(n=30)
    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["images"] = images
        f["labels"] = labels
        f["few"] = labels[:20]
        f["same"] = np.zeros(30)
        f["nan"] = np.where(np.arange(30) == 4, np.nan, 1.0)
        bad = images.copy()
        bad[7, 3, 3] = np.inf
        f["inf_images"] = bad
        f["rgb"] = np.zeros((30, 3, 8, 8))
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((8, 8 + (i == 2)), np.uint8)).save(folder / f"{i}.png")
    pd.DataFrame({"label": ["a", "b", "a", "x7"]}).to_csv(tmp_path / "l.csv", index=False)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(corrupt / "0.png")
    (corrupt / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    pd.DataFrame({"label": ["a", "b"]}).to_csv(tmp_path / "two.csv", index=False)
    return {
        "missing file": ({"path": str(tmp_path / "nope.h5"), "labels": "labels"}, f"{tmp_path / 'nope.h5'}: no such"),
        "missing dataset": ({"path": str(h5), "dataset": "imgs", "labels": "labels"},
                            f"{h5}: no dataset 'imgs' (it holds"),
        "corrupt image": ({"path": str(corrupt), "labels_path": str(tmp_path / "two.csv")},
                          f"{corrupt / '1.png'}: cannot read"),
        "shapes differ": ({"path": str(folder), "labels_path": str(tmp_path / "l.csv")},
                          f"{folder / '2.png'}: shape (8, 9) differs from the first image's (8, 8)"),
        "wrong dims": ({"path": str(h5), "dataset": "rgb", "labels": "labels", "dims": 2},
                       f"{h5}:/rgb: shape (30, 3, 8, 8) does not hold 2-D single-channel images"),
        "inf pixels": ({"path": str(h5), "dataset": "inf_images", "labels": "labels"},
                       f"{h5}:/inf_images[7]: holds NaN or infinite values"),
        "labels file missing": ({"path": str(h5), "labels_path": str(tmp_path / "none.csv")},
                                f"{tmp_path / 'none.csv'}: no such labels file"),
        "label count": ({"path": str(h5), "labels": "few"}, f"{h5}:/few: 20 labels for 30 images"),
        "nan regression label": ({"path": str(h5), "labels": "nan", "kind": "regression"},
                                 f"{h5}:/nan: label nan of image {h5}:/images[4] is not a finite number"),
        "non-numeric label": ({"path": str(folder), "labels_path": str(tmp_path / "l.csv"), "kind": "regression",
                               "dims": 2}, "label 'a' of image"),
        "one class": ({"path": str(h5), "labels": "same"}, f"{h5}:/same: every image has the label 0.0; "
                                                           "classification needs at least 2 classes"),
    }[case]


CASES = ["missing file", "missing dataset", "corrupt image", "shapes differ", "wrong dims", "inf pixels",
         "labels file missing", "label count", "nan regression label", "non-numeric label", "one class"]


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_naming_the_file_and_the_problem(tmp_path, case):
    options, words = bad_case(tmp_path, case)
    task = make_task("images", options)
    with pytest.raises(UserError) as info:
        if not task.data_path.exists():
            task.make_data()
        task.check_data()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_too_few_images_for_the_group_is_named(stripes_h5):
    task = make_task("images", {"path": str(stripes_h5), "labels": "kind"})
    task.check_shards(2)
    with pytest.raises(UserError, match=f"{stripes_h5}: the (val|test) split has 8 rows; groups of 5 ranks"):
        task.check_shards(5)


def config(tmp_path, options: dict, **search) -> dict:
    return {"run": {"name": "job", "directory": str(tmp_path / "runs")},
            "task": {"name": "images", "data_dir": str(tmp_path / "made"), "options": options},
            "search": {"population": 4, "max_evaluations": 3, "seed": 0, **search},
            "training": {"time_budget": 3.0, "epochs": 200}}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing file", "labels file missing", "inf pixels"])
def test_bad_data_through_the_cli_is_status_2_and_leaves_nothing(tmp_path, case):
    options, words = bad_case(tmp_path, case)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config(tmp_path, options)))
    assert words in one_line_error(menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=120))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "made").exists()
    assert not list(tmp_path.glob("*.lock"))


@pytest.mark.slow
def test_a_short_search_beats_the_reference_on_validation(tmp_path):
    images, labels = stripes(n=240)
    with h5py.File(tmp_path / "stripes.h5", "w") as f:
        f["images"] = images
        f["labels"] = labels
    (tmp_path / "seed.json").write_text(json.dumps(GENOME.to_json()))
    options = {"path": "stripes.h5", "labels": "labels", "val_fraction": 0.2}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config(tmp_path, options, seed_genomes=["seed.json"])))
    out = menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    results = pd.read_csv(tmp_path / "runs" / "job" / "results.csv")
    assert len(results) == 3 and (results["status"] == "ok").any()
    task = make_task("images", {"path": str(tmp_path / "stripes.h5"), "labels": "labels", "val_fraction": 0.2})
    reference = task.other_baselines(task.load("train"), {"val": task.load("val")})
    assert results["fitness"].max() > max(row["val_accuracy"] for row in reference.values()) + 0.1
