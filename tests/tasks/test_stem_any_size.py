"""`menndl predict` for stem_defects over images of any size and aspect: a network trained here for 25 epochs
finds the same defects in a 320×280 image and in 80×70 crops of it (smaller than its training tiles, not a
multiple of its stride), and its outputs cut into overlapping windows are those of the whole image.

The small images are crops of the large one, not new simulations: the pixels are then the same counts, so any
difference comes from the prediction's padding and windows, not from another draw of the noise."""
import h5py
import numpy as np
import pytest
import torch

from menndl_py import config
from menndl_py.commands.predict import predict
from menndl_py.genome import Genome
from menndl_py.physics import stem_analysis, stem_sim
from menndl_py.rundir.networks import save_network
from menndl_py.tasks import make_task
from menndl_py.tasks.stem import tiling
from menndl_py.tasks.stem.task import standardize
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import Budget, Trainer

SIMULATOR = {"image_size": 128, "chalcogen_vacancy_density": 0.03, "double_vacancy_density": 0.01,
             "dopant_density": 0.03, "metal_vacancy_density": 0.01}
OPTIONS = {"train_images": 16, "val_images": 4, "test_images": 2, "tile": 64, "simulator": SIMULATOR}
LEVEL = {"filters": 8, "kernel": 3, "convs": 2, "activation": "relu", "norm": "batch", "down": "max",
         "up": "nearest", "skip": True, "dropout": 0.0}
GENOME = Genome([LEVEL, dict(LEVEL, filters=16), dict(LEVEL, filters=24)],
                {"learning_rate": 3e-3, "batch_size": 8, "optimizer": "adam", "weight_decay": 0.0})
CROPS = ((40, 60), (200, 150), (0, 0), (240, 210))  # top-left corners of the 80×70 crops (two share big's edges)
CUT = 1.5  # pixels: a column centred this close to an edge is cut in half, its kind is not seen in the crop


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cpu):
    """A run directory holding a network trained 25 epochs (with its calibrated thresholds), and 320×280 images."""
    root = tmp_path_factory.mktemp("any-size")
    cfg = config.from_dict({"run": {"name": "r", "directory": str(root / "runs")},
                            "task": {"name": "stem_defects", "data_dir": str(root / "data"), "options": OPTIONS}})
    task = make_task("stem_defects", OPTIONS, root / "data")
    task.make_data()
    data = {split: tuple(torch.as_tensor(a) for a in task.load(split)) for split in ("train", "val")}
    outcome = task.evaluate(GENOME, Trainer(task, task.space(), LocalGroup(), data, Budget(25, None, 300.0, 4),
                                            device=cpu))
    assert outcome.status == "ok", outcome.message
    cfg.run_dir.mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    save_network(cfg.run_dir / "best", GENOME, outcome.model.state_dict(),
                 {"genome_hash": GENOME.key, **outcome.metrics})
    settings = stem_sim.StemSettings(**{**SIMULATOR, "image_size": 320})
    samples = [stem_sim.simulate(settings, np.random.default_rng(100 + i)) for i in range(6)]
    return root, cfg.run_dir, task, outcome.model.eval(), samples


def test_windows_give_the_whole_image_s_outputs_and_too_narrow_margins_do_not(trained):
    _, _, _, model, samples = trained
    x = torch.from_numpy(standardize(samples[0].image[:, :278])[None, None])  # 278: not a multiple of the stride
    radius = tiling.receptive_radius(GENOME.layers)
    with torch.no_grad():
        whole = tiling.segment(model, x, 4, radius, window=10_000)
        windowed = tiling.segment(model, x, 4, radius, window=96)  # 3 × 4 windows of 40-pixel cores
        narrow = tiling.segment(model, x, 4, 4, window=96)
    assert whole.shape == (1, 5, 320, 278)
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=1e-5)
    assert (narrow - whole).abs().amax() > 0.1


def test_the_crops_find_the_defects_of_the_large_image(trained):
    root, run_dir, task, _, samples = trained
    sources = []
    for i, sample in enumerate(samples):
        big = sample.image[:, :280]
        np.save(root / f"big{i}.npy", big)
        for k, (y0, x0) in enumerate(CROPS):
            np.save(root / f"crop{i}-{k}.npy", big[y0:y0 + 80, x0:x0 + 70])
        sources += [f"big{i}.npy"] + [f"crop{i}-{k}.npy" for k in range(len(CROPS))]
    assert predict(str(run_dir), [str(root / s) for s in sources], str(root / "out.h5"), progress=False) == 0
    with h5py.File(root / "out.h5", "r") as f:
        shapes = {f["maps"][key].attrs["source"].split("/")[-1]: f["maps"][key].shape for key in f["maps"]}
        table = f["defects"][()]
    assert shapes["big0.npy"] == (320, 280) and shapes["crop0-0.npy"] == (80, 70)
    found = {s: table[table[:, 0] == n][:, 1:] for n, s in enumerate(sources)}
    counts, border = np.zeros(3, np.int64), np.zeros(2, np.int64)
    for i, sample in enumerate(samples):
        big = found[f"big{i}.npy"]
        for k, (y0, x0) in enumerate(CROPS):
            crop = found[f"crop{i}-{k}.npy"] + np.array([y0, x0, 0, 0], np.float32)
            inside = [t[(t[:, 0] >= y0 + CUT - 0.5) & (t[:, 0] <= y0 + 79.5 - CUT) & (t[:, 1] >= x0 + CUT - 0.5)
                        & (t[:, 1] <= x0 + 69.5 - CUT)] for t in (crop, big)]
            counts += stem_analysis.match_counts(*inside, task.radius_px, 5).sum(0)
            true = sample.defects - np.array([y0, x0, 0], np.float32)
            edge = np.min([true[:, 0] + 0.5, 79.5 - true[:, 0], true[:, 1] + 0.5, 69.5 - true[:, 1]], axis=0)
            near = true[(edge >= CUT) & (edge < 10)] + np.array([y0, x0, 0], np.float32)
            border += stem_analysis.match_counts(crop, near, task.radius_px, 5).sum(0)[[0, 2]]
    matched, only_crop, only_big = counts
    assert matched >= 40 and only_crop + only_big <= 0.25 * matched, counts
    hits, misses = border  # true defects 1.5-10 pixels from a crop's edge: found in the crop
    assert hits >= 15 and misses <= 0.5 * hits, border
