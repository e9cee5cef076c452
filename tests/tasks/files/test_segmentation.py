"""The `segmentation` task on users' files: images and masks in npz, HDF5 and paired folders, padding and tiles,
an AtomAI-shaped module that standardises its input itself, IoU sums, predict's maps and objects, one-line errors
for bad data (also through the CLI), and a short real search that beats the threshold reference."""
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
from menndl_py.tasks.files.segmentation import IGNORE
from menndl_py.tasks.files.stacks import Standardise

LEVEL = {"filters": 8, "kernel": 3, "convs": 2, "activation": "relu", "norm": "batch", "down": "max",
         "up": "nearest", "skip": True, "dropout": 0.0}
GENOME = Genome([LEVEL, dict(LEVEL, filters=16)],
                {"learning_rate": 3e-3, "batch_size": 8, "optimizer": "adam", "weight_decay": 0.0})


def disks(n: int = 24, side: int = 40, noise: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright disks (class 1) of radius 4 on noise: a pixel alone is a poor guide at this noise, its
    neighbourhood a good one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    masks = np.zeros((n, side, side), np.uint8)
    for mask in masks:
        for cy, cx in rng.integers(5, side - 5, (3, 2)):
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = 1
    images = 50 + 10 * (masks + rng.normal(0, noise, masks.shape))
    return images.astype(np.float32), masks


@pytest.fixture
def npz(tmp_path):
    images, masks = disks()
    np.savez(tmp_path / "disks.npz", images=images, masks=masks)
    return tmp_path / "disks.npz"


def test_loads_are_padded_shards_of_the_splits(npz):
    task = make_task("segmentation", {"path": str(npz), "tile": 32})
    task.check_data()
    images, masks = disks()
    assert task.classes == 2 and task.class_names == ("0", "1") and task._tile == (32, 32)
    for split in ("train", "val", "test"):
        rows = task.splits[split]
        for rank in range(2):
            x, y = task.load(split, (rank, 2))
            assert x.shape == (len(rows[rank::2]), 1, 48, 48) and y.shape == (len(rows[rank::2]), 48, 48)
            np.testing.assert_array_equal(x[:, 0, :40, :40], images[rows[rank::2]])
            np.testing.assert_array_equal(y[:, :40, :40], masks[rows[rank::2]])
            assert (y[:, 40:] == IGNORE).all() and (y[:, :, 40:] == IGNORE).all()
    x, y = task.load("train")
    tx, ty = task.augment(torch.from_numpy(x), torch.from_numpy(y), torch.Generator().manual_seed(0))
    assert tx.shape[-2:] == (32, 32) and ty.shape[-2:] == (32, 32)
    assert task._weights[1] > task._weights[0]  # the rarer class weighs more


def test_unlabelled_pixels_neither_count_as_a_class_nor_train_nor_score(tmp_path):
    images, masks = disks()
    masks[:, :3] = 255  # the first rows unlabelled
    np.savez(tmp_path / "d.npz", images=images, masks=masks)
    with pytest.raises(UserError, match="mask value 255 is outside the classes 0 to 1"):
        make_task("segmentation", {"path": str(tmp_path / "d.npz"), "classes": 2}).check_data()
    task = make_task("segmentation", {"path": str(tmp_path / "d.npz"), "ignore_value": 255})
    task.check_data()
    assert task.classes == 2
    _, y = task.load("train")
    assert (y[:, :3, :40] == IGNORE).all() and set(np.unique(y[:, 3:40, :40])) == {0, 1}


def test_the_module_is_atomai_shaped_and_standardises_raw_images(npz):
    task = make_task("segmentation", {"path": str(npz)})
    model = task.space().build(GENOME).eval()
    assert isinstance(model, torch.nn.Module) and isinstance(model[0], Standardise)
    x = torch.from_numpy(task.load("val")[0])
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(model(5 * x + 7), out, rtol=1e-4, atol=1e-4)
    assert out.shape == (len(x), 2, 48, 48)
    io = task.network_io(GENOME)
    assert io["input"]["shape"] == [None, 1, None, None] and io["input"]["size_multiple"] == 2
    assert io["input"]["normalisation"].startswith("none: raw pixel values")


def test_predict_pads_crops_and_finds_each_region(npz):
    task = make_task("segmentation", {"path": str(npz)})
    image = np.zeros((37, 30), np.uint16)
    x = torch.from_numpy(task.prepare_image(image, GENOME))[None]
    assert task.pad_for(GENOME, x).shape[-2:] == (48, 32)
    logits = torch.zeros(1, 2, 48, 32)
    logits[0, 1, 2:5, 3:6] = 5.0  # a 3×3 region centred at (3, 4)
    logits[0, 1, 20:22, 10:12] = 5.0  # a 2×2 region centred at (20.5, 10.5)
    (class_map, objects), = task.interpret(logits, (37, 30))
    assert class_map.shape == (37, 30) and class_map.dtype == np.uint8 and class_map.sum() == 13
    confidence = 1 / (1 + np.exp(-5.0))
    np.testing.assert_allclose(objects, [[3, 4, 1, confidence], [20.5, 10.5, 1, confidence]], rtol=1e-5)


def test_iou_is_summed_over_images_and_padding_is_not_counted(npz):
    task = make_task("segmentation", {"path": str(npz)})
    target = torch.tensor([[[0, 1], [1, IGNORE]]])
    prediction = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]])  # argmax 0, 0 / 1, 1
    metrics = task.metrics(task.metric_sums(prediction, target) * 2)
    assert metrics["iou_0"] == pytest.approx(1 / 2) and metrics["iou_1"] == pytest.approx(1 / 2)
    assert metrics["mean_iou"] == pytest.approx(1 / 2) and metrics["pixel_accuracy"] == pytest.approx(2 / 3)


def test_paired_folders_and_three_classes_with_names(tmp_path):
    images, masks = disks(n=12)
    masks[:, :4] = 2
    for name in ("im", "ma"):
        (tmp_path / name).mkdir()
    for i, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / "im" / f"{i:02d}.png")
        Image.fromarray(mask).save(tmp_path / "ma" / f"{i:02d}.tif")
    task = make_task("segmentation", {"path": str(tmp_path / "im"), "masks_path": str(tmp_path / "ma"),
                                      "class_names": ["ground", "disk", "edge"]})
    task.check_data()
    assert task.class_names == ("ground", "disk", "edge")
    x, y = task.load("train")
    np.testing.assert_array_equal(y[:, :40, :40], masks[task.splits["train"]])
    reference = task.other_baselines((x, y), {"val": task.load("val")})
    assert set(next(iter(reference.values()))) >= {"val_mean_iou", "val_iou_edge"}


def bad_case(tmp_path, case):
    """(options, expected words) of one kind of bad data, written under tmp_path."""
    images, masks = disks(n=12, side=16)
    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["images"], f["masks"] = images, masks
        f["small_masks"] = masks[:, :8]
        f["negative"] = np.where(np.arange(12)[:, None, None] == 3, -1, masks.astype(np.int16))
        f["fractional"] = np.where(np.arange(12)[:, None, None] == 5, masks * 0.5, masks).astype(np.float32)
        nan = images.copy()
        nan[2, 0, 0] = np.nan
        f["nan_images"] = nan
    for name in ("im", "ma"):
        (tmp_path / name).mkdir()
    for i in range(3):
        Image.fromarray(images[i].astype(np.uint8)).save(tmp_path / "im" / f"{i}.png")
        if i != 1:
            Image.fromarray(masks[i]).save(tmp_path / "ma" / f"{i}.png")
    return {
        "mask shape": ({"path": str(h5), "masks": "small_masks"},
                       f"{h5}:/small_masks: masks of 8×16 pixels for images of 16×16"),
        "negative mask": ({"path": str(h5), "masks": "negative"}, f"{h5}:/negative[3]: mask value -1 is negative"),
        "non-integer mask": ({"path": str(h5), "masks": "fractional"},
                             f"{h5}:/fractional[5]: mask value 0.5 is not a whole number"),
        "missing mask file": ({"path": str(tmp_path / "im"), "masks_path": str(tmp_path / "ma")},
                              f"{tmp_path / 'ma'}: no mask for image {tmp_path / 'im' / '1.png'}"),
        "nan pixels": ({"path": str(h5), "images": "nan_images"}, f"{h5}:/nan_images[2]: holds NaN or infinite"),
    }[case]


@pytest.mark.parametrize("case", ["mask shape", "negative mask", "non-integer mask", "missing mask file",
                                  "nan pixels"])
def test_bad_data_is_one_line_naming_the_file_and_the_problem(tmp_path, case):
    options, words = bad_case(tmp_path, case)
    with pytest.raises(UserError) as info:
        make_task("segmentation", options).check_data()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_arrays_and_classes_out_of_range_are_named(tmp_path):
    images, masks = disks(n=12, side=16)
    np.savez(tmp_path / "e.npz", images=images, labels=masks)
    with pytest.raises(UserError, match=f"{tmp_path / 'e.npz'}: no array 'masks' \\(it holds images, labels\\)"):
        make_task("segmentation", {"path": str(tmp_path / "e.npz")}).check_data()
    masks[7, 0, 0] = 3
    np.savez(tmp_path / "f.npz", images=images, masks=masks)
    with pytest.raises(UserError, match=f"{tmp_path / 'f.npz'}:masks\\[7\\]: mask value 3 is outside the classes "
                                        f"0 to 1 \\(task.options.classes\\)"):
        make_task("segmentation", {"path": str(tmp_path / "f.npz"), "classes": 2}).check_data()
    with pytest.raises(UserError, match=f"{tmp_path / 'f.npz'}: the (val|test) split has 1 rows; groups of 1"):
        make_task("segmentation", {"path": str(tmp_path / "f.npz")}).check_shards(1)


def config(tmp_path, options: dict, **search) -> dict:
    return {"run": {"name": "job", "directory": str(tmp_path / "runs")},
            "task": {"name": "segmentation", "data_dir": str(tmp_path / "made"), "options": options},
            "search": {"population": 4, "max_evaluations": 3, "seed": 0, **search},
            "training": {"time_budget": 4.0, "epochs": 200, "eval_batch_size": 16}}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["negative mask", "missing mask file"])
def test_bad_data_through_the_cli_is_status_2_and_leaves_nothing(tmp_path, case):
    options, words = bad_case(tmp_path, case)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config(tmp_path, options)))
    assert words in one_line_error(menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=120))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "made").exists()


@pytest.mark.slow
def test_a_short_search_beats_the_threshold_reference_on_validation(tmp_path):
    images, masks = disks(n=60, side=32, noise=1.2)
    with h5py.File(tmp_path / "disks.h5", "w") as f:
        f["images"], f["masks"] = images, masks
    (tmp_path / "seed.json").write_text(json.dumps(GENOME.to_json()))
    options = {"path": "disks.h5", "val_fraction": 0.2}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config(tmp_path, options, seed_genomes=["seed.json"])))
    out = menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    results = pd.read_csv(tmp_path / "runs" / "job" / "results.csv")
    assert len(results) == 3 and (results["status"] == "ok").any()
    task = make_task("segmentation", {"path": str(tmp_path / "disks.h5"), "val_fraction": 0.2})
    reference = task.other_baselines(task.load("train"), {"val": task.load("val")})
    assert results["fitness"].max() > next(iter(reference.values()))["val_mean_iou"] + 0.05
