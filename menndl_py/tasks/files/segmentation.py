"""`segmentation`: a class per pixel of 2-D images from a user's files, with searched encoder–decoder networks
(`genome.networks.conv`, as STEM's), configured in YAML only.

Data: images and integer masks of the same shape: an HDF5 file or `.npz` archive with both (`images`, `masks`:
AtomAI's (N, H, W) arrays), or two folders of TIFF/PNG files (`path` the images, `masks_path` the masks), paired by
file name without its suffix. Classes: `classes`, or the largest value of the training masks + 1; names
`class_names`, or "0".."k-1"; class 0 is the background when objects are counted.

The network standardises each image itself (a parameter-free first stage), so exported networks take raw images:
a plain module from (N, 1, H, W) to (N, classes, H, W) logits, H and W multiples of 2**(levels - 1) (AtomAI's
custom-model shape). Images are padded (edge values) to multiples of PAD, the masks with IGNORE, which neither the
loss nor the metrics count; nor do they count the pixels whose mask value is `ignore_value` (unlabelled, e.g.
255). Training takes random `tile` × `tile` crops of images larger than that; validation and test take whole
images. Loss: cross-entropy with class weights (1 / the class's pixel frequency in the training
masks) ** `class_weight_power`. Fitness: the mean over all classes, background included, of the pixel IoU over the
split (intersection and union summed over its images; a class absent from both truth and prediction is left out).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from menndl_py.config import setting
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.conv import ENCODER_DECODER_GENES, ENCODER_DECODER_TRAINING, EncoderDecoder
from menndl_py.images import single_channel
from menndl_py.physics.stem_analysis import iou_scores, pixel_iou_counts
from menndl_py.tasks.files import splits
from menndl_py.tasks.files.base import FileTask
from menndl_py.tasks.files.images import RAW_PIXELS
from menndl_py.tasks.files.stacks import BLOCK, Stack, StandardisedInputs, read_array, standardise

MAX_LEVELS = 5
PAD = 2 ** (MAX_LEVELS - 1)  # images are padded to multiples of this: every network of the space takes them
IGNORE = -100  # the mask value of padding
BASELINE_PIXELS = 500_000  # training pixels (a seeded sample) the threshold baseline is fitted on


@dataclass(frozen=True)
class SegmentationOptions(splits.FileOptions):
    images: str = setting("images")  # HDF5 dataset or .npz array of the images
    masks: str = setting("masks")  # ... and of the masks
    masks_path: str = setting("")  # a folder of masks, when `path` is a folder of images
    classes: Optional[int] = setting(None, min=2, max=255)  # default: the training masks' largest value + 1
    class_names: list = setting(factory=list)  # default "0".."k-1"
    tile: int = setting(64, min=PAD, max=4096)  # training crops of tile × tile pixels (a multiple of PAD)
    class_weight_power: float = setting(0.5, min=0.0, max=1.0)
    ignore_value: Optional[int] = setting(None, min=0, max=2**31)  # mask value of unlabelled pixels (e.g. 255)


class SegmentationTask(FileTask):
    name = "segmentation"
    summary = "a class per pixel of your 2-D images and masks, encoder–decoder networks; fitness: mean IoU"
    Options = SegmentationOptions
    metric = "mean_iou"
    metric_names = ("mean_iou", "pixel_accuracy")
    unit = "IoU"
    higher_is_better = True
    predicts = "maps"
    ensembled = "probabilities"
    latency_per = (1.0, "image")

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        o = self.options
        if not o.path:
            raise UserError("task.options.path: name the images file or folder")
        if o.tile % PAD:
            raise UserError(f"task.options.tile: must be a multiple of {PAD}, got {o.tile}")
        if not all(isinstance(name, str) for name in o.class_names):
            raise UserError(f"task.options.class_names: must be a list of strings, got {o.class_names!r}")

    # -- data ----------------------------------------------------------------------------------------
    @functools.cached_property
    def _stacks(self) -> tuple[Stack, Stack, Optional[np.ndarray]]:
        """(images, masks, the mask row of each image when the masks are a folder)."""
        o, path = self.options, self.data_path
        if path.is_dir():
            if not o.masks_path:
                raise UserError(f"{path}: a folder of images needs task.options.masks_path, the folder of masks")
            images, masks = Stack(path, None, 2), Stack(Path(o.masks_path), None, 2, "masks")
            if masks.kind != "folder":
                raise UserError(f"{masks.path}: is not a folder; a folder of images takes a folder of masks")
            by_name = {str(Path(name).with_suffix("")): row for row, name in enumerate(masks.files())}
            rows = []
            for name in images.files():
                if str(Path(name).with_suffix("")) not in by_name:
                    raise UserError(f"{masks.path}: no mask for image {path / name} (masks are paired with images "
                                    f"by file name)")
                rows.append(by_name[str(Path(name).with_suffix(""))])
            pairs = np.asarray(rows)
        else:
            if path.suffix.lower() not in (".h5", ".hdf5", ".npz"):
                raise UserError(f"{path}: expected an HDF5 file or .npz archive holding images and masks, or a "
                                f"folder of images (with task.options.masks_path)")
            images, masks, pairs = Stack(path, o.images, 2), Stack(path, o.masks, 2, "masks"), None
        if masks.count != images.count and pairs is None:
            raise UserError(f"{masks.where}: {masks.count} masks for {images.count} images ({images.where})")
        if masks.shape != images.shape:
            raise UserError(f"{masks.where}: masks of {'×'.join(map(str, masks.shape))} pixels for images of "
                            f"{'×'.join(map(str, images.shape))} ({images.where}); a mask must have its image's shape")
        return images, masks, pairs

    def _read_masks(self, rows: np.ndarray) -> np.ndarray:
        _, masks, pairs = self._stacks
        return masks.read(rows if pairs is None else pairs[rows])

    def _mask_name(self, row: int) -> str:
        _, masks, pairs = self._stacks
        return masks.name(row if pairs is None else int(pairs[row]))

    @functools.cached_property
    def splits(self) -> dict[str, np.ndarray]:
        o, images = self.options, self._stacks[0]
        if o.split:
            if images.kind == "folder":
                raise UserError("task.options.split: a folder of images has no split dataset; leave it out (seeded "
                                "fractions split the images)")
            values = read_array(self.data_path, o.split)
            if len(values) != images.count:
                raise UserError(f"{self.data_path}:/{o.split}: {len(values)} split values for {images.count} images")
            return splits.by_labels(values, f"{self.data_path}:/{o.split}")
        return splits.by_fractions(images.count, o.val_fraction, o.test_fraction, o.seed)

    @functools.cached_property
    def _mask_summary(self) -> tuple[int, np.ndarray]:
        """(classes, pixel count of each class in the training masks), every mask checked: whole numbers from 0
        to classes - 1."""
        count = self._stacks[0].count
        train = np.zeros(count, bool)
        train[self.splits["train"]] = True
        largest, pixels = np.zeros(count, np.int64), np.zeros(0, np.int64)
        for start in range(0, count, BLOCK):
            rows = np.arange(start, min(start + BLOCK, count))
            masks = self._read_masks(rows)
            if masks.dtype.kind not in "buif":
                raise UserError(f"{self._mask_name(start)}: masks of dtype {masks.dtype}; expected integer classes")
            for row, mask in zip(rows, masks):
                if self.options.ignore_value is not None:
                    mask = mask[mask != self.options.ignore_value]  # unlabelled: neither checked nor counted
                    if not mask.size:
                        continue
                if mask.dtype.kind == "f" and not (np.isfinite(mask).all() and (mask == np.round(mask)).all()):
                    odd = mask[~np.isfinite(mask) | (mask != np.round(mask))][0]
                    raise UserError(f"{self._mask_name(row)}: mask value {odd} is not a whole number (a class index)")
                if mask.min() < 0:
                    raise UserError(f"{self._mask_name(row)}: mask value {mask.min()} is negative; classes are "
                                    f"0, 1, ...")
                largest[row] = int(mask.max())
                if train[row]:
                    values = np.bincount(mask.astype(np.int64).ravel())
                    pixels = np.pad(pixels, (0, max(0, len(values) - len(pixels))))
                    pixels[:len(values)] += values
        classes = self.options.classes or len(pixels)
        if classes < 2:
            raise UserError(f"{self._stacks[1].where}: the training masks hold class 0 only; segmentation needs at "
                            f"least 2 classes (or set task.options.classes)")
        beyond = np.flatnonzero(largest >= classes)
        if len(beyond):
            row = int(beyond[0])
            source = "task.options.classes" if self.options.classes else "the training masks' largest value + 1"
            raise UserError(f"{self._mask_name(row)}: mask value {largest[row]} is outside the classes 0 to "
                            f"{classes - 1} ({source})")
        return classes, np.pad(pixels, (0, classes - len(pixels)))

    @property
    def classes(self) -> int:
        return self._mask_summary[0]

    @property
    def class_names(self) -> tuple[str, ...]:
        names = tuple(self.options.class_names) or tuple(str(c) for c in range(self.classes))
        if len(names) != self.classes:
            raise UserError(f"task.options.class_names: {len(names)} names for {self.classes} classes")
        return names

    def check_data(self) -> None:
        _ = self.class_names  # images, masks, splits and class names read and checked
        self._stacks[0].check_pixels()

    def check_shards(self, ranks: int) -> None:
        splits.check_sizes(self.splits, ranks, str(self.data_path))

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        """Whole images (N, 1, H, W) as float32 and masks (N, H, W) as int64, padded to multiples of PAD."""
        rows = splits.shard(self.splits[split], shard)
        images, masks = self._stacks[0].read(rows).astype(np.float32), self._read_masks(rows)
        unlabelled = masks == self.options.ignore_value if self.options.ignore_value is not None else False
        masks = np.where(unlabelled, IGNORE, masks.astype(np.int64))
        h, w = images.shape[-2:]
        pad = ((0, 0), (0, -h % PAD), (0, -w % PAD))
        return np.pad(images, pad, mode="edge")[:, None], np.pad(masks, pad, constant_values=IGNORE)

    @property
    def _tile(self) -> tuple[int, int]:
        """The training crops' height and width: `tile`, or the padded image's size where that is smaller."""
        h, w = self._stacks[0].shape
        return min(self.options.tile, h + -h % PAD), min(self.options.tile, w + -w % PAD)

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
        """A random tile of each training image (and its mask)."""
        (th, tw), (h, w) = self._tile, x.shape[-2:]
        if (th, tw) == (h, w):
            return x, y
        tops = torch.randint(0, h - th + 1, (len(x),), generator=generator).tolist()
        lefts = torch.randint(0, w - tw + 1, (len(x),), generator=generator).tolist()
        return (torch.stack([x[i, :, a:a + th, b:b + tw] for i, (a, b) in enumerate(zip(tops, lefts))]),
                torch.stack([y[i, a:a + th, b:b + tw] for i, (a, b) in enumerate(zip(tops, lefts))]))

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        return SearchSpace(
            layer_genes=ENCODER_DECODER_GENES, training_genes=ENCODER_DECODER_TRAINING,
            depth=(1, MAX_LEVELS), network=EncoderDecoder(self.classes), input_shape=(1, *self._tile),
            max_params=4_000_000, inputs=StandardisedInputs())

    @functools.cached_property
    def _weights(self) -> np.ndarray:
        pixels = self._mask_summary[1].astype(np.float64)
        return (pixels.sum() / (self.classes * np.maximum(pixels, 1))) ** self.options.class_weight_power

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = torch.as_tensor(self._weights, dtype=prediction.dtype, device=prediction.device)
        return F.cross_entropy(prediction, target, weight=weight, ignore_index=IGNORE)

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per class the pixel intersection and union of the argmax map with the mask, then the pixels counted."""
        return self._sums(prediction.argmax(1).cpu().numpy(), target.cpu().numpy())

    def _sums(self, predicted: np.ndarray, target: np.ndarray) -> torch.Tensor:
        valid = target != IGNORE
        counts = pixel_iou_counts(predicted[valid], target[valid], self.classes)
        return torch.from_numpy(np.append(counts.ravel(), valid.sum()).astype(np.float64))

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        counts = sums[:-1].numpy().reshape(-1, 2)
        iou = iou_scores(counts, self.class_names)
        out = {"mean_iou": iou["mean_iou"], "pixel_accuracy": float(counts[:, 0].sum() / max(float(sums[-1]), 1.0))}
        out.update({k: v for k, v in iou.items() if k.startswith("iou_")})
        return {k: 0.0 if v != v else v for k, v in out.items()}

    # -- baselines -----------------------------------------------------------------------------------
    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """Thresholds on the per-image-standardised intensity, fitted on a sample of training pixels: classes in
        the order of their mean intensity, k - 1 thresholds at the quantiles of their pixel frequencies; with 2
        classes, the one threshold of the best mean IoU among the 1st to 99th percentiles."""
        x, y = train
        valid = y != IGNORE
        values, truth = standardise(x[:, 0], 2)[valid], y[valid]
        sample = np.random.default_rng(0).permutation(len(values))[:BASELINE_PIXELS]
        values, truth = values[sample], truth[sample]
        k = self.classes
        present = np.bincount(truth, minlength=k) > 0
        means = [values[truth == c].mean() if present[c] else np.inf for c in range(k)]
        order = np.argsort(means)
        frequency = np.bincount(truth, minlength=k)[order] / len(truth)
        thresholds = np.quantile(values, np.cumsum(frequency)[:-1])
        if k == 2:
            candidates = np.quantile(values, np.linspace(0.01, 0.99, 99))
            fitness = [self.metrics(self._sums(order[(values > t).astype(int)], truth))[self.metric]
                       for t in candidates]
            thresholds = candidates[[int(np.argmax(fitness))]]
        row = {}
        for split, (images, masks) in evals.items():
            predicted = order[np.searchsorted(thresholds, standardise(images[:, 0], 2))]
            row.update({f"{split}_{k}": v for k, v in self.metrics(self._sums(predicted, masks)).items()})
        return {"intensity thresholds (fitted on training pixels)": row}

    # -- use outside menndl_py -----------------------------------------------------------------------
    def network_io(self, genome: Genome) -> dict:
        side = 2 ** (genome.depth - 1)
        return {"input": {"shape": [None, 1, None, None], "size_multiple": side, "normalisation": RAW_PIXELS},
                "output": {"values": f"a logit per class and pixel (softmax over axis 1: probabilities), classes "
                                     f"{list(self.class_names)}; pad images to multiples of {side} (edge values) "
                                     f"and crop the output back"}}

    # -- batch inference -----------------------------------------------------------------------------
    def prepare_image(self, image: np.ndarray, genome: Genome) -> np.ndarray:
        return single_channel(image)[None].astype(np.float32)

    def pad_for(self, genome: Genome, x: torch.Tensor) -> torch.Tensor:
        """Padded (edge values) to multiples of PAD, as the images were in training."""
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % PAD, 0, -h % PAD), mode="replicate") if (h % PAD or w % PAD) else x

    def latency_batch(self, genome: Genome) -> torch.Tensor:
        """4 whole images of the data's size, padded as for the network."""
        x = torch.randn(4, 1, *self._stacks[0].shape, generator=torch.Generator().manual_seed(0))
        return self.pad_for(genome, x)

    def interpret(self, output: torch.Tensor, size: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image the argmax class map and its objects: each connected region of a class other than 0, as
        (y, x) of its centroid, class, and the mean probability of that class over the region."""
        probabilities = torch.softmax(output[..., :size[0], :size[1]].detach().float(), 1).cpu().numpy()
        found = []
        for p in probabilities:
            class_map = p.argmax(0)
            objects = []
            for c in range(1, len(p)):
                regions, n = ndimage.label(class_map == c)
                if n:
                    index = np.arange(1, n + 1)
                    centres = np.asarray(ndimage.center_of_mass(class_map == c, regions, index)).reshape(n, 2)
                    confidence = ndimage.mean(p[c], regions, index)
                    objects.append(np.column_stack([centres, np.full(n, c), confidence]))
            found.append((class_map.astype(np.uint8),
                          np.concatenate(objects).astype(np.float64) if objects else np.zeros((0, 4))))
        return found
