"""Periodic two-phase voxel microstructures: thresholded Gaussian random fields.

White noise is smoothed by a periodic Gaussian filter (applied in Fourier space, so the volume tiles space
without a seam) with one standard deviation per axis, in voxels, and thresholded so that exactly
``round(volume_fraction * size)`` voxels are phase 1. Unequal standard deviations give elongated grains
(one long axis) or plates (two long axes), after the microstructure families of Yang et al., Comput. Mater. Sci.
151, 278 (2018) and Acta Mater. 166, 335 (2019).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.fft as sfft

from menndl_py.errors import UserError

KINDS = ("isotropic", "elongated", "plate")


def _check_shape(shape, name: str = "shape") -> tuple[int, int, int]:
    try:
        dims = tuple(int(n) for n in shape)
        ok = len(dims) == 3 and all(n >= 1 and n == m for n, m in zip(dims, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{name}: must be three positive integers, got {shape!r}")
    return dims


def _check_lengths(lengths, name: str = "correlation_lengths") -> np.ndarray:
    try:
        out = np.asarray(lengths, dtype=float)
        ok = out.shape == (3,) and bool(np.all(np.isfinite(out)) and np.all(out >= 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{name}: must be three non-negative numbers (voxels), got {lengths!r}")
    return out


def _check_range(bounds, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in bounds)
        ok = low <= a <= b <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{name}: must be (low, high) with {low:g} <= low <= high <= {high:g}, got {bounds!r}")
    return a, b


def _frequencies(n: int, half: bool) -> np.ndarray:
    """Angular frequencies (radians per voxel) of a length-n axis, as scipy.fft lays them out."""
    return 2 * np.pi * (sfft.rfftfreq(n) if half else sfft.fftfreq(n))


def generate(shape: tuple[int, int, int], volume_fraction: float, correlation_lengths: tuple[float, float, float],
             rng: np.random.Generator | int | None) -> np.ndarray:
    """A periodic uint8 volume of 0s and 1s with exactly round(volume_fraction * size) ones.

    ``correlation_lengths`` are the Gaussian filter's standard deviations along the three axes, in voxels
    (0 leaves an axis unsmoothed). ``rng`` is a numpy Generator or a seed.
    """
    dims = _check_shape(shape)
    try:
        fraction = float(volume_fraction)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"volume_fraction: must be in [0, 1], got {volume_fraction!r}")
    sigma = _check_lengths(correlation_lengths)
    rng = np.random.default_rng(rng)

    spectrum = sfft.rfftn(rng.standard_normal(dims), workers=1)
    gains = [np.exp(-0.5 * (s * _frequencies(n, axis == 2)) ** 2) for axis, (n, s) in enumerate(zip(dims, sigma))]
    spectrum *= gains[0][:, None, None] * gains[1][None, :, None] * gains[2][None, None, :]
    field = sfft.irfftn(spectrum, s=dims, workers=1).ravel()

    size = field.size
    ones = int(round(fraction * size))
    out = np.zeros(size, dtype=np.uint8)
    if ones:
        out[np.argpartition(field, size - ones)[size - ones:]] = 1
    return out.reshape(dims)


def sample_family(n: int, shape: tuple[int, int, int], vf_range: tuple[float, float],
                  rng: np.random.Generator | int | None, length_range: tuple[float, float] = (1.0, 3.0),
                  aspect_range: tuple[float, float] = (2.0, 4.0)) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n volumes of varied morphology, and their descriptors.

    Each volume is, with equal chance, isotropic (all three lengths s), elongated (one axis s * aspect) or a
    plate (two axes s * aspect, normal to the third); s, the aspect ratio and the volume fraction are uniform
    in their ranges. Returns ``volumes`` (n, *shape) uint8 and a dict of arrays: ``kind`` (str), ``axis`` (the
    long axis of an elongated volume, the normal of a plate, -1 when isotropic), ``volume_fraction`` (as
    realised), ``correlation_lengths`` (n, 3).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"n: must be a positive integer, got {n!r}")
    dims = _check_shape(shape)
    vf_low, vf_high = _check_range(vf_range, "vf_range", 0.0, 1.0)
    s_low, s_high = _check_range(length_range, "length_range", 0.0, math.inf)
    a_low, a_high = _check_range(aspect_range, "aspect_range", 1.0, math.inf)
    rng = np.random.default_rng(rng)

    volumes = np.empty((n, *dims), dtype=np.uint8)
    kinds = np.empty(n, dtype=f"<U{max(map(len, KINDS))}")
    axes = np.full(n, -1, dtype=np.int64)
    lengths = np.empty((n, 3))
    for i in range(n):
        kind = KINDS[rng.integers(len(KINDS))]
        s = rng.uniform(s_low, s_high)
        aspect = rng.uniform(a_low, a_high)
        ell = np.full(3, s)
        if kind != "isotropic":
            axes[i] = rng.integers(3)
            if kind == "elongated":
                ell[axes[i]] = s * aspect
            else:
                ell *= aspect
                ell[axes[i]] = s
        kinds[i], lengths[i] = kind, ell
        volumes[i] = generate(dims, rng.uniform(vf_low, vf_high), ell, rng)
    fractions = volumes.reshape(n, -1).mean(axis=1, dtype=np.float64)
    return volumes, {"kind": kinds, "axis": axes, "volume_fraction": fractions, "correlation_lengths": lengths}


def check_two_phase(volume, name: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """``volume`` as a uint8 array, if it is a 3-D volume of 0s and 1s (of ``shape``, when given).

    Raises UserError with one line starting with ``name`` otherwise.
    """
    array = np.asarray(volume)
    if array.ndim != 3 or array.size == 0:
        raise UserError(f"{name} has shape {array.shape}; expected a non-empty 3-D volume")
    if shape is not None and array.shape != tuple(shape):
        raise UserError(f"{name} has shape {array.shape}; expected {tuple(shape)}")
    if array.dtype.kind not in "biuf" or not np.all((array == 0) | (array == 1)):
        try:
            values = np.unique(array)
            shown = ",".join(f"{v:g}" if array.dtype.kind in "biuf" else str(v) for v in values[:8])
            shown += ",..." if len(values) > 8 else ""
        except (TypeError, ValueError):
            shown = f"of type {array.dtype}"
        raise UserError(f"{name} has values {{{shown}}}; expected two phases 0 and 1")
    return array.astype(np.uint8, copy=False)
