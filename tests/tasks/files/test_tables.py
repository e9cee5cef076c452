"""The table tasks on users' files: reading CSV, Parquet and HDF5, splits and shards, standardisation inside the
network, metrics and baselines by kind, predict's columns, and every kind of bad data as one line naming the file."""
import random

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from launchers import menndl, one_line_error

from menndl_py import config
from menndl_py.errors import UserError
from menndl_py.tasks import make_task
from menndl_py.tasks.elemnet.data import ELEMENTS, source_dir
from menndl_py.tasks.elemnet.task import ElemNetTask

FORMULAS = ["NaCl", "Fe2O3", "SiO2", "Al2O3", "MgO", "CaTiO3", "LiFePO4", "GaAs", "ZnS", "TiO2", "Cu2O", "BaTiO3"]


def table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Four features, a learnable target `y` (about 10 ± 4), a class `label`, a text column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    frame = pd.DataFrame(x, columns=[f"x_{i}" for i in range(4)])
    frame["y"] = 3 * x[:, 0] - 2 * x[:, 1] ** 2 + x[:, 2] * x[:, 3] + 10 + 0.05 * rng.normal(size=n)
    frame["label"] = np.where(x[:, 0] + x[:, 1] > 0, "up", "down")
    frame["name"] = [f"sample {i}" for i in range(n)]
    return frame


def tabular(path, **options):
    return make_task("tabular", {"path": str(path), "target": "y", **options})


def composition(path, **options):
    return make_task("composition", {"path": str(path), "target": "target", **options})


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "data.csv"
    table().to_csv(path, index=False)
    return path


@pytest.fixture
def formulas(tmp_path):
    """The first 200 rows of CrabNet's OQMD validation CSV (formula, target)."""
    path = tmp_path / "formulas.csv"
    pd.read_csv(source_dir() / "val.csv").head(200).to_csv(path, index=False)
    return path


def written(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def edited(column, row, value):
    def edit(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame
    return edit


# -- bad data: one line naming the file and the problem ----------------------------------------------------------
BAD = {
    "missing target column": (lambda f: f.drop(columns="y"), {}, "no target column 'y'"),
    "missing feature column": (lambda f: f, {"features": ["x_0", "x_9"]}, "no feature column 'x_9'"),
    "pattern matching nothing": (lambda f: f, {"features": "z_*"}, "no column matches task.options.features 'z_*'"),
    "non-numeric feature column": (lambda f: f, {"features": ["x_0", "name"]},
                                   "row 1, column 'name': 'sample 0' is not a number"),
    "NaN in a feature": (edited("x_2", 6, np.nan), {}, "row 7, column 'x_2': missing value"),
    "inf in a feature": (edited("x_1", 3, np.inf), {}, "row 4, column 'x_1': inf is not finite"),
    "NaN in the target": (edited("y", 9, np.nan), {}, "column 'y' (the target), row 10: missing value"),
    "inf in the target": (edited("y", 0, -np.inf), {}, "column 'y' (the target), row 1: -inf is not finite"),
    "regression target not numeric": (lambda f: f.assign(label=["-0.5"] + ["many"] * 199), {"target": "label"},
                                      "column 'label' (the target), row 2: 'many' is not a number; a regression "
                                      "target must hold numbers"),
    "one class": (lambda f: f.assign(label="up"), {"target": "label", "kind": "classification"},
                  "column 'label' (the target): one class only ('up')"),
    "split values": (lambda f: f.assign(part=["train"] * 190 + ["holdout"] * 10), {"split": "part"},
                     "column 'part': split values must be train, val or test, got "),  # the value follows
    "missing split column": (lambda f: f, {"split": "part"}, "no split column 'part'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_table_is_one_line_naming_the_file(tmp_path, case):
    edit, options, expected = BAD[case]
    path = written(tmp_path, edit(table()))
    with pytest.raises(UserError) as caught:
        tabular(path, **options).check_data()
    message = str(caught.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_missing_file(tmp_path):
    task = tabular(tmp_path / "absent.csv")
    assert not task.data_path.exists()
    for step in (task.make_data, task.check_data):
        with pytest.raises(UserError, match=r"absent\.csv: no such file"):
            step()


@pytest.mark.parametrize("name, content, expected", [
    ("data.parquet", b"PAR1 certainly not parquet", "cannot read it as Parquet"),
    ("data.csv", bytes(range(256)) * 4, "cannot read it as CSV"),
    ("data.h5", b"\x89HDF\r\n\x1a\n then nothing sensible", "cannot read it as HDF5"),
    ("data.xlsx", b"whatever", "unknown table format '.xlsx'"),
    ("data.csv", b"", "cannot read it as CSV"),
])
def test_unreadable_file(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as caught:
        tabular(tmp_path / name).check_data()
    assert str(tmp_path / name) in str(caught.value) and expected in str(caught.value)


def test_too_few_rows_for_the_ranks(csv):
    task = tabular(csv)
    task.check_shards(4)
    with pytest.raises(UserError, match=r"data\.csv: the val split has 20 rows; groups of 16 ranks"):
        task.check_shards(16)


def test_bad_formulas(tmp_path, formulas):
    frame = pd.read_csv(formulas)
    frame.loc[4, "formula"], frame.loc[8, "formula"] = "Fe2(O3", "He2"
    path = written(tmp_path, frame)
    with pytest.raises(UserError) as caught:
        composition(path).check_data()
    assert str(caught.value) == (f"{path}, row 5: formula 'Fe2(O3': unbalanced parentheses, '(' at position 3 is never "
                                 f"closed; correct it, or set task.options.skip_bad_formulas: true to leave such rows "
                                 f"out")
    with pytest.raises(UserError, match=r"formulas\.csv: no formula column 'composition'"):
        composition(formulas, formula="composition").check_data()


def test_skipped_formulas_are_counted_once(tmp_path, formulas, capsys):
    frame = pd.read_csv(formulas)
    frame.loc[4, "formula"], frame.loc[8, "formula"] = "Fe2(O3", "He2"
    task = composition(written(tmp_path, frame), skip_bad_formulas=True)
    task.check_data()
    task.check_data()
    out = capsys.readouterr().out
    assert out.count("left out 2 of 200 rows whose formula cannot be used") == 1 and "row 5" in out
    assert sum(len(task.load(split)[0]) for split in ("train", "val", "test")) == 198


def test_features_option_is_checked():
    with pytest.raises(UserError, match="task.options.features: must be a list of distinct column names or one glob"):
        make_task("tabular", {"path": "/x.csv", "target": "y", "features": 5})
    with pytest.raises(UserError, match="task.options.target: required"):
        make_task("tabular", {"path": "/x.csv"})


# -- the same checks through the command line: exit 2, one line, nothing left behind -------------------------
@pytest.mark.parametrize("frame, options, ranks, expected", [
    (None, {"path": "absent.csv", "target": "y"}, 1, "absent.csv: no such file"),
    (edited("x_0", 2, np.nan)(table()), {"path": "data.csv", "target": "y"}, 1,
     "data.csv, row 3, column 'x_0': missing value"),
    (pd.DataFrame({"formula": ["NaCl", "Qq2", "MgO"] * 10, "target": range(30)}),
     {"path": "data.csv", "target": "target", "name": "composition"}, 1, "data.csv, row 2: formula 'Qq2'"),
    (table(), {"path": "data.csv", "target": "y"}, 16, "data.csv: the val split has 20 rows; groups of 16 ranks"),
], ids=["missing file", "NaN feature", "bad formula", "too few rows"])
def test_bad_data_through_the_cli(tmp_path, frame, options, ranks, expected):
    """The config sits in a folder and names its table relative to it; run from the folder above."""
    options = dict(options)
    name = options.pop("name", "tabular")
    folder = tmp_path / "folder"
    folder.mkdir()
    if frame is not None:
        frame.to_csv(folder / "data.csv", index=False)
    cfg = {"run": {"name": "job", "directory": "runs"}, "task": {"name": name, "options": options},
           "search": {"population": 2, "max_evaluations": 2}, "training": {"time_budget": 1},
           "cluster": {"ranks_per_candidate": ranks}}
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    before = sorted(p.name for p in folder.iterdir())
    message = one_line_error(menndl("run", "folder/c.yaml", "--no-progress", cwd=tmp_path, timeout=90))
    assert expected in message and str(folder) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and sorted(p.name for p in folder.iterdir()) \
        == before


# -- splits, shards, formats ---------------------------------------------------------------------------------
def test_splits_reproducible_by_seed_and_split_column(tmp_path, csv):
    one, same, other = tabular(csv, seed=3), tabular(csv, seed=3), tabular(csv, seed=4)
    for split in ("train", "val", "test"):
        assert np.array_equal(one.table.splits[split], same.table.splits[split])
    assert not np.array_equal(one.table.splits["val"], other.table.splits["val"])
    labels = np.array(["train", "validation", "Test", "train"] * 50)
    path = written(tmp_path, table().assign(part=labels), "labelled.csv")
    task = tabular(path, split="part", seed=9)
    assert np.array_equal(task.table.splits["val"], np.arange(1, 200, 4))
    assert np.array_equal(task.table.splits["test"], np.arange(2, 200, 4))
    assert "part" not in task.table.columns
    y, expected = task.load("test")[1], table()["y"].to_numpy(np.float32)[2::4]
    assert np.array_equal(y, expected)


def test_load_shards_partition_the_split(csv):
    task = tabular(csv)
    x, y = task.load("train")
    assert x.dtype == np.float32 and y.dtype == np.float32 and x.shape == (160, 4)
    parts = [task.load("train", (rank, 3)) for rank in range(3)]
    assert sum(len(p[1]) for p in parts) == len(y)
    assert sorted(np.concatenate([p[1] for p in parts]).tolist()) == sorted(y.tolist())


def test_parquet_and_hdf5_read_as_the_csv(tmp_path, csv):
    frame = table()
    frame.to_parquet(tmp_path / "data.parquet")
    with h5py.File(tmp_path / "data.h5", "w") as f:
        group = f.create_group("samples")
        for column in frame.columns:
            values = frame[column].to_numpy()
            group.create_dataset(column, data=values.astype("S") if values.dtype == object else values)
    reference = tabular(csv).table
    for task in (tabular(tmp_path / "data.parquet"), tabular(tmp_path / "data.h5", table="samples")):
        assert task.table.columns == reference.columns
        assert np.array_equal(task.table.x, reference.x) and np.array_equal(task.table.y, reference.y)
    classes = tabular(tmp_path / "data.h5", table="samples", target="label", kind="classification")
    assert classes.class_names == ("down", "up")
    with pytest.raises(UserError, match=r"data\.h5: no group 'rows'"):
        tabular(tmp_path / "data.h5", table="rows").check_data()


def test_relative_path_is_read_from_the_configs_folder(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "c.yaml").write_text(yaml.safe_dump(
        {"task": {"name": "tabular", "options": {"path": "data.csv", "target": "y"}}}))
    cfg = config.load(tmp_path / "project" / "c.yaml")
    assert cfg.task.options["path"] == str((tmp_path / "project" / "data.csv").resolve())


# -- the network: standardisation inside, outputs in the target's units ------------------------------------
def test_statistics_come_from_the_training_split_and_live_in_the_state_dict(tmp_path):
    frame = table()
    part = np.array(["train"] * 100 + ["val"] * 50 + ["test"] * 50)
    frame.loc[100:, ["x_0", "y"]] += 1000.0  # far from the training rows: must not move the statistics
    task = tabular(written(tmp_path, frame.assign(part=part)), split="part")
    model = task.space().build(task.space().sample(random.Random(0)))
    state = model.state_dict()
    train = frame.iloc[:100]
    features = train[[f"x_{i}" for i in range(4)]].to_numpy()
    assert np.allclose(state["0.mean"].numpy(), features.mean(0), atol=1e-5)
    assert np.allclose(state["0.scale"].numpy(), features.std(0), atol=1e-5)
    units = [key for key in state if key.endswith("mean") and state[key].ndim == 0]
    assert len(units) == 1 and np.isclose(float(state[units[0]]), train["y"].mean(), atol=1e-4)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    model.eval()
    out = model(torch.as_tensor(task.load("val")[0])).detach()
    assert torch.allclose(out, torch.full_like(out, float(train["y"].mean())), atol=1e-3)  # the mean, in units
    copy = task.space().build(task.space().sample(random.Random(0)))
    copy.load_state_dict(state)
    copy.eval()
    assert torch.equal(copy(torch.as_tensor(task.load("val")[0])).detach(), out)


def test_loss_is_l1_on_the_standardised_target(csv):
    task = tabular(csv)
    scale = task.table.target_stats[1]
    prediction, target = torch.tensor([[1.0], [2.0]]), torch.tensor([3.0, 2.0])
    assert np.isclose(float(task.loss(prediction, target)), 1.0 / scale)
    assert task.metric == "mae" and not task.higher_is_better and task.metric_names == ("mae", "rmse")


def test_classification_metrics_baselines_and_predict_columns(csv):
    task = tabular(csv, target="label", kind="classification", features="x_*")
    assert task.class_names == ("down", "up") and task.metric == "accuracy" and task.higher_is_better
    x, y = task.load("train")
    assert y.dtype == np.int64 and task.space().network.head.outputs == 2 and task.space().inputs.target is None
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    sums = task.metric_sums(logits, torch.tensor([0, 0, 1, 1]))
    assert task.metrics(sums) == {"accuracy": 0.5, "balanced_accuracy": 0.5}
    baselines = task.other_baselines((x, y), {"val": task.load("val"), "test": task.load("test")})
    assert baselines["logistic regression"]["val_accuracy"] > baselines["majority class"]["val_accuracy"]
    assert {"val_balanced_accuracy", "test_accuracy"} <= set(baselines["majority class"])
    columns = task.output_columns(logits)
    assert list(columns["predicted_label"]) == ["down", "up", "up", "down"]
    assert np.allclose(columns["probability"], torch.softmax(logits, -1).max(-1).values.numpy())
    io = task.network_io(None)
    assert io["output"]["classes"] == ["down", "up"] and io["input"]["columns"] == ["x_0", "x_1", "x_2", "x_3"]


def test_regression_baselines_and_predict_inputs(csv):
    task = tabular(csv, features="x_*", forest_trees=20)
    baselines = task.other_baselines(task.load("train"), {"val": task.load("val"), "test": task.load("test")})
    assert baselines["random forest"]["val_mae"] < baselines["training mean"]["val_mae"]
    assert {"val_rmse", "test_mae", "test_rmse"} <= set(baselines["training mean"])
    frame = pd.DataFrame({"x_3": [1.0, 2.0, 3.0], "x_0": [0.5, "oops", 1.0], "x_1": [0.0, 0.0, np.nan],
                          "x_2": [1.0, 1.0, 1.0]})
    inputs, reasons = task.table_inputs(frame)
    assert inputs.dtype == np.float32 and inputs.shape == (3, 4) and inputs[0].tolist() == [0.5, 0.0, 1.0, 1.0]
    assert reasons == ["", "column 'x_0': 'oops' is not a number", "column 'x_1': missing value (empty or NaN)"]
    assert list(task.output_columns(torch.tensor([[1.5], [2.5]]))) == ["predicted_y"]
    with pytest.raises(UserError, match="the table has no column 'x_1'"):
        task.table_inputs(frame.drop(columns="x_1"))
    assert task.network_io(None)["input"]["normalisation"].startswith("none: raw feature values")


def test_composition(formulas):
    task = composition(formulas, forest_trees=10)
    task.check_data()
    x, y = task.load("val")
    assert x.shape == (20, 86) and np.allclose(x.sum(1), 1.0) and y.dtype == np.float32
    space = task.space()
    assert space.inputs.gene == "inputs" and "inputs" in space.training_genes and space.input_shape == (86,)
    genome = space.sample(random.Random(1))
    genome.training["inputs"] = "magpie"
    assert space.build(genome)(torch.as_tensor(x)).shape == (20, 1)
    assert task.network_io(genome)["input"]["columns"] == list(ELEMENTS)
    inputs, reasons = task.table_inputs(pd.DataFrame({"formula": ["NaCl", "Np2Xe", "Am", None]}))
    assert reasons[:2] == ["", ""] and "Am" in reasons[2] and reasons[3] == "missing formula"
    assert not inputs[2:].any()
    assert "random forest" in task.other_baselines(task.load("train"), {"val": (x, y)})


def test_elemnet_reads_a_formula_table():
    task = ElemNetTask()
    assert task.predicts == "table"
    inputs, reasons = task.table_inputs(pd.DataFrame({"formula": ["Fe2O3", "Fe2(O3"], "other": [1, 2]}))
    assert np.isclose(inputs[0, ELEMENTS.index("Fe")], 0.4) and reasons[0] == "" and "never closed" in reasons[1]
    assert list(task.output_columns(torch.tensor([[-1.0], [0.5]]))) == ["predicted_formation_enthalpy_eV_per_atom"]
    with pytest.raises(UserError, match="no column 'formula'"):
        task.table_inputs(pd.DataFrame({"composition": ["NaCl"]}))


# -- a real search ---------------------------------------------------------------------------------------------
def test_a_short_run_beats_the_training_mean(tmp_path):
    (tmp_path / "project").mkdir()
    table(400).to_csv(tmp_path / "project" / "data.csv", index=False)
    cfg = {"run": {"name": "tab", "directory": str(tmp_path / "runs")},
           "task": {"name": "tabular", "options": {"path": "data.csv", "target": "y"}},
           "search": {"population": 3, "max_evaluations": 3, "seed": 1},
           "training": {"epochs": 200, "time_budget": 2}, "cluster": {"threads_per_rank": 1}}
    (tmp_path / "project" / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = menndl("run", "project/c.yaml", "--no-progress", cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "runs" / "tab" / "results.csv")
    task = tabular(tmp_path / "project" / "data.csv")
    mean = task.other_baselines(task.load("train"), {"val": task.load("val")})["training mean"]["val_mae"]
    assert rows["status"].eq("ok").any() and rows["fitness"].min() < 0.5 * mean
