"""Defect analysis of STEM images: defect tables from network outputs (argmax components, or peaks of each class's
smoothed probability above per-class thresholds calibrated for the best F1), detection and pixel metrics, and the
Fourier-filtering baseline (Bragg-filter reconstruction of the perfect lattice; defects are where the image departs
from it).

Class 0 is the lattice (background); classes 1..C-1 are defect types. A defect table is a float array with one row
per defect: y, x (pixels), class, and for predictions a confidence.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Optional, Sequence

import numpy as np
from scipy import fft, ndimage, optimize

_EIGHT = np.ones((3, 3), dtype=bool)
_FAR = 1e9  # cost of a pairing beyond the matching radius


# ------------------------------------------------------------------------------------------- defect tables

def _components(mask: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids (K×2, weighted by `weight`), sizes and mean weights of the 8-connected components of `mask`."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    y, x = np.nonzero(labels)
    label, w = labels[y, x], weight[y, x]
    sizes = np.bincount(label, minlength=n + 1)[1:]
    total = np.bincount(label, w, minlength=n + 1)[1:]
    centres = np.column_stack([np.bincount(label, w * y, minlength=n + 1)[1:],
                               np.bincount(label, w * x, minlength=n + 1)[1:]]) / total[:, None]
    return centres, sizes, total / sizes


def _rows(centres: np.ndarray, cls: int, confidence: np.ndarray) -> np.ndarray:
    return np.column_stack([centres, np.full(len(centres), cls), confidence])


def _defect_table(rows: list) -> np.ndarray:
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 4), np.float32)


def extract_defects(probabilities: np.ndarray, min_pixels: int = 3) -> np.ndarray:
    """Defects (K×4: y, x, class, confidence) from softmax outputs (C×H×W) or a class map (H×W, integers).

    Each 8-connected component of a non-lattice class in the argmax map is one defect: its centroid is weighted
    by that class's probability, its confidence is the mean probability over the component (1.0 for a class map).
    Components smaller than `min_pixels` are dropped. (Networks' outputs are read with calibrated thresholds,
    `threshold_defects`, once there are some.)
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 2:
        class_map = probabilities.astype(np.int64)
        n_classes = int(class_map.max(initial=0)) + 1
        weights = None
    elif probabilities.ndim == 3:
        class_map = probabilities.argmax(axis=0)
        n_classes = probabilities.shape[0]
        weights = probabilities.astype(np.float64)
    else:
        raise ValueError(f"expected a C×H×W probability array or an H×W class map, got shape {probabilities.shape}")
    rows = []
    for c in range(1, n_classes):
        mask = class_map == c
        centres, sizes, confidence = _components(mask, mask.astype(np.float64) if weights is None else weights[c])
        keep = sizes >= min_pixels
        rows.append(_rows(centres[keep], c, confidence[keep]))
    return _defect_table(rows)


# The thresholds `calibrate` chooses from, and the window of a peak (pixels a side).
THRESHOLD_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PEAK_WINDOW = 5


class DetectionRule(NamedTuple):
    """Per defect class (1..C-1, in order) a probability threshold, and the Gaussian smoothing (σ, pixels) of each
    class's probability map before its peaks are read."""

    thresholds: tuple[float, ...]
    smoothing: float


def _peaks(probability: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions (K×2) and heights of the peaks of one class's probability map smoothed by a Gaussian of σ
    `smoothing` pixels: pixels that are the largest within PEAK_WINDOW × PEAK_WINDOW pixels and above the lowest
    threshold of the grid (a plateau of equal maxima is one peak, at its centroid)."""
    smooth = ndimage.gaussian_filter(probability.astype(np.float64), smoothing, mode="nearest")
    top = (smooth == ndimage.maximum_filter(smooth, PEAK_WINDOW, mode="nearest")) & (smooth >= THRESHOLD_GRID[0])
    centres, _, heights = _components(top, smooth)
    return centres, heights


def threshold_defects(probabilities: np.ndarray, rule: DetectionRule) -> np.ndarray:
    """Defects (K×4: y, x, class, confidence) from softmax outputs (C×H×W) by a per-class rule: for defect class c,
    each peak of p_c smoothed by rule.smoothing (`_peaks`) of height >= rule.thresholds[c-1] is one defect, its
    confidence the height. Unlike components of a minimum size, a peak does not depend on how many pixels a
    network spreads a defect over, which changes from one microscope to another. Defects of different classes may
    overlap."""
    rows = []
    for c, threshold in enumerate(rule.thresholds, start=1):
        centres, heights = _peaks(probabilities[c], rule.smoothing)
        keep = heights >= threshold
        rows.append(_rows(centres[keep], c, heights[keep]))
    return _defect_table(rows)


# ------------------------------------------------------------------------------------------ detection metrics

def _table(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows.reshape(-1, rows.shape[-1]) if rows.size else np.zeros((0, 3))


def _paired(pred: np.ndarray, true: np.ndarray, radius: float) -> int:
    """How many predicted positions (K×2) pair one-to-one with true ones within `radius` (see `match_counts`)."""
    if not (len(pred) and len(true)):
        return 0
    dist = np.hypot(*(pred[:, None, :] - true[None, :, :]).transpose(2, 0, 1))
    i, j = optimize.linear_sum_assignment(np.where(dist <= radius, dist, _FAR))
    return int(np.count_nonzero(dist[i, j] <= radius))


def match_counts(pred: np.ndarray, true: np.ndarray, radius: float, n_classes: int) -> np.ndarray:
    """True positives, false positives and false negatives per defect class: an (n_classes-1)×3 integer array.

    A prediction is a true positive when it is paired with a true defect of the same class within `radius`
    pixels. Pairing is one-to-one and, per class, maximises the number of pairs, then minimises their total
    distance (scipy's linear_sum_assignment with pairs beyond the radius priced out). Counts add over images.
    """
    pred, true = _table(pred), _table(true)
    counts = np.zeros((n_classes - 1, 3), dtype=np.int64)
    for c in range(1, n_classes):
        p = pred[np.rint(pred[:, 2]) == c, :2]
        t = true[np.rint(true[:, 2]) == c, :2]
        tp = _paired(p, t, radius)
        counts[c - 1] = (tp, len(p) - tp, len(t) - tp)
    return counts


# ------------------------------------------------------------------------------------ threshold calibration

def threshold_counts(probabilities: np.ndarray, true: np.ndarray, radius: float, smoothing: float) -> np.ndarray:
    """TP, FP and FN of `threshold_defects` (at `smoothing`) on one image (softmax outputs C×H×W; true defects:
    rows y, x, class) for every defect class and threshold of the grid: a (C-1)×T×3 integer array, additive over
    images. Matching is that of `match_counts`."""
    probabilities, true = np.asarray(probabilities, dtype=np.float64), _table(true)
    counts = np.zeros((len(probabilities) - 1, len(THRESHOLD_GRID), 3), np.int64)
    for c in range(1, len(probabilities)):
        t = true[np.rint(true[:, 2]) == c, :2]
        centres, heights = _peaks(probabilities[c], smoothing)
        for i, threshold in enumerate(THRESHOLD_GRID):
            p = centres[heights >= threshold]
            tp = _paired(p, t, radius)
            counts[c - 1, i] = (tp, len(p) - tp, len(t) - tp)
    return counts


def calibrate(counts: np.ndarray, smoothing: float) -> DetectionRule:
    """The rule (at `smoothing`) whose threshold per defect class is the grid's of the highest F1 in `counts`
    (`threshold_counts` summed over images). A class with no true defects scores 1 where nothing is predicted as
    it, 0 elsewhere; ties go to the lowest threshold."""
    tp, fp, fn = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    return DetectionRule(tuple(THRESHOLD_GRID[k] for k in f1.argmax(axis=1)), smoothing)


def _names(n: int, names: Optional[Sequence[str]], offset: int) -> list[str]:
    if names is None:
        return [str(i + offset) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"expected {n} class names, got {len(names)}")
    return list(names)


def f1_scores(counts: np.ndarray, names: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Precision, recall and F1 per defect class from match counts, and `defect_f1`, their mean F1.

    `names` label the defect classes (rows of `counts`; default "1", "2", ...). Precision is NaN for a class
    with no predictions, recall NaN for one with no true defects, and F1 = 2TP/(2TP+FP+FN) is NaN only when a class
    has neither: such a class is left out of `defect_f1` (which is NaN if every class is).
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    tp, fp, fn = counts.T
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    out = {}
    for name, p, r, f in zip(_names(len(counts), names, 1), precision, recall, f1):
        out.update({f"precision_{name}": float(p), f"recall_{name}": float(r), f"f1_{name}": float(f)})
    out["defect_f1"] = float(np.mean(f1[~np.isnan(f1)])) if np.any(~np.isnan(f1)) else float("nan")
    return out


def pixel_iou_counts(pred_map: np.ndarray, true_map: np.ndarray, n_classes: int) -> np.ndarray:
    """Intersection and union pixel counts per class (n_classes×2 integers, additive over images)."""
    pred_map = np.asarray(pred_map).ravel()
    true_map = np.asarray(true_map).ravel()
    inter = np.bincount(true_map[pred_map == true_map], minlength=n_classes)[:n_classes]
    union = (np.bincount(pred_map, minlength=n_classes)[:n_classes]
             + np.bincount(true_map, minlength=n_classes)[:n_classes] - inter)
    return np.stack([inter, union], axis=1).astype(np.int64)


def iou_scores(counts: np.ndarray, names: Optional[Sequence[str]] = None) -> dict[str, float]:
    """IoU per class, `mean_iou` over all classes and `defect_iou` over classes 1.. (classes absent from both
    maps, union 0, are NaN and left out of the means)."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = counts[:, 0] / counts[:, 1]
    out = {f"iou_{name}": float(v) for name, v in zip(_names(len(counts), names, 0), iou)}
    for key, values in (("mean_iou", iou), ("defect_iou", iou[1:])):
        defined = values[~np.isnan(values)]
        out[key] = float(defined.mean()) if defined.size else float("nan")
    return out


# ----------------------------------------------------------------------------------- Fourier-filter baseline

# Defect classes in the order of stem_sim.CLASSES: 0 lattice, 1 chalcogen single vacancy, 2 chalcogen double
# vacancy, 3 metal-site dopant, 4 metal vacancy.
LATTICE, CHALCOGEN_VACANCY, DOUBLE_VACANCY, DOPANT, METAL_VACANCY = range(5)
N_CLASSES = 5


def _gaussians(freqs: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussians of `sigma` (cycles/pixel) at `centres` along one frequency axis (periodic): P×len(freqs)."""
    d = (freqs[None, :] - centres[:, None] + 0.5) % 1.0 - 0.5
    return np.exp(-d ** 2 / (2 * sigma ** 2))


class _Lattice:
    """What one image's spectrum says about its lattice: the reciprocal basis and Bragg peaks (FFT pixels, centred)
    and the real-space period (pixels); and the Bragg-filtered reconstruction of the image."""

    def __init__(self, image: np.ndarray, peak_snr: float):
        image = np.asarray(image, dtype=np.float64)
        self.shape = image.shape
        self.image = image - image.mean()
        h, w = self.shape
        window = np.hanning(h)[:, None] * np.hanning(w)[None]
        power = np.fft.fftshift(np.abs(np.fft.fft2(self.image * window)) ** 2)
        self.ky, self.kx = np.mgrid[0:h, 0:w] - np.array([h // 2, w // 2])[:, None, None]
        radius = np.rint(np.hypot(self.ky, self.kx)).astype(np.int64)
        background = ndimage.median(power, radius, np.arange(radius.max() + 1))
        # the floor keeps the ratio finite where a noise-free spectrum is ~0
        self.ratio = power / np.maximum(background[radius], 1e-9 * background[2:].max(initial=1e-30))
        peaks = ((self.ratio == ndimage.maximum_filter(self.ratio, size=3, mode="nearest")) & (radius >= 3)
                 & (radius < min(h, w) // 2) & (self.ratio > peak_snr))
        order = np.argsort(-power[peaks])[:12]   # the strongest 6 Friedel pairs: the first two shells
        strong = np.column_stack([self.ky[peaks][order], self.kx[peaks][order]]).astype(np.float64)
        if len(strong) < 4:
            raise ValueError("no lattice: fewer than two pairs of Bragg peaks stand out of the power spectrum")
        basis = self._basis(strong)
        # refine the basis on every strong peak it indexes (uniform strain, rotation)
        hk = np.linalg.solve(basis.T, strong.T).T
        fits = np.all(np.abs(hk - np.rint(hk)) < 0.2, axis=1)
        self.g = np.linalg.lstsq(np.rint(hk[fits]), strong[fits], rcond=None)[0]
        real = np.linalg.inv(self.g / np.array([h, w])).T  # rows: real-space lattice vectors, pixels
        self.period = float(np.linalg.norm(real, axis=1).min())
        self.peak_snr = peak_snr

    @staticmethod
    def _basis(strong: np.ndarray) -> np.ndarray:
        """The shortest strong peak and the shortest one not parallel to it."""
        lengths = np.linalg.norm(strong, axis=1)
        g1 = strong[np.argmin(lengths)]
        cos = np.abs(strong @ g1) / (lengths * np.linalg.norm(g1))
        other = np.where(cos < 0.9, lengths, np.inf)
        if not np.isfinite(other.min()):
            raise ValueError("no lattice: the Bragg peaks are all on one line")
        return np.stack([g1, strong[np.argmin(other)]])

    def peaks(self, order: int) -> np.ndarray:
        """Bragg peaks up to `order` times the shortest reciprocal vector, each moved to the spectrum's local
        maximum within 2 FFT pixels and kept when it stands peak_snr / 4 above the background; DC first."""
        span = np.arange(-2 * order, 2 * order + 1)
        hk = np.stack(np.meshgrid(span, span, indexing="ij"), -1).reshape(-1, 2)
        points = hk @ self.g
        length = np.linalg.norm(points, axis=1)
        h, w = self.shape
        points = points[(length <= order * np.linalg.norm(self.g, axis=1).min() * 1.01) & (length > 0)
                        & (np.abs(points[:, 0]) < h // 2 - 2) & (np.abs(points[:, 1]) < w // 2 - 2)]
        offsets = np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3), indexing="ij"), -1).reshape(-1, 2)
        cells = np.rint(points)[:, None, :].astype(np.int64) + offsets[None]
        values = self.ratio[(cells[..., 0] + h // 2) % h, (cells[..., 1] + w // 2) % w]
        refined = cells[np.arange(len(cells)), values.argmax(axis=1)].astype(np.float64)
        return np.concatenate([np.zeros((1, 2)), refined[values.max(axis=1) > self.peak_snr / 4]])

    def reconstruction(self, image: np.ndarray, order: int, mask_radius: float) -> np.ndarray:
        """An image of this lattice through soft (Gaussian) discs of radius mask_radius × |g_min| around DC and
        the Bragg peaks.

        The image is zero-padded and the result divided by the same filter's response to the image's support
        (normalised convolution), so the lattice is reconstructed up to the edges without wrap-around."""
        h, w = self.shape
        peaks = self.peaks(order) / np.array([h, w])
        sigma = mask_radius * np.linalg.norm(self.g / np.array([h, w]), axis=1).min()
        pad = int(np.ceil(3 / (2 * np.pi * sigma)))
        size = (fft.next_fast_len(h + 2 * pad, real=True), fft.next_fast_len(w + 2 * pad, real=True))
        fy, fx = fft.fftfreq(size[0]), fft.rfftfreq(size[1])
        along_y, along_x = _gaussians(fy, peaks[:, 0], sigma), _gaussians(fx, peaks[:, 1], sigma)
        mask = np.minimum(along_y.T @ along_x, 1.0)
        low_pass = np.outer(along_y[0], along_x[0])
        filtered = fft.irfft2(fft.rfft2(image, size) * mask, size)[:h, :w]
        support = fft.irfft2(fft.rfft2(np.ones(self.shape), size) * low_pass, size)[:h, :w]
        return filtered / support


def _odd(size: float) -> int:
    return 2 * int(size / 2) + 1


def _two_means(values: np.ndarray) -> float:
    """A threshold splitting 1-D values into two groups (iterated midpoint of the group means)."""
    t = 0.5 * (values.min() + values.max())
    for _ in range(20):
        low, high = values[values <= t], values[values > t]
        if not (low.size and high.size):
            break
        t = 0.5 * (low.mean() + high.mean())
    return float(t)


def _paint(shape: tuple, centres: np.ndarray, values: np.ndarray, radius: float) -> np.ndarray:
    """An integer map (0 elsewhere) holding values[i] on the pixels within `radius` of centres[i]."""
    out = np.zeros(shape, np.int64)
    reach = np.arange(-int(np.ceil(radius)), int(np.ceil(radius)) + 1)
    rows = np.rint(centres[:, 0]).astype(np.int64)[:, None, None] + reach[None, :, None]
    cols = np.rint(centres[:, 1]).astype(np.int64)[:, None, None] + reach[None, None, :]
    inside = (((rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2 <= radius ** 2)
              & (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1]))
    rows, cols = np.broadcast_arrays(rows, cols)
    out[rows[inside], cols[inside]] = np.broadcast_to(np.asarray(values)[:, None, None], inside.shape)[inside]
    return out


def _columns(recon: np.ndarray, image: np.ndarray, period: float, smoothing: float):
    """Atomic columns of a reconstructed lattice: positions (N×2, pixels), whether each is a metal column (the
    brighter sublattice), and its depth: the image's deficit at the column over the column's height above the
    local floor, both after Gaussian smoothing of `smoothing` periods (1: an empty column, 0: as the lattice).
    Maxima on the image's border (columns centred outside it) are left out."""
    if smoothing > 0:
        recon = ndimage.gaussian_filter(recon, smoothing * period, mode="nearest")
        image = ndimage.gaussian_filter(image, smoothing * period, mode="nearest")
    floor = ndimage.uniform_filter(ndimage.minimum_filter(recon, _odd(period), mode="nearest"), _odd(period),
                                   mode="nearest")
    height = recon - floor
    top = ndimage.maximum_filter(height, _odd(1.2 * period), mode="nearest")
    maxima = (recon == ndimage.maximum_filter(recon, _odd(0.7 * period / np.sqrt(3)), mode="nearest"))
    maxima &= height > 0.15 * top
    maxima[[0, -1], :] = maxima[:, [0, -1]] = False
    y, x = np.nonzero(maxima)
    rel = height[y, x] / top[y, x]
    is_metal = rel > _two_means(rel) if rel.size > 1 else np.ones(rel.size, bool)
    depth = (recon - image)[y, x] / height[y, x]
    # sub-pixel positions: a parabola through the maximum and its two neighbours along each axis
    shifts = []
    for dy, dx in ((1, 0), (0, 1)):
        up, down = recon[y + dy, x + dx], recon[y - dy, x - dx]
        curvature = np.minimum(up + down - 2 * recon[y, x], -1e-12)
        shifts.append(np.clip(0.5 * (down - up) / curvature, -0.5, 0.5))
    return np.column_stack([y + shifts[0], x + shifts[1]]), is_metal, depth


def _reconstruct(lattice: _Lattice, order: int, mask_radius: float) -> np.ndarray:
    """The image's Bragg-filtered reconstruction, made twice: the second time from the image with its defect
    candidates (columns with |depth| > 0.15 at smoothing 0.08) painted over by the first reconstruction, so that
    the defects do not leak into the lattice they are compared with."""
    recon = lattice.reconstruction(lattice.image, order, mask_radius)
    positions, _, depth = _columns(recon, lattice.image, lattice.period, 0.08)
    odd = np.abs(depth) > 0.15
    painted = _paint(lattice.shape, positions[odd], np.ones(odd.sum(), np.int64), 0.35 * lattice.period / np.sqrt(3))
    return lattice.reconstruction(np.where(painted > 0, recon, lattice.image), order, mask_radius)


class FourierFilterBaseline:
    """Fourier (Bragg) filtering defect finder, the classical baseline for atom-resolved STEM.

    The FFT of the image is masked to soft discs around DC and the lattice's Bragg peaks (found in the power
    spectrum, harmonics up to `order` times the shortest reciprocal vector), which reconstructs the perfect,
    locally averaged lattice. Its maxima are the atomic columns; the brighter sublattice is the metal. At each
    column the depth (image deficit over the column height, both smoothed) classifies it: on chalcogen columns
    depth >= `double` is a double vacancy and >= `single` a single vacancy; on metal columns depth >=
    `metal_vacancy` is a metal vacancy, and dopant_sign × depth >= `dopant` a dopant (sign +1: a lighter dopant,
    a darker column, as Mo in WSe2; -1: a heavier one, as W in MoS2). `fit` tunes the filter (grid) and the
    thresholds (exhaustive on a grid, per sublattice) for the best mean defect F1 on training images.

    `disk_radius` (pixels) is the radius of the discs `predict_map` paints (stem_sim's default label disc is
    0.6 Å / 0.2 Å = 3 px); an image shows a lattice when at least two pairs of power-spectrum peaks stand `peak_snr`
    times above the spectrum's radial median (an image without one yields no defects).
    """

    DEFAULTS = {"order": 3, "mask_radius": 0.2, "smoothing": 0.08,
                "single": 0.25, "double": 0.7, "dopant": 0.3, "metal_vacancy": 0.8,
                "dopant_sign": 1}
    FILTER_GRID = {"order": (2, 3, 4), "mask_radius": (0.1, 0.2, 0.3), "smoothing": (0.0, 0.08, 0.16)}
    THRESHOLDS = np.round(np.arange(0.05, 1.3, 0.025), 3)

    def __init__(self, disk_radius: float = 3.0, peak_snr: float = 30.0, **params):
        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(self.DEFAULTS)}")
        self.params = {**self.DEFAULTS, **params}
        self.disk_radius = disk_radius
        self.peak_snr = peak_snr

    def _classify(self, is_metal: np.ndarray, depth: np.ndarray) -> np.ndarray:
        p = self.params
        chalcogen = np.where(depth >= p["double"], DOUBLE_VACANCY,
                             np.where(depth >= p["single"], CHALCOGEN_VACANCY, LATTICE))
        metal = np.where(depth >= p["metal_vacancy"], METAL_VACANCY,
                         np.where(p["dopant_sign"] * depth >= p["dopant"], DOPANT, LATTICE))
        return np.where(is_metal, metal, chalcogen)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Defects (K×4: y, x, class, confidence = |depth| clipped to 1) found in one image."""
        lattice = self._lattice(image)
        if lattice is None:
            return np.zeros((0, 4), np.float32)
        recon = _reconstruct(lattice, self.params["order"], self.params["mask_radius"])
        positions, is_metal, depth = _columns(recon, lattice.image, lattice.period, self.params["smoothing"])
        classes = self._classify(is_metal, depth)
        found = classes != LATTICE
        return np.column_stack([positions[found], classes[found],
                                np.clip(np.abs(depth[found]), 0, 1)]).astype(np.float32)

    def predict_map(self, image: np.ndarray, defects: Optional[np.ndarray] = None) -> np.ndarray:
        """A class map (uint8, the image's shape): a disc of `disk_radius` pixels at each defect found (`defects`,
        when they are known: `predict` of this image)."""
        defects = self.predict(image) if defects is None else defects
        classes = np.rint(defects[:, 2]).astype(np.int64)
        return _paint(np.shape(image), defects[:, :2].astype(np.float64), classes, self.disk_radius).astype(np.uint8)

    def fit(self, images: Sequence[np.ndarray], defect_tables: Sequence[np.ndarray], radius: float):
        """Tune the parameters for the best mean defect F1 over `images` (true defects: rows y, x, class) with
        matching radius `radius` pixels; returns self. The filter parameters are searched on FILTER_GRID, the
        thresholds exhaustively on THRESHOLDS (per sublattice, ties going to the middle of a plateau). For speed,
        each true defect is first paired with its nearest column (one-to-one, within `radius`), so scoring a set
        of thresholds is a count over columns."""
        tables = [_table(t) for t in defect_tables]
        n_true = np.bincount(np.concatenate([np.rint(t[:, 2]).astype(np.int64) for t in tables]),
                             minlength=N_CLASSES)[:N_CLASSES]
        pairs = [(lattice, t) for lattice, t in zip((self._lattice(image) for image in images), tables) if lattice]
        if not pairs:
            raise ValueError("no lattice found in any of the training images")
        best_score = -np.inf
        grid = self.FILTER_GRID
        for order, mask_radius in itertools.product(grid["order"], grid["mask_radius"]):
            recons = [_reconstruct(lattice, order, mask_radius) for lattice, _ in pairs]
            for smoothing in grid["smoothing"]:
                columns = [_columns(recon, lattice.image, lattice.period, smoothing)
                           for recon, (lattice, _) in zip(recons, pairs)]
                metal = np.concatenate([c[1] for c in columns])
                depth = np.concatenate([c[2] for c in columns])
                truth = np.concatenate([_column_truth(c[0], t, radius) for c, (_, t) in zip(columns, pairs)])
                (single, double), chalcogen_score = _best_pair(
                    depth[~metal], truth[~metal], n_true, CHALCOGEN_VACANCY, DOUBLE_VACANCY, self.THRESHOLDS, 1)
                options = [(_best_pair(depth[metal], truth[metal], n_true, DOPANT, METAL_VACANCY, self.THRESHOLDS,
                                       sign), sign) for sign in (1, -1)]
                ((dopant, vacancy), metal_score), sign = max(options, key=lambda option: option[0][1])
                if chalcogen_score + metal_score > best_score:
                    best_score = chalcogen_score + metal_score
                    self.params = {"order": order, "mask_radius": mask_radius, "smoothing": smoothing,
                                   "single": single, "double": double, "dopant": dopant,
                                   "metal_vacancy": vacancy, "dopant_sign": sign}
        return self

    def _lattice(self, image: np.ndarray) -> Optional[_Lattice]:
        try:
            return _Lattice(image, self.peak_snr)
        except ValueError:
            return None


def _column_truth(positions: np.ndarray, true: np.ndarray, radius: float) -> np.ndarray:
    """The class of the true defect paired with each column (0 for none), one-to-one within `radius`."""
    truth = np.zeros(len(positions), np.int64)
    if len(positions) and len(true):
        dist = np.hypot(*(positions[:, None, :] - true[None, :, :2]).transpose(2, 0, 1))
        i, j = optimize.linear_sum_assignment(np.where(dist <= radius, dist, _FAR))
        paired = dist[i, j] <= radius
        truth[i[paired]] = np.rint(true[j[paired], 2]).astype(np.int64)
    return truth


def _best_pair(depth, truth, n_true, weak, strong, thresholds, sign):
    """Thresholds (t_weak < t_strong) maximising F1(weak) + F1(strong) on one sublattice: depth >= t_strong is
    `strong`, otherwise sign × depth >= t_weak is `weak`. A class with no true defects scores
    1 when nothing is predicted as it, else 0. The score returned carries a small bonus for the mean score of the
    neighbouring thresholds, which picks the middle of a plateau."""
    lo = thresholds[:, None, None]
    hi = thresholds[None, :, None]
    is_strong = depth[None, None, :] >= hi
    is_weak = ~is_strong & (sign * depth[None, None, :] >= lo)
    score = np.zeros((len(thresholds), len(thresholds)))
    for cls, predicted in ((weak, is_weak), (strong, is_strong)):
        n_pred = predicted.sum(axis=-1)
        tp = (predicted & (truth == cls)).sum(axis=-1)
        denom = n_pred + n_true[cls]
        score += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    valid = lo[..., 0] < hi[..., 0]
    score = np.where(valid, score, 0.0)
    score = np.where(valid, score + 0.1 * ndimage.uniform_filter(score, 9, mode="nearest"), -np.inf)
    i, j = np.unravel_index(np.argmax(score), score.shape)
    return (float(thresholds[i]), float(thresholds[j])), float(score[i, j])
