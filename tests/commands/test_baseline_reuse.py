"""`menndl baseline` for stem_defects keeps what it made: the U-Net as a run directory `menndl predict` takes, and
Fourier filtering's tuned parameters in RUN/baselines/fourier.json, which `menndl predict --method fourier` runs on
new images, finding what the baseline's own scoring found."""
import json
import subprocess

import h5py
import numpy as np
import pytest
from launchers import MENNDL, mpi_env

from menndl_py.commands.baseline import run_baselines
from menndl_py.commands.predict import load_best, predict
from menndl_py.physics import stem_analysis
from menndl_py.tasks.stem.task import true_defects

SIMULATOR = {"image_size": 128, "chalcogen_vacancy_density": 0.03, "double_vacancy_density": 0.01,
             "dopant_density": 0.03, "metal_vacancy_density": 0.01}
OPTIONS = {"train_images": 6, "val_images": 2, "test_images": 3, "tile": 64, "simulator": SIMULATOR}
MATCH_RADIUS = 1.0 / 0.2  # pixels: the task's match radius (Å) over its pixel size (Å)
FOURIER = "Fourier filtering (Bragg-peak reconstruction)"


@pytest.fixture(scope="module")
def baselines(tmp_path_factory, cpu):
    root = tmp_path_factory.mktemp("baseline-reuse")
    from menndl_py.config import from_dict

    cfg = from_dict({"run": {"name": "b", "directory": str(root / "runs")}, "training": {"epochs": 1},
                     "task": {"name": "stem_defects", "data_dir": str(root / "data"), "options": OPTIONS}})
    results = run_baselines(cfg, seconds=2.0)
    with h5py.File(next((root / "data").glob("*.h5")), "r") as f:
        images, labels = f["test"]["images"][()], f["test"]["labels"][()]
    with h5py.File(root / "test.h5", "w") as f:
        f["images"] = images
    return root, cfg.run_dir, results, labels


def test_the_baseline_network_is_a_run_that_predict_takes_with_its_thresholds(baselines):
    root, run_dir, results, _ = baselines
    row = results["U-Net (hand-designed)"]
    assert row["run"] == str(run_dir / "baselines" / "u-net-hand-designed")
    task, genome, _ = load_best(row["run"])
    assert task.rule is not None and genome.depth == 4
    assert task.rule_record() == {k: row[k] for k in task.rule_record()}
    assert predict(row["run"], [str(root / "test.h5")], str(root / "unet.h5"), progress=False) == 0


def test_predict_method_fourier_finds_what_the_baseline_scored(baselines):
    root, run_dir, results, labels = baselines
    row = results[FOURIER]
    assert row["parameters_file"] == str(run_dir / "baselines" / "fourier.json")
    assert json.loads((run_dir / "baselines.json").read_text())[FOURIER]["parameters_file"] == row["parameters_file"]
    for given, out in ((row["parameters_file"], "a.h5"), (str(run_dir), "b.h5")):  # the file, or its run
        done = subprocess.run([MENNDL, "predict", "--method", "fourier", given, "test.h5", "--output", out,
                               "--no-progress"], cwd=root, capture_output=True, text=True, timeout=300, env=mpi_env())
        assert done.returncode == 0, done.stderr
    with h5py.File(root / "a.h5", "r") as a, h5py.File(root / "b.h5", "r") as b:
        table = a["defects"][()]
        assert np.array_equal(table, b["defects"][()]) and len(a["maps"]) == 3 and a.attrs["method"] == "fourier"
    counts = sum(stem_analysis.match_counts(table[table[:, 0] == i][:, 1:], true_defects(t), MATCH_RADIUS, 5)
                 for i, t in enumerate(labels))
    f1 = stem_analysis.f1_scores(counts)["defect_f1"]
    assert len(table) > 0 and f1 == pytest.approx(row["test_defect_f1"])


@pytest.mark.parametrize("args, message", [
    (["--method", "fourier", "nowhere.json"], "nowhere.json: missing; give the fourier.json that 'menndl baseline "
                                              "stem_defects' writes (RUN/baselines/fourier.json) or its run directory"),
    (["--method", "fft", "runs/b"], "--method: must be one of network, fourier, network+dictionary, got 'fft'"),
])
def test_bad_input_is_a_one_line_error(baselines, args, message):
    root, *_ = baselines
    done = subprocess.run([MENNDL, "predict", *args, "test.h5", "--output", "c.h5"], cwd=root,
                          capture_output=True, text=True, timeout=120, env=mpi_env())
    assert done.returncode == 2 and done.stderr.strip() == f"menndl: error: {message}"
