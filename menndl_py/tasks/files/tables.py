"""Generic tasks on a user's table, configured in YAML only: `tabular` (numeric feature columns) and `composition`
(a column of chemical formulas as ElemNet's 86 element fractions), each predicting one target column, by regression
or classification.

The data stay in the user's file: CSV (.csv), Parquet (.parquet, .pq) or HDF5 (.h5, .hdf5, .hdf: the equal-length
1-D datasets of one group, the root or `table`, are the columns; strings as text). Rows are counted from 1, the
header not counted. The training split's statistics standardise the features and the regression target inside the
network (`scaling.Scaling`), so it takes raw values and answers in the target's units. Every problem with the file
is a one-line UserError naming the file, and the column or row."""
from __future__ import annotations

import fnmatch
import functools
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from menndl_py.config import setting, shown
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.layers import Dense, LinearHead, Stack
from menndl_py.tasks.base import error_sums
from menndl_py.tasks.elemnet.data import ELEMENTS
from menndl_py.tasks.elemnet.descriptors import ElementDescriptors
from menndl_py.tasks.elemnet.task import ElemNetTask
from menndl_py.tasks.files import splits as file_splits
from menndl_py.tasks.files.base import FileTask
from menndl_py.tasks.files.formulas import formula_fractions
from menndl_py.tasks.files.scaling import Scaling
from menndl_py.tasks.files.splits import FileOptions, by_fractions, by_labels, check_sizes

FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet", ".h5": "HDF5", ".hdf5": "HDF5", ".hdf": "HDF5"}
KINDS = ("regression", "classification")


@dataclass(frozen=True)
class TableOptions(FileOptions):
    """Options both table tasks take, beside the file's (`path`, `split`, fractions, `seed`)."""

    target: str = setting("")  # the column to predict (required)
    kind: str = setting("regression", choices=KINDS)
    table: Optional[str] = setting(None)  # HDF5: the group holding the columns (default: the root)
    unit: str = setting("")  # regression: the target's unit, for messages and exports
    forest_trees: int = setting(100, min=1, max=10_000)  # the random forest baseline (regression)


@dataclass(frozen=True)
class TabularOptions(TableOptions):
    features: Optional[object] = setting(None)  # column names, or one glob pattern; default: every numeric column


@dataclass(frozen=True)
class CompositionOptions(TableOptions):
    formula: str = setting("formula")  # the column of chemical formulas
    skip_bad_formulas: bool = setting(False)  # leave out (and count) rows whose formula cannot be used


@dataclass(frozen=True)
class Prepared:
    """A table made ready: inputs and targets of its usable rows, the splits over them, the training split's
    statistics ((means, scales) of the features and (mean, scale) of a regression target; None when not used)."""

    x: np.ndarray  # float32 (rows, features)
    y: np.ndarray  # float32 (regression) or int64 class indices
    splits: dict
    columns: tuple  # the input columns the network takes
    classes: tuple  # classification: the class names, sorted
    feature_stats: Optional[tuple]
    target_stats: Optional[tuple]
    note: str  # what was left out, in words ('' if nothing)


def listed(names, limit: int = 12) -> str:
    """Column names for a message, cut short."""
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def cell_problem(value) -> str:
    """Why a cell is not a finite number, in words."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "missing value (empty or NaN)"
    text = shown(value) if isinstance(value, str) else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{text} is not a number"
    return f"{text} is not finite" if not math.isfinite(number) else text


def numeric_matrix(frame: pd.DataFrame, columns) -> tuple[np.ndarray, list[str]]:
    """float32 (rows, columns) of `columns`, and per row '' or its first cell that is not a finite number."""
    x = np.zeros((len(frame), len(columns)), dtype=np.float32)
    reasons = [""] * len(frame)
    for j, name in enumerate(columns):
        raw = frame[name]
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(numbers)
        for row in np.flatnonzero(bad):
            reasons[row] = reasons[row] or f"column {name!r}: {cell_problem(raw.iloc[row])}"
        x[:, j] = np.where(bad, 0.0, numbers)
    return x, reasons


def read_table(path: Path, group: Optional[str]) -> pd.DataFrame:
    """The table in a CSV, Parquet or HDF5 file (rows numbered from 0); UserError naming the file."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown table format {path.suffix or '(no suffix)'!r} (task.options.path: "
                        f"expected {', '.join(FORMATS)})")
    if not path.exists():
        raise UserError(missing(path))
    if path.is_dir():
        raise UserError(f"{path}: is a directory (task.options.path: expected a {fmt} file)")
    if group is not None and fmt != "HDF5":
        raise UserError(f"task.options.table: names a group of an HDF5 file, but {path} is {fmt}")
    try:
        frame = {"CSV": pd.read_csv, "Parquet": pd.read_parquet}[fmt](path) if fmt != "HDF5" else \
            read_hdf5(path, group or "/")
    except UserError:
        raise
    except ImportError as exc:
        raise UserError(f"{path}: reading {fmt} needs {exc.name or 'a package that is missing'} "
                        f"(pip install pyarrow)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{path}: cannot read it as {fmt} ({reason})") from None
    if len(frame) == 0:
        raise UserError(f"{path}: holds no rows")
    return frame.reset_index(drop=True)


def read_hdf5(path: Path, group: str) -> pd.DataFrame:
    """The equal-length 1-D datasets of `group` as columns (strings decoded)."""
    import h5py

    with h5py.File(path, "r") as f:
        if not isinstance(f.get(group), h5py.Group):
            raise UserError(f"{path}: no group {group!r} (task.options.table)")
        columns = {name: (item.asstr()[()] if h5py.check_string_dtype(item.dtype) else item[()])
                   for name, item in f[group].items() if isinstance(item, h5py.Dataset) and item.ndim == 1}
    if not columns:
        raise UserError(f"{path}: group {group!r} holds no 1-D datasets (the table's columns)")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(f"{path}: the 1-D datasets of group {group!r} differ in length "
                        f"({', '.join(f'{n}: {k}' for n, k in lengths.items())}); a column holds one value per row")
    return pd.DataFrame(columns)


def missing(path: Path) -> str:
    return f"{path}: no such file (task.options.path names the table; relative paths are read from the config's " \
           f"folder)"


class TableTask(FileTask):
    """What the table tasks share: the file read once, targets, splits, metrics by kind, baselines and predict's
    columns. A subclass says which columns are the inputs and how they become numbers."""

    metric, metric_names, unit = "mae", ("mae", "rmse"), "target units"  # set per instance by `kind`
    predicts = "table"
    Options = TableOptions
    standardise_features = True
    inner_inputs = None  # an `Inputs` stage chosen by a gene, between the standardisation and the layers
    input_normalisation = "none: raw feature values (the network standardises them)"

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        if not self.options.path:
            raise UserError("task.options.path: required: the table file (CSV, Parquet or HDF5)")
        if not self.options.target:
            raise UserError("task.options.target: required: the column to predict")
        self.classify = self.options.kind == "classification"
        self.ensembled = "probabilities" if self.classify else "mean"
        self.higher_is_better = self.classify
        if self.classify:
            self.metric, self.metric_names, self.unit = "accuracy", ("accuracy", "balanced_accuracy"), "fraction"
        else:
            self.metric, self.metric_names = "mae", ("mae", "rmse")
            self.unit = self.options.unit or f"units of {self.options.target}"
        self._noted = False

    # -- what a subclass gives ------------------------------------------------------------------------------
    def input_columns(self, frame: pd.DataFrame) -> list:
        """The columns the inputs are made of (UserError naming the file when they are not there)."""
        raise NotImplementedError

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """float32 inputs of every row and, per row, '' or why it cannot be used (its row then zeros)."""
        raise NotImplementedError

    def refuse(self, reasons: list[str]) -> tuple[np.ndarray, str]:
        """Rows of the file to keep, and a note of what was left out; UserError naming the first bad row."""
        rows = [i for i, reason in enumerate(reasons) if reason]
        if rows:
            raise UserError(f"{self.data_path}, row {rows[0] + 1}, {reasons[rows[0]]} (features must be finite "
                            f"numbers)")
        return np.arange(len(reasons)), ""

    # -- data -----------------------------------------------------------------------------------------------
    @functools.cached_property
    def table(self) -> Prepared:
        """The file read, checked and prepared (once per process)."""
        o, where = self.options, str(self.data_path)
        frame = read_table(self.data_path, o.table)
        for option, column in (("target", o.target), ("split", o.split)):
            if column is not None and column not in frame.columns:
                raise UserError(f"{where}: no {option} column {column!r} (task.options.{option}; columns: "
                                f"{listed(frame.columns)})")
        columns = self.input_columns(frame)
        x, reasons = self.encode(frame[columns])
        keep, note = self.refuse(reasons)
        frame, x = frame.iloc[keep], x[keep]
        y, classes = self.targets(frame[o.target])
        splits = by_labels(frame[o.split].tolist(), f"{where}, column {o.split!r}") if o.split is not None else \
            by_fractions(len(frame), o.val_fraction, o.test_fraction, o.seed)
        check_sizes(splits, 1, where)
        train_x, train_y = x[splits["train"]].astype(np.float64), y[splits["train"]].astype(np.float64)
        feature_stats = (tuple(map(float, train_x.mean(0))), tuple(map(float, np.where(train_x.std(0) > 0,
                                                                                    train_x.std(0), 1.0)))) \
            if self.standardise_features else None
        target_stats = None if self.classify else (float(train_y.mean()), float(train_y.std()) or 1.0)
        return Prepared(x, y, splits, tuple(columns), classes, feature_stats, target_stats, note)

    def targets(self, column: pd.Series) -> tuple[np.ndarray, tuple]:
        """The target column as float32 values or int64 class indices, and the class names."""
        name = f"{self.data_path}, column {column.name!r} (the target)"
        if self.classify:
            absent = column.isna().to_numpy()
            if absent.any():
                raise UserError(f"{name}, row {column.index[absent.argmax()] + 1}: missing value")
            values = sorted(column.unique(), key=None if pd.api.types.is_numeric_dtype(column) else str)
            if len(values) < 2:
                raise UserError(f"{name}: one class only ({str(values[0])!r}); classification needs at least two")
            codes = pd.Categorical(column, categories=values).codes.astype(np.int64)
            return codes, tuple(str(v) for v in values)
        y, reasons = numeric_matrix(column.to_frame(), [column.name])
        bad = [i for i, reason in enumerate(reasons) if reason]
        if bad:
            hint = "; a regression target must hold numbers (task.options.kind: classification for classes)" \
                if not pd.api.types.is_numeric_dtype(column) else "; every target must be a finite number"
            raise UserError(f"{name}, row {column.index[bad[0]] + 1}: {cell_problem(column.iloc[bad[0]])}{hint}")
        return y[:, 0], ()

    def check_data(self) -> None:
        if self.table.note and not self._noted:
            print(f"[menndl] {self.table.note}", flush=True)
            self._noted = True

    def check_shards(self, ranks: int) -> None:
        check_sizes(self.table.splits, ranks, str(self.data_path))

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        rows = file_splits.shard(self.table.splits[split], shard)
        return np.ascontiguousarray(self.table.x[rows]), np.ascontiguousarray(self.table.y[rows])

    @property
    def class_names(self) -> tuple:
        return self.table.classes if self.classify else ()

    # -- model ----------------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        """ElemNet's dense space (its `inputs` gene only with `inner_inputs`), for this table's inputs and outputs."""
        elemnet, t = ElemNetTask().space(), self.table
        genes = {name: gene for name, gene in elemnet.training_genes.items()
                 if name != "inputs" or self.inner_inputs is not None}
        return replace(elemnet, training_genes=genes, network=Stack(Dense(), LinearHead(len(t.classes) or 1)),
                       input_shape=(t.x.shape[1],), inputs=Scaling(t.feature_stats, t.target_stats, self.inner_inputs))

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the classes; or the L1 error of the standardised target."""
        if self.classify:
            return F.cross_entropy(prediction, target)
        return (prediction.squeeze(-1) - target).abs().mean() / self.table.target_stats[1]

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.classify:
            return error_sums(prediction, target)
        n = len(self.class_names)
        right = (prediction.argmax(-1) == target).double()
        return torch.cat([torch.bincount(target, weights=right, minlength=n).double(),
                          torch.bincount(target, minlength=n).double()])

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        if not self.classify:
            n = max(float(sums[2]), 1.0)
            return {"mae": float(sums[0]) / n, "rmse": (float(sums[1]) / n) ** 0.5}
        right, count = sums.double().cpu().reshape(2, -1)
        seen = count > 0
        return {"accuracy": float(right.sum() / max(float(count.sum()), 1.0)),
                "balanced_accuracy": float((right[seen] / count[seen]).mean()) if seen.any() else 0.0}

    def network_io(self, genome: Genome) -> dict:
        o = self.options
        output = {"values": f"logits over the classes of {o.target}", "classes": list(self.class_names)} \
            if self.classify else {"values": f"{o.target}, {self.unit}"}
        return {"input": {"shape": [None, self.table.x.shape[1]], "columns": list(self.input_names()),
                          "normalisation": self.input_normalisation},
                "output": output}

    def input_names(self) -> tuple:
        """The network's input columns, in order."""
        return self.table.columns

    # -- baselines ------------------------------------------------------------------------------------------
    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """Regression: a random forest and the training mean; classification: logistic regression and the majority
        class; each scored with the task's metrics."""
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = train
        if self.classify:
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            constant, names = np.bincount(y).argmax(), ("logistic regression", "majority class")
        else:
            model = RandomForestRegressor(n_estimators=self.options.forest_trees, n_jobs=-1,
                                          random_state=self.options.seed)
            constant, names = float(np.mean(y)), ("random forest", "training mean")
        start = time.perf_counter()
        model.fit(x, y)
        fitted = self._scored(model.predict, evals)
        fitted["fit_seconds"] = time.perf_counter() - start
        return {names[0]: fitted, names[1]: self._scored(lambda rows: np.full(len(rows), constant), evals)}

    def _scored(self, predict: Callable, evals: dict[str, tuple]) -> dict[str, float]:
        out = {}
        for split, (x, y) in evals.items():
            values = torch.as_tensor(np.asarray(predict(x)))
            prediction = F.one_hot(values.long(), len(self.class_names)).double() if self.classify else \
                values.double().unsqueeze(-1)
            out.update({f"{split}_{name}": value for name, value in
                        self.metrics(self.metric_sums(prediction, torch.as_tensor(y))).items()})
        return out

    # -- menndl predict -------------------------------------------------------------------------------------
    def table_inputs(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        needed = [c for c in self.table.columns if c not in frame.columns]
        if needed:
            raise UserError(f"the table has no column {needed[0]!r}, which the network takes (it takes "
                            f"{listed(self.table.columns)})")
        return self.encode(frame[list(self.table.columns)])

    def output_columns(self, output: torch.Tensor) -> dict[str, np.ndarray]:
        output, name = output.detach().float().cpu(), f"predicted_{self.options.target}"
        if not self.classify:
            return {name: output.squeeze(-1).numpy()}
        probability, index = torch.softmax(output, -1).max(-1)
        return {name: np.asarray(self.class_names, dtype=object)[index.numpy()], "probability": probability.numpy()}


class TabularTask(TableTask):
    name = "tabular"
    summary = "one column of your CSV, Parquet or HDF5 table from its numeric columns (regression or classification)"
    Options = TabularOptions

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        features = self.options.features
        names = isinstance(features, list) and features and all(isinstance(f, str) for f in features) \
            and len(set(features)) == len(features)
        if not (features is None or (isinstance(features, str) and features) or names):
            raise UserError(f"task.options.features: must be a list of distinct column names or one glob pattern "
                            f"such as 'x_*', got {shown(features)}")

    def input_columns(self, frame: pd.DataFrame) -> list:
        o, where = self.options, self.data_path
        others = [c for c in frame.columns if c not in (o.target, o.split)]
        if o.features is None:
            columns = [c for c in others if pd.api.types.is_numeric_dtype(frame[c])]
            if not columns:
                raise UserError(f"{where}: no numeric column besides the target to learn from; name the features in "
                                f"task.options.features (columns: {listed(frame.columns)})")
        elif isinstance(o.features, str):
            columns = [c for c in others if fnmatch.fnmatchcase(str(c), o.features)]
            if not columns:
                raise UserError(f"{where}: no column matches task.options.features {o.features!r} (columns: "
                                f"{listed(frame.columns)})")
        else:
            columns = list(o.features)
            for c in columns:
                if c not in frame.columns:
                    raise UserError(f"{where}: no feature column {c!r} (task.options.features; columns: "
                                    f"{listed(frame.columns)})")
                if c in (o.target, o.split):
                    raise UserError(f"task.options.features: {c!r} is the {'target' if c == o.target else 'split'} "
                                    f"column; leave it out")
        return columns

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        return numeric_matrix(frame, frame.columns)


class CompositionTask(TableTask):
    name = "composition"
    summary = "one column of your table from a column of chemical formulas (ElemNet's 86 element fractions and space)"
    Options = CompositionOptions
    standardise_features = False  # fractions, as the element descriptors take them
    inner_inputs = ElementDescriptors()
    input_normalisation = "none: atomic fractions of the elements in columns, summing to 1 (from the formula)"

    def input_columns(self, frame: pd.DataFrame) -> list:
        if self.options.formula not in frame.columns:
            raise UserError(f"{self.data_path}: no formula column {self.options.formula!r} (task.options.formula; "
                            f"columns: {listed(frame.columns)})")
        return [self.options.formula]

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        return formula_fractions(frame.iloc[:, 0])

    def refuse(self, reasons: list[str]) -> tuple[np.ndarray, str]:
        rows = [i for i, reason in enumerate(reasons) if reason]
        if rows and not self.options.skip_bad_formulas:
            raise UserError(f"{self.data_path}, row {rows[0] + 1}: {reasons[rows[0]]}; correct it, or set "
                            f"task.options.skip_bad_formulas: true to leave such rows out")
        note = f"{self.data_path}: left out {len(rows)} of {len(reasons)} rows whose formula cannot be used " \
               f"(task.options.skip_bad_formulas), the first row {rows[0] + 1}: {reasons[rows[0]]}" if rows else ""
        return np.flatnonzero([not reason for reason in reasons]), note

    def input_names(self) -> tuple:
        return ELEMENTS
