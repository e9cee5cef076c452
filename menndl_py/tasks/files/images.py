"""`images`: classify images (2-D) or volumes (3-D), or regress one value per image, from a user's files, with
searched conv nets (`genome.networks.convnet`), configured in YAML only.

Images: an HDF5 dataset or `.npz` array (`dataset`, default "images"), a `.npy` array, or a folder of TIFF/PNG
files (one image or volume per file, sorted by name); shapes as `stacks` reads them. Labels, one per image: a
dataset or array of the same file (`labels`), or a CSV file (`labels_path`, column `label_column`). A CSV is
matched to a folder's files by its `file` column (names relative to the folder) when it has one, else by row order
(the images' order). `split`: a dataset of the images file, or a column of the labels CSV; else seeded fractions.

The network standardises each image itself (a parameter-free first stage) and, for regression, gives values in
the target's units (its training mean and standard deviation are buffers of the network), so exported networks
and `menndl predict` take raw images. Classification: logits, cross-entropy, fitness `accuracy` (or
`balanced_accuracy`), class names the sorted distinct labels. Regression: mean squared error in standard units,
fitness `mae` (or `rmse`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from menndl_py.config import setting
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.convnet import ConvNet, convnet_genes, convnet_training
from menndl_py.images import single_channel
from menndl_py.tasks.base import error_sums
from menndl_py.tasks.files import splits
from menndl_py.tasks.files.base import FileTask
from menndl_py.tasks.files.stacks import Stack, StandardisedInputs, read_array, standardise

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy")
REGRESSION_METRICS = ("mae", "rmse")
LINEAR_BASELINE_VALUES = 20_000_000  # training pixels above which the linear baseline is left out (not cheap)
RAW_PIXELS = "none: raw pixel values (the network standardises each image)"


@dataclass(frozen=True)
class ImagesOptions(splits.FileOptions):
    dataset: str = setting("images")  # the images' HDF5 dataset or .npz array
    dims: Optional[int] = setting(None, choices=(2, 3))  # 2-D images or 3-D volumes (default: from the shape)
    kind: str = setting("classification", choices=("classification", "regression"))
    labels: Optional[str] = setting(None)  # a dataset (array) of the images file: one label per image
    labels_path: str = setting("")  # or a CSV file of labels
    label_column: str = setting("label")
    fitness: Optional[str] = setting(None)  # classification: accuracy (default), balanced_accuracy; regression: mae
    # (default), rmse
    unit: str = setting("")  # regression: the labels' unit, for reports (default "target units")


class ImagesTask(FileTask):
    name = "images"
    summary = "a label or value per image (2-D) or volume (3-D) of your files, conv nets; fitness: accuracy or MAE"
    Options = ImagesOptions
    predicts = "images"

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        o = self.options
        if not o.path:
            raise UserError("task.options.path: name the images file or folder")
        if (o.labels is None) == (not o.labels_path):
            raise UserError("task.options: give one of labels (a dataset of the images file) or labels_path "
                            "(a CSV file)")
        self.classify = o.kind == "classification"
        self.ensembled = "probabilities" if self.classify else "mean"
        self.metric_names = CLASSIFICATION_METRICS if self.classify else REGRESSION_METRICS
        self.metric = o.fitness or self.metric_names[0]
        if self.metric not in self.metric_names:
            raise UserError(f"task.options.fitness: must be one of {', '.join(self.metric_names)} for {o.kind}, "
                            f"got {self.metric!r}")
        self.higher_is_better = self.classify
        self.unit = "fraction" if self.classify else (o.unit or "target units")
        self.target_name = o.label_column if o.labels_path else Path(o.labels).name

    # -- data ----------------------------------------------------------------------------------------
    @functools.cached_property
    def stack(self) -> Stack:
        kind_of_file = self.data_path.suffix.lower() in (".h5", ".hdf5", ".npz")
        return Stack(self.data_path, self.options.dataset if kind_of_file else None, self.options.dims)

    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, Optional[np.ndarray], str, str]:
        """(labels, split values or None, where the labels are, where the split is), in the images' order."""
        o, stack = self.options, self.stack
        if o.labels is not None:
            labels, where = read_array(self.data_path, o.labels), f"{self.data_path}:/{o.labels}"
            split = read_array(self.data_path, o.split) if o.split else None
            split_where = f"{self.data_path}:/{o.split}"
            if labels.ndim > 1 and labels.shape[1:] != (1,) * (labels.ndim - 1):
                raise UserError(f"{where}: shape {labels.shape}; expected one label per image")
            labels = labels.reshape(-1)
        else:
            labels, split, where = self._csv(stack)
            split_where = f"{o.labels_path} column {o.split!r}"
        if len(labels) != stack.count:
            raise UserError(f"{where}: {len(labels)} labels for {stack.count} images ({stack.where}); expected one "
                            f"per image")
        if split is not None and len(split) != stack.count:
            raise UserError(f"{split_where}: {len(split)} split values for {stack.count} images")
        return labels, split, where, split_where

    def _csv(self, stack: Stack) -> tuple[np.ndarray, Optional[np.ndarray], str]:
        o, path = self.options, Path(self.options.labels_path)
        try:
            table = pd.read_csv(path)
        except FileNotFoundError:
            raise UserError(f"{path}: no such labels file (task.options.labels_path)") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable CSV, named in one line
            raise UserError(f"{path}: cannot read the labels ({' '.join(str(exc).split())})") from None
        for column in [o.label_column] + ([o.split] if o.split else []):
            if column not in table.columns:
                raise UserError(f"{path}: no column {column!r} (it has {', '.join(map(str, table.columns))})")
        if "file" in table.columns and stack.kind == "folder":
            order = {name: row for row, name in enumerate(table["file"].astype(str))}
            missing = [name for name in stack.files() if name not in order]
            if missing:
                raise UserError(f"{path}: no row for image file {missing[0]!r} in column 'file' "
                                f"({len(missing)} images have none)")
            table = table.iloc[[order[name] for name in stack.files()]]
        split = table[o.split].to_numpy() if o.split else None
        return table[o.label_column].to_numpy(), split, f"{path} column {o.label_column!r}"

    @property
    def targets(self) -> np.ndarray:
        """Per image: the class index (int64) or the value (float32)."""
        return self._checked_labels[0]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Classification: the sorted distinct labels, as strings."""
        return self._checked_labels[1] if self.classify else ()

    @functools.cached_property
    def _checked_labels(self) -> tuple[np.ndarray, tuple[str, ...]]:
        labels, _, where, _ = self._table
        if not self.classify:
            values = pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy(np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                first = int(bad[0])
                raise UserError(f"{where}: label {labels.tolist()[first]!r} of image {self.stack.name(first)} is not a "
                                f"finite number ({len(bad)} such labels)")
            return values.astype(np.float32), ()
        missing = np.flatnonzero(pd.isna(pd.Series(labels)).to_numpy())
        if len(missing):
            raise UserError(f"{where}: image {self.stack.name(int(missing[0]))} has no label ({len(missing)} missing)")
        distinct = sorted(set(labels.tolist()), key=lambda v: (isinstance(v, str), v))
        if len(distinct) < 2:
            raise UserError(f"{where}: every image has the label {distinct[0]!r}; classification needs at least 2 "
                            f"classes")
        index = {v: i for i, v in enumerate(distinct)}
        return np.asarray([index[v] for v in labels.tolist()], dtype=np.int64), tuple(str(v) for v in distinct)

    @functools.cached_property
    def splits(self) -> dict[str, np.ndarray]:
        _, split, _, split_where = self._table
        if split is not None:
            return splits.by_labels(split, split_where)
        o = self.options
        return splits.by_fractions(self.stack.count, o.val_fraction, o.test_fraction, o.seed)

    def check_data(self) -> None:
        _ = self.targets, self.splits  # read and checked on first use
        self.stack.check_pixels()

    def check_shards(self, ranks: int) -> None:
        splits.check_sizes(self.splits, ranks, str(self.data_path))

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        rows = splits.shard(self.splits[split], shard)
        return self.stack.read(rows)[:, None].astype(np.float32), self.targets[rows]

    @functools.cached_property
    def _target_scale(self) -> Optional[tuple[float, float]]:
        """Regression: the training split's mean and standard deviation of the target."""
        if self.classify:
            return None
        train = self.targets[self.splits["train"]].astype(np.float64)
        return float(train.mean()), float(max(train.std(), 1e-12))

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        outputs = len(self.class_names) if self.classify else 1
        return SearchSpace(
            layer_genes=convnet_genes(), training_genes=convnet_training(),
            depth=(1, 6), network=ConvNet(dims=self.stack.dims, outputs=outputs),
            input_shape=(1, *self.stack.shape), max_params=4_000_000,
            inputs=StandardisedInputs(self._target_scale))

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.classify:
            return F.cross_entropy(prediction, target)
        mean, std = self._target_scale
        return F.mse_loss((prediction.squeeze(-1) - mean) / std, (target - mean) / std)

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Classification: the confusion matrix (true × predicted, flattened); regression: Σ|error|, Σerror², n."""
        if not self.classify:
            return error_sums(prediction, target)
        return confusion(prediction.argmax(1), target, len(self.class_names))

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        if not self.classify:
            n = max(float(sums[2]), 1.0)
            return {"mae": float(sums[0]) / n, "rmse": (float(sums[1]) / n) ** 0.5}
        k = len(self.class_names)
        matrix = sums.double().reshape(k, k)
        support = matrix.sum(1)
        recall = matrix.diagonal()[support > 0] / support[support > 0]
        return {"accuracy": float(matrix.trace() / max(float(matrix.sum()), 1.0)),
                "balanced_accuracy": float(recall.mean()) if len(recall) else 0.0}

    # -- baselines -----------------------------------------------------------------------------------
    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """The majority class (classification) or training mean (regression), and logistic regression or ridge
        on the flattened, per-image-standardised pixels when the training pixels are few enough to be cheap."""
        from sklearn.linear_model import LogisticRegression, Ridge

        x, y = train
        dims = self.stack.dims
        constant = np.bincount(y).argmax() if self.classify else float(y.mean())
        baselines = {("majority class" if self.classify else "training mean"): lambda images: np.full(len(images),
                                                                                                      constant)}
        if x.size <= LINEAR_BASELINE_VALUES:
            flat = standardise(x, dims).reshape(len(x), -1)
            model = (LogisticRegression(max_iter=300) if self.classify else Ridge(alpha=1.0)).fit(flat, y)
            name = "logistic regression on pixels" if self.classify else "ridge regression on pixels"
            baselines[name] = lambda images: model.predict(standardise(images, dims).reshape(len(images), -1))
        rows = {}
        for name, predict in baselines.items():
            rows[name] = {}
            for split, (images, truth) in evals.items():
                predicted, truth = torch.as_tensor(predict(images)), torch.as_tensor(truth)
                sums = (confusion(predicted.long(), truth, len(self.class_names)) if self.classify
                        else error_sums(predicted.double()[:, None], truth))
                rows[name].update({f"{split}_{k}": v for k, v in self.metrics(sums).items()})
        return rows

    # -- use outside menndl_py -----------------------------------------------------------------------
    def network_io(self, genome: Genome) -> dict:
        if self.classify:
            values = f"a logit per class (softmax over axis 1: probabilities), classes {list(self.class_names)}"
        else:
            values = f"{self.target_name}, in the units of the training labels"
        return {"input": {"shape": [None, *self.space().input_shape], "normalisation": RAW_PIXELS},
                "output": {"values": values}}

    def prepare_image(self, image: np.ndarray, genome: Genome) -> np.ndarray:
        return single_channel(image, self.stack.dims, self.stack.shape)[None].astype(np.float32)

    def output_columns(self, output: torch.Tensor) -> dict[str, np.ndarray]:
        if not self.classify:
            return {f"predicted_{self.target_name}": output.float().squeeze(-1).cpu().numpy()}
        probability, index = torch.softmax(output.float(), 1).max(1)
        return {"predicted_class": np.asarray(self.class_names)[index.cpu().numpy()],
                "probability": probability.cpu().numpy()}


def confusion(predicted: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """The k×k confusion counts (true × predicted), flattened, float64."""
    cells = target.long() * k + predicted.long()
    return torch.bincount(cells.cpu(), minlength=k * k).double()
