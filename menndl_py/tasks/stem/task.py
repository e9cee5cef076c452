"""STEM atomic-defect identification (the MENNDL task): a per-pixel class map of every point defect in HAADF
images of a TMD monolayer, from fully convolutional encoder–decoder networks.

Data: images made by `stem_sim` with exact labels, training images optionally under domain randomization
(`randomize`: each image its own contrast, probe, background, pixel size, dose, noise, scan and size); validation
and test images by `stem_sim`, or by multislice (`multislice`: abTEM, each split with its own microscope, so the
test set can be imaged by a microscope the training never saw; `multislice.train` adds multislice training images
of other microscopes after the simulated ones, `multislice.more_val` validation images of more microscopes after
`val`'s, so the fitness rewards networks that hold on several). Training uses tiles of the images (the networks
are fully convolutional); validation and test use whole images. Fitness: the mean over defect types of the
object-level F1 (a predicted defect counts when it lies within `match_radius` of a true one of the same type). A
trained network's defects are the peaks of each class's probability, smoothed over half a label disc, above
per-class thresholds calibrated for the best F1 on training images (the multislice ones, when there are any), as the
Fourier-filtering baseline's are; the rule is recorded in its metrics (result.json).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from menndl_py.config import setting
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.conv import ENCODER_DECODER_GENES, ENCODER_DECODER_TRAINING, EncoderDecoder
from menndl_py.physics import multislice, stem_analysis, stem_sim
from menndl_py.records import Outcome, Status
from menndl_py.tasks.base import SPLITS, SkipImage, Task, settings_option
from menndl_py.tasks.stem import data as stem_data
from menndl_py.tasks.stem import fourier as fourier_method
from menndl_py.tasks.stem import multislice_data, tiling
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import agreed, score

LATENCY_SIDE = 256  # latency is timed on whole images of this many pixels a side
CALIBRATION_IMAGES = 40  # the first training images (whole) on which detection thresholds are tuned
MAX_MULTISLICE_TRAIN = 100_000  # images of one training microscope
PAD_MULTIPLE = 16  # images of other sizes are padded (reflect) to a multiple of this: 2 ** (deepest depth - 1)
MULTISLICE_SPLITS = ("val", "test")
MULTISLICE_LISTS = {"train": "train", "more_val": "val"}  # config key -> the split its microscopes' images join


@dataclass(frozen=True)
class StemDefectsOptions:
    train_images: int = setting(400, min=1, max=1_000_000)
    val_images: int = setting(40, min=1, max=1_000_000)
    test_images: int = setting(100, min=1, max=1_000_000)
    seed: int = setting(0, min=0, max=2**63 - 1)
    simulator: dict = setting(factory=dict)  # StemSettings fields: material, dose, probe_fwhm, ...
    randomize: dict = setting(factory=dict)  # training images: StemSettings field -> [low, high] (or [.., "log"])
    multislice: dict = setting(factory=dict)  # val/test -> Microscope fields and StemSettings overrides; train and
    #                                           more_val -> a list of such blocks, each with a count of images
    multislice_repeat: int = setting(1, min=1, max=100)  # tiles per multislice training image and epoch (rolled)
    flips: bool = setting(False)  # mirror each training tile's rows and/or columns at random (rows stay scan rows)
    tile: int = setting(128, min=16, max=4096)  # training tiles of tile × tile pixels
    match_radius: float = setting(1.0, min=0.0)  # Å: how far a detection may lie from the defect it finds
    min_pixels: int = setting(3, min=1, max=1_000_000)  # smaller argmax blobs are not defects (uncalibrated networks)
    loss: str = setting("cross_entropy")  # or "focal"
    focal_gamma: float = setting(2.0, min=0.0, max=10.0)
    class_weight_power: float = setting(0.5, min=0.0, max=1.0)  # class weights (f_lattice / f_class) ** power


class StemDefectsTask(Task):
    name = "stem_defects"
    summary = "atomic defects in simulated HAADF-STEM images of WSe2 (per-pixel classes), fitness: defect F1"
    metric = "defect_f1"
    metric_names = ("defect_f1", "mean_iou")
    unit = "F1"
    higher_is_better = True
    parallel_data = True
    Options = StemDefectsOptions
    class_names = stem_sim.CLASSES
    predicts = "maps"
    ensembled = "probabilities"
    # the columns mirrored (x → -x): with it, averaged networks gained on multislice images, and the rows mirror
    # lost there (benchmarks/stem_ensemble.py)
    test_time_flips = ((), (-1,))

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        if self.options.loss not in ("cross_entropy", "focal"):
            raise UserError(f"task.options.loss: must be 'cross_entropy' or 'focal', got {self.options.loss!r}")
        self.settings = settings_option("simulator", self.options.simulator, stem_sim.StemSettings)
        self.ranges = stem_sim.check_ranges(self.settings, self.options.randomize)
        self.multislice = self._multislice_sets(self.options.multislice)
        self.multislice_lists = {split: self._multislice_list(key, self.options.multislice.get(key, []))
                                 for key, split in MULTISLICE_LISTS.items()}
        smallest = min([self.ranges.get(k, (n,))[0] for k, n in zip(stem_sim.RANDOMIZED_INTEGERS, self.settings.shape)]
                       + [min(multislice.image_shape(s, m)) for s, m, _ in self.multislice_lists["train"]])
        if self.options.tile > smallest:
            raise UserError(f"task.options.tile: {self.options.tile} is larger than the smallest training image "
                            f"({smallest} pixels a side)")
        self.radius_px = self.options.match_radius / self.settings.pixel_size
        self.smoothing_px = 0.5 * self.settings.label_radius / self.settings.pixel_size  # σ of the peak rule
        self._weights = None
        self._calibration_sets: dict[tuple[int, int], tuple] = {}
        self.rule: stem_analysis.DetectionRule | None = None  # the network's calibrated detection, once known

    def _multislice_sets(self, blocks) -> dict[str, tuple[stem_sim.StemSettings, multislice.Microscope]]:
        """{split: (specimen and imaging settings, microscope)} of the validation and test splits made by
        multislice."""
        where = "task.options.multislice"
        if not isinstance(blocks, dict) or not set(blocks) <= {*MULTISLICE_LISTS, *MULTISLICE_SPLITS}:
            raise UserError(f"{where}: must map 'val' and/or 'test' to microscope settings (and 'train' and "
                            f"'more_val' to lists of them), got {blocks!r}")
        if "more_val" in blocks and "val" not in blocks:
            raise UserError(f"{where}.more_val: needs multislice.val, whose images come first")
        return {split: self._microscope(f"{where}.{split}", block) for split, block in blocks.items()
                if split in MULTISLICE_SPLITS}

    def _microscope(self, where: str, block, extra: tuple = ()) -> tuple[stem_sim.StemSettings, multislice.Microscope]:
        """(specimen and imaging settings, microscope) of a config block of Microscope fields and StemSettings
        overrides (and the `extra` keys, left to the caller)."""
        scope = {f.name for f in fields(multislice.Microscope)}
        imaging = {f.name for f in fields(stem_sim.StemSettings)} - {"pixel_size", "label_radius", "image_size",
                                                                      "image_width"}
        if not isinstance(block, dict):
            raise UserError(f"{where}: must be a mapping of microscope and simulator settings, got {block!r}")
        unknown = set(block) - scope - imaging - set(extra)
        if unknown:
            raise UserError(f"{where}.{sorted(unknown)[0]}: unknown (expected microscope settings "
                            f"{', '.join(sorted(scope))}, or simulator settings {', '.join(sorted(imaging))}"
                            f"{''.join(', or ' + e for e in extra)})")
        try:
            settings = replace(self.settings, **{k: v for k, v in block.items() if k in imaging})
            microscope = multislice.Microscope(**{"size_multiple": PAD_MULTIPLE,
                                                  **{k: v for k, v in block.items() if k in scope}})
        except UserError as exc:
            text = str(exc).replace("task.options.", f"{where}.", 1)
            raise UserError(text.replace("multislice.", f"{where}.", 1) if text.startswith("multislice.")
                            else text) from None
        return settings, microscope

    def _multislice_list(self, key: str, blocks) -> list[tuple[stem_sim.StemSettings, multislice.Microscope, int]]:
        """[(settings, microscope, count)] of the microscopes of a list (`train`, `more_val`); none may be the test
        microscope (its voltage, convergence and detector angles), which must stay unseen. The validation images
        of all microscopes are of one size, so `more_val`'s must be `val`'s."""
        where = f"task.options.multislice.{key}"
        if not isinstance(blocks, list):
            raise UserError(f"{where}: must be a list of microscope settings, each with a count, got {blocks!r}")
        instrument = ("voltage", "convergence", "detector_inner", "detector_outer")
        test = self.multislice.get("test")
        made = []
        for k, block in enumerate(blocks):
            settings, microscope = self._microscope(f"{where}[{k}]", block, ("count",))
            count = block.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MULTISLICE_TRAIN:
                raise UserError(f"{where}[{k}].count: must be an integer in [1, {MAX_MULTISLICE_TRAIN}] (the "
                                f"number of images of this microscope), got {count!r}")
            if test and all(getattr(microscope, n) == getattr(test[1], n) for n in instrument):
                raise UserError(f"{where}[{k}]: has the test microscope's {', '.join(instrument)} "
                                f"(multislice.test), which no training or validation image may have")
            if key == "more_val" and (shape := multislice.image_shape(settings, microscope)) != (
                    val := multislice.image_shape(*self.multislice["val"])):
                raise UserError(f"{where}[{k}]: makes {shape[0]}×{shape[1]} images, multislice.val {val[0]}×{val[1]}; "
                                f"give it val's cells_x, cells_y and sampling")
            made.append((settings, microscope, count))
        return made

    # -- data ----------------------------------------------------------------------------------------
    def _recipe(self) -> dict:
        o = self.options
        recipe = {"settings": asdict(self.settings), "seed": o.seed,
                  "counts": {"train": o.train_images, "val": o.val_images, "test": o.test_images}}
        if self.ranges:
            recipe["randomize"] = self.ranges
        if self.multislice:
            recipe["multislice"] = {split: self._multislice_recipe(split) for split in self.multislice}
        for key, split in MULTISLICE_LISTS.items():
            if self.multislice_lists[split]:
                recipe.setdefault("multislice", {})[key] = [self._list_recipe(split, k) for k in
                                                            range(len(self.multislice_lists[split]))]
        return recipe

    def _multislice_recipe(self, split: str) -> dict:
        settings, microscope = self.multislice[split]
        return {"settings": asdict(settings), "microscope": asdict(microscope), "seed": self.options.seed,
                "split": split, "count": self._count(split)}

    def _list_recipe(self, split: str, block: int) -> dict:
        """The recipe of the file of microscope `block` of a split's list: its images come from generator stream
        block + 1."""
        settings, microscope, count = self.multislice_lists[split][block]
        return {"settings": asdict(settings), "microscope": asdict(microscope), "seed": self.options.seed,
                "split": split, "count": count, "stream": block + 1}

    def _count(self, split: str) -> int:
        return {"train": self.options.train_images, "val": self.options.val_images,
                "test": self.options.test_images}[split]

    def multislice_path(self, split: str, block: int | None = None) -> Path:
        """The multislice file of a split (of microscope `block` of its list: training, or more validation), named
        by its own recipe, so configs that share it make it once."""
        recipe = self._multislice_recipe(split) if block is None else self._list_recipe(split, block)
        text = json.dumps(recipe, sort_keys=True)
        return self.data_dir / f"stem_multislice-{hashlib.sha1(text.encode()).hexdigest()[:10]}.h5"

    def _stored(self, split: str) -> int:
        """Images of a split in the data file: its list's multislice images after its own."""
        return self._count(split) + sum(n for _, _, n in self.multislice_lists.get(split, ()))

    @property
    def data_path(self) -> Path:
        """One file per recipe (settings, seed, sizes), so a changed config never meets stale data."""
        digest = hashlib.sha1(json.dumps(self._recipe(), sort_keys=True).encode()).hexdigest()[:10]
        return self.data_dir / f"{self.name}-{digest}.h5"

    def make_data(self, share: Solo = Solo()) -> str:
        """The multislice sets first (each its own resumable file, reused when it is there), then the data file,
        into which the validation and test sets are copied and the listed microscopes' images appended. The
        summary names the simulator of each split and the multislice times."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        recipe = self._recipe()
        sets = [(split, None, settings, microscope, self._count(split))
                for split, (settings, microscope) in self.multislice.items()]
        sets += [(split, k, settings, microscope, count) for split, blocks in self.multislice_lists.items()
                 for k, (settings, microscope, count) in enumerate(blocks)]
        times = {}
        for split, block, settings, microscope, count in sets:
            path = self.multislice_path(split, block)
            if not path.exists():
                start = time.perf_counter()
                multislice_data.make_dataset(path, settings, microscope, split, count, self.options.seed, share,
                                             stream=0 if block is None else block + 1)
                times[split if block is None else f"{split}[{block}]"] = time.perf_counter() - start
        copied = {split: self.multislice_path(split) for split in self.multislice}
        appended = {split: tuple(self.multislice_path(split, k) for k in range(len(blocks)))
                    for split, blocks in self.multislice_lists.items()}
        counts = stem_data.make_dataset(self.data_path, self.settings, recipe["counts"], recipe["seed"], share,
                                        self.ranges, copied, appended)
        made = "; ".join(f"{split} made in {t:.0f} s on {share.size} rank(s)" for split, t in times.items())
        sources = "; ".join(f"{split}: {source}" for split, source in self.data_sources().items())
        return f"{self.data_path}: {json.dumps(counts)}; " + (f"multislice {made}; " if made else "") + sources

    def data_sources(self) -> dict[str, str]:
        """{split: the simulator that made it} from the data file."""
        with h5py.File(self.data_path, "r") as f:
            return {split: str(f[split].attrs.get("source", "stem_sim (fast simulator)")) for split in SPLITS}

    def check_data(self) -> None:
        try:
            with h5py.File(self.data_path, "r") as f:
                for split in SPLITS:
                    n = len(f[split]["images"])
                    if n < self._stored(split):
                        raise UserError(f"{self.data_path}: {split} has {n} images, expected {self._stored(split)}")
                    if split in self.multislice:
                        shape = multislice.image_shape(*self.multislice[split])
                    elif split == "train" and "shapes" in f[split]:
                        continue
                    else:
                        shape = self.settings.shape
                    if f[split]["images"].shape[1:] != shape:
                        raise UserError(f"{self.data_path}: {split} images are not {shape[0]}×{shape[1]}")
        except (OSError, KeyError) as exc:
            raise UserError(f"{self.data_path}: unreadable or incomplete STEM data set ({exc}); make it again "
                            f"with 'menndl data make stem_defects --force'") from None

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        with h5py.File(self.data_path, "r") as f:
            rows = np.arange(shard[0], self._stored(split), shard[1])
            images, labels = stem_data.read(f[split], rows)
            if split == "train" and self._weights is None:
                self._weights = self._class_weights(f["train"]["labels"])
        if isinstance(images, list):  # ragged: images of many sizes, tiled one by one
            tile = self.options.tile
            x, y = [], []
            for row, image, label in zip(rows, images, labels):
                for image, label in self._copies(row, standardize(image), label):
                    x.append(tiles(image[None, None], tile))
                    y.append(tiles(label[None, None], tile)[:, 0])
            return np.concatenate(x), np.concatenate(y).astype(np.int64)
        x = standardize(images)[:, None]
        y = labels.astype(np.int64)
        if split == "train":
            x, y = tiles(x, self.options.tile), tiles(y[:, None], self.options.tile)[:, 0]
        return x, y

    def _copies(self, row: int, image: np.ndarray, labels: np.ndarray):
        """(image, labels) of a training image, or, for a multislice one (a periodic cell), `multislice_repeat`
        copies rolled by 1/repeat of its height and width each, so its tiles cover the whole cell."""
        repeat = self.options.multislice_repeat if row >= self.options.train_images else 1
        for k in range(repeat):
            shift = (k * image.shape[0] // repeat, k * image.shape[1] // repeat)
            yield np.roll(image, shift, (0, 1)), np.roll(labels, shift, (0, 1))

    def _class_weights(self, labels: h5py.Dataset) -> np.ndarray:
        """(f_lattice / f_class) ** power from the whole training split's pixel counts (the same on every rank)."""
        counts = np.zeros(len(self.class_names))
        for start in range(0, len(labels), 64):
            block = labels[start:start + 64]
            pixels = np.concatenate(list(block)) if block.dtype == object else block.ravel()
            counts += np.bincount(pixels, minlength=len(self.class_names))
        return (counts[0] / np.maximum(counts, 1)) ** self.options.class_weight_power

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        return SearchSpace(
            layer_genes=ENCODER_DECODER_GENES, training_genes=ENCODER_DECODER_TRAINING,
            depth=(1, 5), network=EncoderDecoder(len(self.class_names)),
            input_shape=(1, self.options.tile, self.options.tile), max_params=4_000_000)

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
        """With `flips`, each tile (and its labels) mirrored top to bottom and left to right, each with
        probability 1/2: the image of the mirrored specimen (a monolayer's mirror image is a monolayer), scanned
        along the same rows, so row jitter stays row jitter (a transpose would not keep that)."""
        if not self.options.flips:
            return x, y
        coins = (torch.rand((len(x), 2), generator=generator) < 0.5).to(x.device)
        for axis, dims in enumerate(((-2,), (-1,))):
            flip = coins[:, axis]
            x = torch.where(flip[:, None, None, None], x.flip(dims), x)
            y = torch.where(flip[:, None, None], y.flip(dims), y)
        return x, y

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._weights is None:
            raise RuntimeError("load('train') first: the class weights come from the training labels")
        weight = torch.as_tensor(self._weights, dtype=prediction.dtype, device=prediction.device)
        if self.options.loss == "cross_entropy":
            return F.cross_entropy(prediction, target, weight=weight)
        log_p = F.log_softmax(prediction, 1).gather(1, target[:, None])[:, 0]
        focal = (1 - log_p.exp()) ** self.options.focal_gamma * -log_p
        return (focal * weight[target]).sum() / weight[target].sum()

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per defect class TP, FP, FN of detection (`detect`), then per class pixel intersection and union of the
        argmax map."""
        n = len(self.class_names)
        probabilities = torch.softmax(prediction.float(), 1).cpu().numpy()
        labels = target.cpu().numpy()
        detection = np.zeros((n - 1, 3), np.int64)
        pixels = np.zeros((n, 2), np.int64)
        for p, t in zip(probabilities, labels):
            found = self.detect(p)
            detection += stem_analysis.match_counts(found, true_defects(t), self.radius_px, n)
            pixels += stem_analysis.pixel_iou_counts(p.argmax(0), t, n)
        return torch.from_numpy(np.concatenate([detection.ravel(), pixels.ravel()]).astype(np.float64))

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = len(self.class_names)
        sums = sums.numpy()
        f1 = stem_analysis.f1_scores(sums[:3 * (n - 1)], self.class_names[1:])
        iou = stem_analysis.iou_scores(sums[3 * (n - 1):], self.class_names)
        out = {"defect_f1": f1["defect_f1"], "mean_iou": iou["mean_iou"]}
        out.update({k: v for k, v in {**f1, **iou}.items() if k.startswith(("f1_", "iou_"))})
        return {k: (0.0 if v != v and k != "defect_f1" else v) for k, v in out.items()}

    # -- detection -----------------------------------------------------------------------------------
    def detect(self, probabilities: np.ndarray) -> np.ndarray:
        """One image's defects (K×4) from softmax outputs: by the calibrated `rule`, or, while there is none,
        argmax components of at least `min_pixels` pixels."""
        if self.rule is None:
            return stem_analysis.extract_defects(probabilities, self.options.min_pixels)
        return stem_analysis.threshold_defects(probabilities, self.rule)

    def evaluate(self, genome: Genome, trainer, fault_key: str | None = None, stage=None) -> Outcome:
        """Train and score a candidate, then calibrate its detection on training images and score validation
        again with it; the outcome's metrics record the rule (`threshold_<class>`, `smoothing`)."""
        self.rule = None  # a new network: the trainer's own validation score is by argmax
        outcome = trainer.evaluate(genome, fault_key, stage)
        if outcome.status != Status.OK:
            return outcome
        batch = trainer.budget.eval_batch_size
        self.rule = self.calibrate(outcome.model, trainer.group, trainer.device, batch)
        val = score(outcome.model, self, *trainer.data["val"], trainer.group, batch, trainer.dtype)
        metrics = {**outcome.metrics, **{f"val_{k}": v for k, v in val.items()}, **self.rule_record()}
        return replace(outcome, fitness=metrics[f"val_{self.metric}"], metrics=metrics)

    def calibrate(self, model: torch.nn.Module, group, device: torch.device, batch: int) -> stem_analysis.DetectionRule:
        """The rule of the best F1 per defect class on the calibration images (`_calibration_rows`, whole, not
        tiles), from the grid of `stem_analysis.calibrate`. Each rank of `group` takes its share of the images and
        the counts are summed over the group, so every rank chooses the same rule (or every rank raises
        GroupFailure, when counting failed on any)."""
        counts = agreed(group, lambda: self._threshold_counts(model, (group.rank, group.size), device, batch))
        return stem_analysis.calibrate(group.sum(torch.from_numpy(counts)).numpy(), self.smoothing_px)

    def calibration_of(self, model: torch.nn.Module, batch: int) -> dict:
        self.rule = self.calibrate(model, LocalGroup(), next(model.parameters()).device, batch)
        return self.rule_record()

    def _threshold_counts(self, model: torch.nn.Module, shard: tuple[int, int], device: torch.device,
                          batch: int) -> np.ndarray:
        """This shard's counts of `stem_analysis.threshold_counts` over the threshold grid."""
        x, tables, radii = self.calibration_set(shard)
        counts = np.zeros((len(self.class_names) - 1, len(stem_analysis.THRESHOLD_GRID), 3))
        model.eval()
        with torch.no_grad():
            step = batch if isinstance(x, np.ndarray) else 1   # images of many sizes: one at a time
            for start in range(0, len(x), step):
                images = x[start:start + batch] if isinstance(x, np.ndarray) else x[start][None]
                h, w = images.shape[-2:]
                padded = F.pad(torch.from_numpy(images), (0, -w % PAD_MULTIPLE, 0, -h % PAD_MULTIPLE), mode="reflect")
                output = model(padded.to(device))[..., :h, :w]
                for p, true, radius in zip(torch.softmax(output.float(), 1).cpu().numpy(),
                                           tables[start:start + len(images)], radii[start:start + len(images)]):
                    counts += stem_analysis.threshold_counts(p, true, radius, self.smoothing_px)
        return counts

    def calibration_set(self, shard: tuple[int, int]) -> tuple[np.ndarray | list, list, np.ndarray]:
        """Standardized images (N×1×H×W, or a list of 1×H×W of many sizes), true defect tables and match radii in
        pixels (each image's own pixel size, when randomized) of a shard of the calibration images (cached)."""
        if shard not in self._calibration_sets:
            images, labels = self._calibration_images(shard)
            x = [standardize(i)[None] for i in images] if isinstance(images, list) else standardize(images)[:, None]
            rows = self._calibration_rows()[shard[0]::shard[1]]
            with h5py.File(self.data_path, "r") as f:
                drawn = f["train"]["settings"][rows] if "settings" in f["train"] else [None] * len(rows)
            radii = np.array([self.options.match_radius / json.loads(d)["pixel_size"] if d else self.radius_px
                              for d in drawn])
            self._calibration_sets[shard] = (x, [true_defects(t) for t in labels], radii)
        return self._calibration_sets[shard]

    def _calibration_rows(self) -> np.ndarray:
        """The training images detection is calibrated on: every multislice training image when there are any
        (the closest to real microscopes', and small), else the first CALIBRATION_IMAGES simulated ones."""
        if self.multislice_lists["train"]:
            return np.arange(self.options.train_images, self._stored("train"))
        return np.arange(min(CALIBRATION_IMAGES, self.options.train_images))

    def _calibration_images(self, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        """Raw images and label maps of the calibration images (`_calibration_rows`), rows rank::size for shard
        (rank, size)."""
        rows = self._calibration_rows()[shard[0]::shard[1]]
        with h5py.File(self.data_path, "r") as f:
            return stem_data.read(f["train"], rows)

    def rule_record(self) -> dict:
        """The calibrated rule as metrics: `threshold_<class>` per defect class and `smoothing` (pixels)."""
        return {**{f"threshold_{n}": t for n, t in zip(self.class_names[1:], self.rule.thresholds)},
                "smoothing": self.rule.smoothing}

    def load_calibration(self, record: dict) -> str:
        keys = [f"threshold_{n}" for n in self.class_names[1:]] + ["smoothing"]
        if not all(k in record for k in keys):
            self.rule = None
            return (f"no calibrated detection rule (thresholds and smoothing); defects are argmax components of at "
                    f"least {self.options.min_pixels} pixels")
        self.rule = stem_analysis.DetectionRule(tuple(float(record[k]) for k in keys[:-1]), float(record["smoothing"]))
        return ""

    # -- baselines -----------------------------------------------------------------------------------
    def baseline_genomes(self) -> dict[str, Genome]:
        """A classic U-Net (Ronneberger et al. 2015) scaled to the budget: 4 levels, 16→128 filters, two 3×3
        convolutions with batch norm and ReLU per level, max pooling, transposed convolutions, skips."""
        level = {"kernel": 3, "convs": 2, "activation": "relu", "norm": "batch", "down": "max", "up": "transpose",
                 "skip": True, "dropout": 0.0}
        layers = [dict(level, filters=f) for f in (16, 32, 48, 64)]
        training = {"learning_rate": 1e-3, "batch_size": 8, "optimizer": "adam", "weight_decay": 0.0}
        return {"U-Net (hand-designed)": Genome(layers, training)}

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """The Fourier-filtering method, its thresholds tuned on the calibration images (`_calibration_rows`; its
        parameters in the row's `method`, for `menndl predict --method fourier`)."""
        images, labels = self._calibration_images()
        fourier = stem_analysis.FourierFilterBaseline(disk_radius=self.settings.label_radius / self.settings.pixel_size)
        fourier.fit(list(images), [true_defects(t) for t in labels], self.radius_px)
        row = {}
        for split in evals:
            with h5py.File(self.data_path, "r") as f:
                images, labels = f[split]["images"][()], f[split]["labels"][()]
            n_cls = len(self.class_names)
            detection, pixels = np.zeros((n_cls - 1, 3), np.int64), np.zeros((n_cls, 2), np.int64)
            for image, t in zip(images, labels):
                detection += stem_analysis.match_counts(fourier.predict(image), true_defects(t), self.radius_px,
                                                        n_cls)
                pixels += stem_analysis.pixel_iou_counts(fourier.predict_map(image), t, n_cls)
            sums = torch.from_numpy(np.concatenate([detection.ravel(), pixels.ravel()]).astype(np.float64))
            row.update({f"{split}_{k}": v for k, v in self.metrics(sums).items()})
        row["method"] = fourier_method.record(fourier, self.class_names, self.settings.pixel_size)
        return {"Fourier filtering (Bragg-peak reconstruction)": row}

    # -- use outside menndl_py -----------------------------------------------------------------------
    def network_io(self, genome: Genome) -> dict:
        side = 2 ** (genome.depth - 1)
        return {"input": {"shape": [None, 1, None, None], "size_multiple": side,
                          "normalisation": f"each image to zero mean and unit standard deviation over its pixels "
                                           f"(float32), then padded (mirrored about its last row and column) at "
                                           f"the bottom and right to a height and width that are multiples of "
                                           f"{side}; images larger than {tiling.WINDOW} pixels a side in "
                                           f"overlapping windows that reach {tiling.receptive_radius(genome.layers)} "
                                           f"pixels past the part of the output kept"},
                "output": {"values": "a logit per class and pixel (softmax over axis 1: probabilities), cropped to "
                                     "the image's size; a defect of a class at each pixel whose probability, "
                                     "smoothed by a Gaussian of σ `smoothing` pixels (the result's), is the "
                                     f"largest within {stem_analysis.PEAK_WINDOW}×{stem_analysis.PEAK_WINDOW} "
                                     "pixels and at least the result's threshold_<class>"}}

    # -- batch inference -----------------------------------------------------------------------------
    def prepare_image(self, image: np.ndarray, genome: Genome) -> np.ndarray:
        if image.dtype.kind not in "uif":
            raise SkipImage(f"wrong dtype {image.dtype}; expected integer or floating-point pixels")
        if image.ndim != 2:
            raise SkipImage(f"shape {image.shape}; expected a 2-D grayscale image")
        if min(image.shape) < 2 * self.options.min_pixels:
            raise SkipImage(f"{image.shape[0]}×{image.shape[1]} is smaller than the network accepts "
                            f"({2 * self.options.min_pixels} pixels a side)")
        if not np.isfinite(image).all():
            raise SkipImage("contains NaN or infinite pixels")
        if float(image.std()) == 0.0:
            raise SkipImage("a blank image (every pixel the same)")
        return standardize(image[None].astype(np.float32))

    latency_per = (1.0, f"{LATENCY_SIDE}×{LATENCY_SIDE} image")

    def latency_batch(self, genome: Genome) -> torch.Tensor:
        """A batch of whole images as `menndl predict` sees them: 4 of 256×256 pixels, padded for the network."""
        x = torch.randn(4, 1, LATENCY_SIDE, LATENCY_SIDE, generator=torch.Generator().manual_seed(0))
        return self.pad_for(genome, x)

    def pad_for(self, genome: Genome, x: torch.Tensor) -> torch.Tensor:
        side = 2 ** (genome.depth - 1)
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % side, 0, -h % side), mode="reflect") if (h % side or w % side) else x

    def outputs(self, model: torch.nn.Module, genome: Genome, x: torch.Tensor) -> torch.Tensor:
        """Logits for whole images of any size and aspect (`tiling.segment`): mirror-padded to the network's
        stride, and above `tiling.WINDOW` pixels a side in overlapping windows, each image's edges meeting the
        network's zero padding as in training and validation."""
        return tiling.segment(model, x, 2 ** (genome.depth - 1), tiling.receptive_radius(genome.layers))

    def interpret(self, output: torch.Tensor, size: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
        """The argmax class map and the defects found by `detect` of each image."""
        probabilities = torch.softmax(output[..., :size[0], :size[1]].float(), 1).cpu().numpy()
        return [(p.argmax(0).astype(np.uint8), self.detect(p)) for p in probabilities]


def standardize(images: np.ndarray) -> np.ndarray:
    """Each image to zero mean and unit standard deviation (over its last two axes), float32."""
    images = images.astype(np.float32)
    mean = images.mean(axis=(-2, -1), keepdims=True)
    std = images.std(axis=(-2, -1), keepdims=True)
    return (images - mean) / np.maximum(std, 1e-6)


def tiles(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) → (N·⌊H/size⌋·⌊W/size⌋, C, size, size)."""
    n, c, h, w = x.shape
    if h < size or w < size:
        raise UserError(f"task.options.tile: {size} is larger than the {h}×{w} images")
    ny, nx = h // size, w // size
    x = x[:, :, :ny * size, :nx * size].reshape(n, c, ny, size, nx, size)
    return np.ascontiguousarray(x.transpose(0, 2, 4, 1, 3, 5).reshape(n * ny * nx, c, size, size))


def true_defects(labels: np.ndarray) -> np.ndarray:
    """The true defect table of a label map: one defect per labelled disk (its centroid and class)."""
    return stem_analysis.extract_defects(labels, min_pixels=1)[:, :3]
