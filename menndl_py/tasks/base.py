"""What a task gives the search: data, shapes, loss, metrics, a search space and hand-made baselines."""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from menndl_py import config as config_module
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.records import Outcome

SPLITS = ("train", "val", "test")
LATENCY_BATCH = 256  # rows of a latency batch (image tasks set their own)


def error_sums(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ|error|, Σerror² and the count of a batch of scalar predictions: additive terms of MAE and RMSE."""
    err = prediction.squeeze(-1).double() - target.double()
    count = torch.tensor(float(len(err)), dtype=torch.float64, device=err.device)
    return torch.stack([err.abs().sum(), (err * err).sum(), count])


class SkipImage(Exception):
    """An input image that `menndl predict` cannot use; the message says why, in one line."""


class Task(ABC):
    """One application. Tasks know nothing of MPI: they are handed a shard (rank, size) to load, and a parallel
    data maker is handed its share of the ranks (`engine.transport.share`)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    metric: ClassVar[str]  # the fitness: one of `metric_names`
    metric_names: ClassVar[tuple[str, ...]]
    unit: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    Options: ClassVar[type]  # a dataclass of task options, validated like the rest of the config
    parallel_data: ClassVar[bool] = False  # make_data(share) spreads the work over the ranks of a share
    result_metrics: ClassVar[tuple[str, ...]] = ()  # metrics `evaluate` adds to each result, stored as columns

    def __init__(self, options: Mapping[str, Any] | None = None, data_dir: str | Path = "data"):
        self.options = config_module.build(self.Options, dict(options or {}), "task.options")
        self.data_dir = Path(data_dir)

    # -- data ----------------------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return self.data_dir / f"{self.name}.h5"

    @abstractmethod
    def make_data(self, share: Solo = Solo()) -> str:
        """Write the data set to `data_path`; return a one-paragraph summary of what was made. With
        `parallel_data`, every rank of `share` calls this and the work is spread over them."""

    @abstractmethod
    def check_data(self) -> None:
        """Raise UserError (naming the file) if the data set is missing, corrupt or too small."""

    @abstractmethod
    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one split ('train', 'val', 'test'), rows `rank::size` for shard (rank, size)."""

    # -- model ---------------------------------------------------------------------------------------
    @abstractmethod
    def space(self) -> SearchSpace:
        """The default search space (the config's `search.space` may narrow it)."""

    @abstractmethod
    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss (a scalar tensor)."""

    @abstractmethod
    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Additive terms (a 1-D tensor) over a batch; summed over batches and ranks, then `metrics` is applied."""

    @abstractmethod
    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Metric values from the summed terms; must include `metric`."""

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
        """A training batch under random symmetries that leave its targets right (default: as it is)."""
        return x, y

    def evaluate(self, genome: Genome, trainer, fault_key: str | None = None, stage=None) -> Outcome:
        """Evaluate one candidate (one `train.Stage` of its training, with promotion); tasks that need no training
        (benchmarks) or calibrate a trained network override this."""
        return trainer.evaluate(genome, fault_key, stage)

    def calibration_of(self, model: torch.nn.Module, batch: int) -> dict:
        """Calibrate a trained network (or ensemble) here, in this process, on the model's device: the record
        `load_calibration` takes (the task keeps it in use). Default: nothing to calibrate."""
        return {}

    def load_calibration(self, record: Mapping[str, Any]) -> str:
        """Take up the calibration a trained network's result record (result.json, without the search's 'm:'
        prefixes) holds, before scoring it or predicting with it; returns a one-line note when the record has none
        and a fallback is used, else ''. Default: nothing to calibrate."""
        return ""

    # -- inference latency (`search.objectives: [metric, latency]`) ---------------------------------
    latency_per: ClassVar[tuple[float, str]] = (1.0, "sample")  # how a report states latency: per this many samples

    def latency_batch(self, genome: Genome) -> torch.Tensor:
        """The batch a network's latency is timed on (seconds per sample = its time / the batch's length); any
        values will do. Default: `LATENCY_BATCH` rows of the space's input shape."""
        return torch.randn(LATENCY_BATCH, *self.space().input_shape, generator=torch.Generator().manual_seed(0))

    # -- use outside menndl_py (`menndl export`) ------------------------------------------------------
    class_names: ClassVar[tuple[str, ...]] = ()  # classification and segmentation tasks: class i's name

    def network_io(self, genome: Genome) -> dict:
        """How to use the trained network of `genome` elsewhere: `input` (its `shape`, None where any size goes, and
        the `normalisation` of raw data before the network, in words, or None) and `output` (what its values are,
        in words). Default: any batch of the space's input shape, nothing to normalise, nothing said of outputs."""
        return {"input": {"shape": [None, *self.space().input_shape], "normalisation": None}, "output": {}}

    def check_shards(self, ranks: int) -> None:
        """Raise UserError (naming the file) when a split has too few rows for groups of `ranks` ranks, before any
        rank starts work. Default: nothing (the trainer refuses an empty shard when it loads)."""

    # -- batch inference (`menndl predict`) ----------------------------------------------------------
    # What `predict` reads and writes: "table" (a table in, the same table with prediction columns out), "images"
    # (images in, one row of prediction columns per image), "structures" (structure files in, one row per
    # structure), "maps" (images in, a class map and objects per image) or "" (none).
    predicts: ClassVar[str] = ""
    image_batch: ClassVar[int] = 8  # images a batch of `menndl predict` (its default --batch-size for images)

    def table_inputs(self, frame) -> tuple[np.ndarray, list[str]]:
        """Network inputs of a table's rows (a pandas DataFrame) and, per row, '' or the one-line reason it cannot
        be used (its input row is then any finite values; its prediction is not written)."""
        raise UserError(f"task {self.name}: 'menndl predict' does not read tables")

    def output_columns(self, output: torch.Tensor) -> dict[str, np.ndarray]:
        """Prediction columns (name → one value per row) from a batch of the network's outputs ("table" and "images"
        tasks): a value, or a class name and its probability."""
        raise UserError(f"task {self.name}: 'menndl predict' gives no prediction columns")

    def image_columns(self, output: torch.Tensor, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The prediction columns of a batch of images ("images" tasks) from the network's outputs (on the CPU)
        and the images it read (on its device): `output_columns` of the outputs."""
        return self.output_columns(output)


    def structures(self, inputs: list[str]) -> list[tuple[str, Any]]:
        """("structures" tasks) (source, structure) of every structure in `inputs` (files or folders), in an order
        every rank agrees on; the structure is '' plus the reason when its file cannot be read."""
        raise UserError(f"task {self.name}: 'menndl predict' does not read structures")

    def structure_inputs(self, structures: list, genome: Genome) -> tuple[np.ndarray, list[str]]:
        """("structures" tasks) Network inputs of a batch of structures and, per structure, '' or the one-line
        reason it cannot be used (its input is then any valid values; its prediction is not written)."""
        raise UserError(f"task {self.name}: 'menndl predict' does not read structures")

    @property
    def image_dims(self) -> int:
        """2 when `menndl predict` reads images, 3 when volumes (a 3-D array is then one input, not a stack).
        Default: from the space's input shape (channels first)."""
        return len(self.space().input_shape) - 1

    def prepare_image(self, image: np.ndarray, genome: Genome) -> np.ndarray:
        """One raw image as a network input (channels first, 2-D or 3-D: "images" and "maps" tasks), or SkipImage
        with the reason."""
        raise UserError(f"task {self.name}: 'menndl predict' does not read images")

    def pad_for(self, genome: Genome, x: torch.Tensor) -> torch.Tensor:
        """A batch padded to a size the network accepts."""
        return x

    def outputs(self, model: torch.nn.Module, genome: Genome, x: torch.Tensor) -> torch.Tensor:
        """The network's outputs for a batch of prepared images ("images" and "maps" tasks). Default: the model on
        the batch padded by `pad_for`."""
        return model(self.pad_for(genome, x))

    def interpret(self, output: torch.Tensor, size: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image of a batch of outputs, cropped to `size` ("maps" tasks): (class map, objects found as rows
        y, x, class, confidence)."""
        raise UserError(f"task {self.name}: 'menndl predict' writes no maps")

    # -- ensembles (`search.keep_top`, `menndl predict --network ensemble`) ------------------------------
    # How the outputs of several networks are combined: "probabilities" (logits over the classes of axis 1: their
    # softmax averaged, given as log-probabilities), "mean" (values), or "" (they cannot be: the task says why in
    # `not_ensembled`).
    ensembled: ClassVar[str] = ""
    not_ensembled: ClassVar[str] = "its networks' outputs are not averaged"
    # Mirrorings (axes of a batch flipped) that leave the task's targets mirrored alike: an ensemble averages each
    # network over them too (test-time augmentation). () alone: none.
    test_time_flips: ClassVar[tuple[tuple[int, ...], ...]] = ((),)

    def baseline_genomes(self) -> dict[str, Genome]:
        """Published hand-made networks expressed in this task's space, trained like any candidate."""
        return {}

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """Baselines that are not networks (random forests, physics models): name → {'<split>_<metric>': value}."""
        return {}


def settings_option(option: str, value, cls):
    """`cls(**value)` from the task option `option`, a mapping of `cls`'s fields (a simulator's settings);
    UserError naming the option otherwise."""
    if not isinstance(value, dict):
        raise UserError(f"task.options.{option}: must be a mapping, got {value!r}")
    try:
        return cls(**value)
    except TypeError as exc:
        raise UserError(f"task.options.{option}: {exc} (expected keys among: "
                        f"{', '.join(f.name for f in dataclasses.fields(cls))})") from None


def check_counts(path: Path, counts: Mapping[str, int], ranks: int, items: str) -> None:
    """UserError (naming the data file) when a split of a made data set has fewer `items` than a group has ranks."""
    for split, n in counts.items():
        if n < ranks:
            raise UserError(f"{path}: {split} has {n} {items}, fewer than the {ranks} ranks of a group "
                            f"(task.options.{split}_size)")
