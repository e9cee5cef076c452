"""EBSD orientation indexing (Jha et al., Microsc. Microanal. 24, 497 (2018)): a 2-D conv net reads an electron
backscatter diffraction pattern of nickel and gives the crystal orientation: as its cubic tensor (15 numbers, the
shipped configs' `target`) or as a quaternion (the default).

Data: `tasks/ebsd/data.py` (simulated patterns of random orientations, background-corrected and standardised as
users correct theirs; kikuchipy's 9 experimental nickel patterns beside them). The network takes the patterns as
stored, each with zero mean and unit standard deviation (`CORRECTED`); `menndl predict` standardises each pattern it
reads, which leaves a corrected pattern as it is. Loss (`physics/orientation.py`): for the tensor, the squared
distance to the truth's; for the quaternion, the differentiable disorientation under cubic symmetry. The shipped
configs choose the tensor: the same networks leave the chance plateau sooner with it (`configs/ebsd.yaml`'s
header). Fitness: the mean disorientation in degrees, exact (orix), with the median and the shares under 1°, 2° and
5°; every trained network is also scored on the experimental patterns (`experimental_<metric>`, when the detector is
theirs: 60 × 60 px). Baselines: Jha et al.'s network as near as the space allows, and dictionary indexing with
kikuchipy (`physics/ebsd_dictionary.py`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from menndl_py.config import setting
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.convnet import ConvNet, convnet_genes, convnet_training
from menndl_py.images import single_channel
from menndl_py.physics.ebsd import EbsdSettings, check_ranges, correct_background
from menndl_py.physics.ebsd_dictionary import NEAR, Dictionary
from menndl_py.physics.orientation import (
    TENSOR_INDICES,
    THRESHOLDS,
    disorientation_degrees,
    disorientation_loss,
    fundamental_zone,
    tensor_loss,
    tensor_orientations,
)
from menndl_py.records import Outcome, Status
from menndl_py.tasks.base import SkipImage, Task, check_counts, settings_option
from menndl_py.tasks.ebsd import data as ebsd_data
from menndl_py.train.trainer import agreed, metric_sums

EXPERIMENTAL = "experimental"
BIN_DEGREES = 0.01  # the histogram of disorientations, whose median is reported: bins this wide...
MAX_DEGREES = 63.0  # ...up to this (cubic disorientations are at most 62.8°)
BINS = round(MAX_DEGREES / BIN_DEGREES)
READ_ROWS = 4096  # patterns read from the file at a time
DOUBTFUL_MISFIT = 0.3  # tensor misfit over which network+dictionary searches the whole dictionary (session 30: on
# simulated patterns at a third of the counts, 6% of them, with 6 of the 9 the network put over 7° off)
CORRECTED = ("background-corrected patterns (the static background subtracted, then the dynamic background removed: "
             "kikuchipy's remove_static_background and remove_dynamic_background), each standardised to zero mean "
             "and unit standard deviation over its pixels, float32")

OUTPUT_WORDS = {
    "tensor": "15 numbers: the orientation's cubic tensor, the distinct components of the sum of r⊗r⊗r⊗r over the "
              "crystal's cube axes r (the rows of the rotation matrix, orix's convention: sample to crystal frame), "
              "each times the square root of its multiplicity (menndl_py.physics.orientation.cubic_tensor); the "
              "orientation is the one whose tensor lies nearest (tensor_orientations)",
    "quaternion": "4 numbers: the orientation as a quaternion (w, x, y, z) once divided by its length, orix's "
                  "convention (sample to crystal frame); any of its 24 cubic symmetry equivalents may come out"}


@dataclass(frozen=True)
class EbsdOptions:
    train_size: int = setting(20_000, min=1, max=10_000_000)
    val_size: int = setting(1_000, min=1, max=1_000_000)
    test_size: int = setting(1_000, min=1, max=1_000_000)
    seed: int = setting(0, min=0, max=2**63 - 1)
    simulator: dict = setting(factory=dict)  # EbsdSettings fields: pattern_height, pattern_width, pcx, counts, ...
    randomize: dict = setting(factory=dict)  # training patterns: EbsdSettings field -> [low, high] (or [.., "log"])
    dictionary_resolution: float = setting(3.0, min=0.5, max=30.0)  # degrees between dictionary orientations
    dictionary_refine: bool = setting(False)  # refine the dictionary's orientations (about 0.2 s per pattern)
    # what the network outputs: the shipped configs say tensor; quaternion is the default, the target of the runs
    # made before the tensor, so that their networks load as they were trained
    target: str = setting("quaternion", choices=("tensor", "quaternion"))


class EbsdTask(Task):
    name = "ebsd"
    summary = "crystal orientations of nickel from simulated EBSD patterns, fitness: mean disorientation (degrees)"
    metric = "mean_disorientation"
    metric_names = ("mean_disorientation", "median_disorientation",
                    *(f"share_under_{t:g}deg" for t in THRESHOLDS))
    unit = "degrees"
    higher_is_better = False
    parallel_data = True
    Options = EbsdOptions
    predicts = "images"
    image_batch = 64  # 60×60 patterns: 1.7x the patterns per second of 8 through `menndl predict` (session 29)
    not_ensembled = ("with target: quaternion, an orientation's four outputs stand for the same one up to their "
                     "sign and the 24 cubic symmetries, so their average is no average orientation")
    latency_per = (1.0, "pattern")
    result_metrics = tuple(f"{EXPERIMENTAL}_{m}" for m in metric_names)

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        self.settings = settings_option("simulator", self.options.simulator, EbsdSettings)
        self.ranges = check_ranges(self.settings, self.options.randomize)
        self.tensor = self.options.target == "tensor"
        self.ensembled = "mean" if self.tensor else ""  # tensors average; quaternions do not
        self.dictionary: Dictionary | None = None  # see `use_dictionary`

    # -- data ----------------------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        o = self.options
        return {"train": o.train_size, "val": o.val_size, "test": o.test_size}

    @property
    def data_path(self) -> Path:
        """One file per recipe (settings, sizes, seed, ranges, kikuchipy and orix versions)."""
        return self.data_dir / ebsd_data.file_name(self.settings, self.counts, self.options.seed, self.name,
                                                   self.ranges)

    def make_data(self, share: Solo = Solo()) -> str:
        made = ebsd_data.make_dataset(self.data_path, self.settings, self.counts, self.options.seed, share,
                                      self.ranges)
        return f"{self.data_path}: {json.dumps(made)} patterns"

    def check_data(self) -> None:
        shape = self.settings.shape
        try:
            with h5py.File(self.data_path, "r") as f:
                for split, n in {**self.counts, EXPERIMENTAL: None}.items():
                    patterns, quaternions = f[split]["patterns"], f[split]["quaternions"]
                    if n is not None and (len(patterns) != n or len(quaternions) != n):
                        raise UserError(f"{self.data_path}: {split} has {len(patterns)} patterns, expected {n}; "
                                        f"make it again with 'menndl data make ebsd --force'")
                    if n is not None and patterns.shape[1:] != shape:
                        raise UserError(f"{self.data_path}: {split} patterns are {patterns.shape[1:]}, expected "
                                        f"{shape}; make it again with 'menndl data make ebsd --force'")
        except (OSError, KeyError) as exc:
            raise UserError(f"{self.data_path}: unreadable or incomplete EBSD data set ({exc}); make it again with "
                            f"'menndl data make ebsd --force'") from None

    def check_shards(self, ranks: int) -> None:
        check_counts(self.data_path, self.counts, ranks, "patterns")

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        """Patterns (N, 1, H, W) float32 and quaternions (N, 4) float32 of rows rank::size of a split (or of the
        experimental patterns: split 'experimental')."""
        rank, size = shard
        with h5py.File(self.data_path, "r") as f:
            patterns, quaternions = f[split]["patterns"], f[split]["quaternions"]
            x = np.concatenate([patterns[start:start + READ_ROWS][(rank - start) % size::size]
                                for start in range(0, len(patterns), READ_ROWS)] or [patterns[:0]])
            y = quaternions[()][rank::size]
        return x[:, None].astype(np.float32), y.astype(np.float32)

    @property
    def scores_experimental(self) -> bool:
        """Whether the experimental patterns fit the network: the simulated detector is theirs (60 × 60 px)."""
        return self.settings.shape == (60, 60)

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        return SearchSpace(
            layer_genes=convnet_genes(dense=(0, 32, 64, 128, 256, 512, 1024)),
            training_genes=convnet_training(batch_sizes=(16, 32, 64, 128)),
            depth=(1, 6), network=ConvNet(dims=2, outputs=len(TENSOR_INDICES) if self.tensor else 4),
            input_shape=(1, *self.settings.shape),
            max_params=4_000_000)

    def latency_batch(self, genome: Genome) -> torch.Tensor:
        """`image_batch` patterns: latency is timed in the batches `menndl predict` runs (in batches of 256, the
        activations of some networks outgrow the cache, and they take 1.5-1.7x longer a pattern; session 29)."""
        return torch.randn(self.image_batch, 1, *self.settings.shape, generator=torch.Generator().manual_seed(0))

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (tensor_loss if self.tensor else disorientation_loss)(prediction, target)

    def orientations(self, prediction: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The orientations network outputs stand for (N × 4 unit quaternions, float64; NaN or 0 where the outputs
        stand for none) and how far to trust each: the tensor's misfit, or the quaternion's length."""
        if self.tensor:
            return tensor_orientations(prediction)
        found = prediction.detach().double().cpu().numpy()
        length = np.linalg.norm(found, axis=1)
        return found / np.maximum(length, 1e-12)[:, None], length

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`orientation_sums` of the orientations network outputs stand for."""
        return self.orientation_sums(self.orientations(prediction)[0], target)

    @staticmethod
    def orientation_sums(found: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        """Σ disorientation (degrees, orix) of orientations found (N × 4 quaternions), the count, the counts under
        1°, 2° and 5°, then the histogram of disorientations in BINS bins of BIN_DEGREES (the last also holds
        anything above MAX_DEGREES, and a quaternion of length 0, whose angle is NaN and makes the mean NaN)."""
        degrees = disorientation_degrees(found, target.double().cpu().numpy())
        bins = np.clip(np.nan_to_num(degrees / BIN_DEGREES, nan=BINS - 1), 0, BINS - 1).astype(np.int64)
        head = [degrees.sum(), len(degrees), *((degrees < t).sum() for t in THRESHOLDS)]
        return torch.from_numpy(np.concatenate([np.asarray(head, np.float64),
                                                np.bincount(bins, minlength=BINS).astype(np.float64)]))

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Mean and shares from the sums; the median from the histogram, interpolated linearly within its bin
        (within BIN_DEGREES of the exact median)."""
        sums = sums.double().cpu().numpy()
        n = max(sums[1], 1.0)
        out = {"mean_disorientation": sums[0] / n, "median_disorientation": median_of(sums[2 + len(THRESHOLDS):])}
        out.update({f"share_under_{t:g}deg": sums[2 + i] / n for i, t in enumerate(THRESHOLDS)})
        return {k: float(v) for k, v in out.items()}

    def evaluate(self, genome: Genome, trainer, fault_key: str | None = None, stage=None) -> Outcome:
        """Train and score a candidate, then score it on the experimental patterns too (`experimental_<metric>`:
        every rank of the group scores all 9 alone, so all agree)."""
        outcome = trainer.evaluate(genome, fault_key, stage)
        if outcome.status != Status.OK or not self.scores_experimental:
            return outcome
        found = agreed(trainer.group, lambda: self.score_experimental(outcome.model, trainer.budget.eval_batch_size,
                                                                       trainer.dtype))
        return replace(outcome, metrics={**outcome.metrics, **{f"{EXPERIMENTAL}_{k}": v for k, v in found.items()}})

    def score_experimental(self, model: torch.nn.Module, batch: int = 64, dtype=None) -> dict[str, float]:
        """The metrics of a trained network on kikuchipy's experimental nickel patterns."""
        device = next(model.parameters()).device
        x, y = (torch.as_tensor(a).to(device) for a in self.load(EXPERIMENTAL))
        return self.metrics(metric_sums(model, self, x, y, batch, dtype))

    # -- baselines -----------------------------------------------------------------------------------
    def baseline_genomes(self) -> dict[str, Genome]:
        """Jha et al.'s network (NU-CUCIS/EBSD-indexing, model.py) as near as the space allows: its 8 3×3
        convolutions in pairs (256, 512 with max pooling, 256, 96 with max pooling) at 1/8 of their filters, ReLU,
        no normalisation or dropout; its dense layers 8192-2048-1024-256 at 1/8 of their width; one head of 4
        (a quaternion) for its three branches of one Euler angle each; Adam at 1e-4 (theirs decays 5% per epoch),
        batch 64."""
        conv = {"kernel": 3, "convs": 2, "norm": "none", "activation": "relu", "dropout": 0.0}
        layers = [dict(conv, filters=32, pool="none", dense=1024), dict(conv, filters=64, pool="max", dense=256),
                  dict(conv, filters=32, pool="none", dense=128), dict(conv, filters=12, pool="max", dense=32)]
        training = {"learning_rate": 1e-4, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0}
        return {"CNN of Jha et al. 2018 (widths / 8)": Genome(layers, training)}

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """Dictionary indexing (kikuchipy) at `dictionary_resolution`, refined if `dictionary_refine`, on the
        splits of `evals` and on the experimental patterns; `seconds_per_pattern` is its indexing time (without
        making the dictionary, `dictionary_seconds`)."""
        o = self.options
        dictionary = Dictionary(self.settings, o.dictionary_resolution)
        sets = dict(evals)
        if self.scores_experimental:
            sets[EXPERIMENTAL] = self.load(EXPERIMENTAL)
        row: dict[str, float] = {"dictionary_size": len(dictionary), "dictionary_seconds": dictionary.seconds}
        seconds = patterns = 0
        for split, (x, y) in sets.items():
            started = time.perf_counter()
            found, _ = dictionary.index(x[:, 0], refine=o.dictionary_refine)
            seconds += time.perf_counter() - started
            patterns += len(x)
            sums = self.orientation_sums(found, torch.as_tensor(y))
            row.update({f"{split}_{k}": v for k, v in self.metrics(sums).items()})
        row["seconds_per_pattern"] = seconds / patterns
        name = (f"dictionary indexing ({o.dictionary_resolution:g}°, {len(dictionary):,} patterns"
                f"{', refined' if o.dictionary_refine else ''})")
        return {name: row}

    # -- use outside menndl_py -----------------------------------------------------------------------
    def network_io(self, genome: Genome) -> dict:
        h, w = self.settings.shape
        return {"input": {"shape": [None, 1, h, w], "normalisation": f"{CORRECTED}; {h}×{w} px, the detector "
                                                                     f"of the training data"},
                "output": {"values": OUTPUT_WORDS[self.options.target]}}

    # -- batch inference -----------------------------------------------------------------------------
    def prepare_image(self, image: np.ndarray, genome: Genome) -> np.ndarray:
        """A pattern of the training detector's size, background-corrected and standardised (see `CORRECTED`).
        Integer patterns are taken as raw detector counts (as vendors' files hold them) and have their dynamic
        background removed here (`predict` has no static background: subtract it first with kikuchipy where one
        was recorded); others are taken as corrected, and standardising again leaves them as they were."""
        pattern = single_channel(image, shape=self.settings.shape)  # the network's detector
        if pattern.std() == 0:
            raise SkipImage("a blank pattern (every pixel the same)")
        if np.issubdtype(pattern.dtype, np.integer):
            return correct_background(pattern[None].astype(np.float32), None)
        pattern = pattern.astype(np.float64)
        return ((pattern - pattern.mean()) / pattern.std())[None].astype(np.float32)

    def image_columns(self, output: torch.Tensor, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The orientation in the cubic fundamental zone as a quaternion (orix's convention, w >= 0) and as Bunge
        Euler angles (degrees), and how far to trust it. Tensor target: `misfit`, the distance between the outputs
        and the nearest orientation's tensor (0 for an exact one; a network torn between orientations gives one
        that is no orientation's). Quaternion target: `confidence`, the length of the 4 outputs before they are
        normalised; the loss does not depend on it, so it is no probability, but a short output lies near the
        origin, where a small change turns the orientation far (Shen et al., Acta Mater. 170, 118 (2019), found
        the quaternion norm a strong indicator of a prediction's reliability).

        With a `dictionary` (`menndl predict --method network+dictionary`), the orientation is then the best match
        among the dictionary patterns near the network's (`dictionary_orientations`), and `correlation` is the
        match's."""
        from orix.quaternion import Rotation

        found, trust = self.orientations(output)
        columns = {"misfit" if self.tensor else "confidence": trust}
        if self.dictionary is not None:
            found, columns["correlation"] = self.dictionary_orientations(images[:, 0].cpu().numpy(), found, trust)
        q = fundamental_zone(found)
        euler = Rotation(q).to_euler(degrees=True)
        return {**{f"q_{c}": q[:, i] for i, c in enumerate("wxyz")},
                **{f"euler_{name}_deg": euler[:, i] for i, name in enumerate(("phi1", "Phi", "phi2"))}, **columns}

    def dictionary_orientations(self, patterns: np.ndarray, found: np.ndarray, trust: np.ndarray) -> tuple:
        """(orientations, correlations) of patterns (N × H × W) from `dictionary`: the best match near the network's
        orientations `found`, or in the whole dictionary where it has none or its misfit `trust` (`orientations`)
        is over DOUBTFUL_MISFIT."""
        return self.dictionary.index_near(patterns, found, doubtful=trust > DOUBTFUL_MISFIT if self.tensor else None)

    def use_dictionary(self, resolution: float | None = None, near: int | None = None,
                       share: Solo = Solo()) -> Dictionary:
        """Index near the network's orientations from now on: among the `near` (default NEAR) patterns nearest
        each in a dictionary at `resolution` degrees (default `dictionary_resolution`), made here by the ranks of
        `share` on each node together (on one rank, 3°: 8 s and a peak of 1.3 GB; 2°: 26 s and 2.8 GB)."""
        self.dictionary = Dictionary(self.settings, resolution or self.options.dictionary_resolution, near or NEAR,
                                     share)
        return self.dictionary


def median_of(histogram: np.ndarray) -> float:
    """The median of values counted in bins of BIN_DEGREES from 0, interpolated linearly within its bin; NaN when
    nothing was counted."""
    total = histogram.sum()
    if total == 0:
        return float("nan")
    cumulative = np.cumsum(histogram)
    b = int(np.searchsorted(cumulative, total / 2))
    before = cumulative[b - 1] if b else 0.0
    return float((b + (total / 2 - before) / histogram[b]) * BIN_DEGREES)
