"""`menndl predict` on tables: the same table out with the network's predictions added, bad rows kept in place with
their reason and counted; one process or sharded over MPI ranks; CSV or Parquet."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from launchers import MENNDL, mpi_env, mpirun

from menndl_py import config
from menndl_py.commands.predict_rows import SKIPPED
from menndl_py.genome import Genome
from menndl_py.tasks import make_task
from menndl_py.tasks.elemnet.data import fractions

PREDICTED = "predicted_formation_enthalpy_eV_per_atom"
GENOME = Genome([{"width": 16, "activation": "relu", "dropout": 0.0, "batch_norm": False}],
                {"learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam", "weight_decay": 0.0,
                 "inputs": "magpie"})
FORMULAS = ["NaCl", "Fe2O3", "not a formula", "LiFePO4", "He2Ne", "", "Al0.5Cu0.5", "SiO2", "GaAs", "Ti3SiC2"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A run directory of ElemNet whose best network has seeded random weights, and a table of formulas."""
    root = tmp_path_factory.mktemp("predict_rows")
    cfg = config.from_dict({"run": {"name": "r", "directory": str(root / "runs")},
                            "task": {"name": "elemnet", "data_dir": str(root / "data")}})
    (cfg.run_dir / "best").mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    (cfg.run_dir / "best" / "genome.json").write_text(json.dumps(GENOME.to_json()))
    torch.manual_seed(0)
    model = make_task("elemnet").space().build(GENOME).eval()
    torch.save(model.state_dict(), cfg.run_dir / "best" / "model.pt")
    (cfg.run_dir / "best" / "result.json").write_text(json.dumps({"id": 0, "m:val_mae": 0.1}))
    pd.DataFrame({"formula": FORMULAS, "source": [f"s{i}" for i in range(len(FORMULAS))]}).to_csv(
        root / "formulas.csv", index=False)
    return root, model


def predict(root, *args, n=1):
    command = [MENNDL, "predict", "runs/r", *args, "--no-progress"]
    if n == 1:
        return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, env=mpi_env())
    return mpirun(n, *command, timeout=300, cwd=root)


def expected(model, formula: str) -> float:
    with torch.no_grad():
        return float(model(torch.as_tensor(fractions(formula))[None])[0, 0])


def test_the_table_comes_back_with_predictions_and_bad_rows_named(workdir):
    root, model = workdir
    done = predict(root, "formulas.csv", "--output", "out/serial.csv", "--batch-size", "3")
    assert done.returncode == 1, done.stderr  # some rows were skipped
    table = pd.read_csv(root / "out/serial.csv", keep_default_na=False)
    assert list(table["source"]) == [f"s{i}" for i in range(len(FORMULAS))]  # every row, in order
    bad = {2, 4, 5}
    for i, formula in enumerate(FORMULAS):
        if i in bad:
            assert table[SKIPPED][i] and table[PREDICTED][i] == ""
        else:
            assert table[SKIPPED][i] == ""
            assert float(table[PREDICTED][i]) == pytest.approx(expected(model, formula), abs=1e-5)
    assert "skipped 3" in done.stdout and "He" in done.stderr


@pytest.mark.mpi
def test_sharded_over_mpi_ranks_gives_the_same_table(workdir):
    root, _ = workdir
    assert predict(root, "formulas.csv", "--output", "out/one.parquet").returncode == 1
    done = predict(root, "formulas.csv", "--output", "out/three.parquet", n=3)
    assert done.returncode == 1, done.stderr
    one, three = (pd.read_parquet(root / f"out/{name}.parquet") for name in ("one", "three"))
    pd.testing.assert_frame_equal(one, three)


def test_a_table_of_good_rows_exits_0_and_reads_parquet(workdir):
    root, model = workdir
    pd.DataFrame({"formula": ["NaCl", "SiO2"]}).to_parquet(root / "good.parquet")
    done = predict(root, "good.parquet", "--output", "out/good.csv")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(root / "out/good.csv")
    assert np.allclose(table[PREDICTED], [expected(model, "NaCl"), expected(model, "SiO2")], atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["formulas.csv", "--output", "out/x.h5"], "must name a .csv, .parquet or .pq file"),
    (["formulas.csv", "formulas.csv", "--output", "out/x.csv"], "predicts the rows of one table"),
    (["missing.csv", "--output", "out/x.csv"], "missing.csv: no such file"),
    (["runs", "--output", "out/x.csv"], "must name a .csv, .parquet or .pq file"),
    (["formulas.csv", "--output", "out/x.csv", "--method", "network+dictionary"],
     "--method network+dictionary: for EBSD patterns (task ebsd), not task elemnet"),
    (["formulas.csv", "--output", "out/x.csv", "--dictionary-near", "5"],
     "--dictionary-near: only with --method network+dictionary"),
    (["formulas.csv", "--output", "out/x.csv", "--method", "network+dictionary", "--dictionary-resolution", "0.1"],
     "--dictionary-resolution: must be a number >= 0.5 and <= 30.0, got 0.1"),
])
def test_bad_usage_is_one_line_and_status_2(workdir, args, message):
    root, _ = workdir
    done = predict(root, *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr


def test_a_table_without_the_formula_column_is_one_line(workdir):
    root, _ = workdir
    pd.DataFrame({"composition": ["NaCl"]}).to_csv(root / "other.csv", index=False)
    done = predict(root, "other.csv", "--output", "out/other.csv")
    assert done.returncode == 2 and "formula" in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr


CONV = {"filters": 4, "kernel": 3, "convs": 1, "norm": "none", "activation": "relu", "pool": "max",
        "dropout": 0.0, "dense": 8}
IMAGES_GENOME = Genome([CONV, dict(CONV, dense=0)],
                       {"learning_rate": 1e-3, "batch_size": 8, "optimizer": "adam", "weight_decay": 0.0})


@pytest.fixture(scope="module")
def images_run(tmp_path_factory):
    """A run of the `images` task (three classes) whose best network has seeded random weights, and images to
    predict: an HDF5 stack, one PNG and one image of the wrong size."""
    root = tmp_path_factory.mktemp("predict_images")
    rng = np.random.default_rng(0)
    images = rng.normal(100, 10, (24, 12, 12)).astype(np.float32)
    import h5py
    from PIL import Image

    with h5py.File(root / "train.h5", "w") as f:
        f["images"], f["labels"] = images, np.array([b"a", b"b", b"c"] * 8)
    options = {"path": str(root / "train.h5"), "labels": "labels", "val_fraction": 0.25, "test_fraction": 0.25}
    cfg = config.from_dict({"run": {"name": "r", "directory": str(root / "runs")},
                            "task": {"name": "images", "options": options}})
    (cfg.run_dir / "best").mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    (cfg.run_dir / "best" / "genome.json").write_text(json.dumps(IMAGES_GENOME.to_json()))
    torch.manual_seed(0)
    model = make_task("images", options).space().build(IMAGES_GENOME).eval()
    torch.save(model.state_dict(), cfg.run_dir / "best" / "model.pt")
    (cfg.run_dir / "best" / "result.json").write_text(json.dumps({"id": 0, "m:val_accuracy": 0.5}))
    with h5py.File(root / "new.h5", "w") as f:
        f["images"] = images[:7] * 2
    Image.fromarray(images[0].astype(np.uint8)).save(root / "one.png")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "small.png")
    return root, model, images


def test_images_give_one_row_each_with_the_networks_class(images_run):
    root, model, images = images_run
    done = predict(root, "new.h5", "one.png", "small.png", "--output", "out/classes.csv")
    assert done.returncode == 1, done.stderr  # small.png is skipped
    table = pd.read_csv(root / "out/classes.csv", keep_default_na=False)
    assert len(table) == 9 and list(table["image"]) == list(range(9))
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.as_tensor(images[:7] * 2)[:, None]), dim=1).numpy()
    names = np.array(["a", "b", "c"])
    assert list(table["predicted_class"][:7]) == list(names[probabilities.argmax(1)])
    assert np.allclose(table["probability"][:7].astype(float), probabilities.max(1), atol=1e-5)
    assert table[SKIPPED][8] and "small.png" in table["source"][8] and not any(table[SKIPPED][:8])


@pytest.mark.mpi
def test_images_sharded_over_mpi_ranks_give_the_same_rows(images_run):
    root, *_ = images_run
    assert predict(root, "new.h5", "one.png", "--output", "out/one.csv").returncode == 0
    done = predict(root, "new.h5", "one.png", "--output", "out/three.csv", n=3)
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_csv(root / "out/one.csv"), pd.read_csv(root / "out/three.csv"))
