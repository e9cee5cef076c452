"""The physics-inspired data-science baselines of the seed papers.

- Homogenization (Yang et al. 2018, after Kalidindi's materials knowledge systems): periodic 2-point statistics
  (the FFT autocorrelation of phase 1, cropped to vectors within `cutoff` voxels) → PCA → a polynomial ridge
  regression of log C11; and the rule of mixtures (Voigt and Reuss bounds of C11).
- Localization (Yang et al. 2019): first-order MKS. The strain field is the periodic convolution of influence
  coefficients α with the phase-1 indicator m, ε(s) = c + Σ_r α_r m(s - r); α is fitted by least squares at each
  Fourier frequency over the training fields, and c with α at frequency 0 from the mean strains.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from menndl_py.errors import UserError
from menndl_py.physics.microstructure import check_two_phase


def check_volumes(volumes, name: str, shape: tuple | None = None) -> np.ndarray:
    """`volumes` as (N, n1, n2, n3) uint8 of 0s and 1s (each of `shape`, when given); one-line UserError otherwise."""
    array = np.asarray(volumes)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.size == 0:
        raise UserError(f"{name} has shape {array.shape}; expected one or more 3-D volumes (N, n1, n2, n3)")
    if shape is not None and array.shape[1:] != tuple(shape):
        raise UserError(f"{name} has volumes of shape {array.shape[1:]}; expected {tuple(shape)}")
    check_two_phase(array.reshape(-1, *array.shape[2:]), name)
    return array.astype(np.uint8, copy=False)


def mase(predicted: np.ndarray, true: np.ndarray, applied: float = 1.0) -> np.ndarray:
    """Mean absolute strain error (%) of each field (N, ...) : mean over voxels of |predicted − true| / applied."""
    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    if predicted.shape != true.shape:
        raise UserError(f"predicted fields have shape {predicted.shape}; expected {true.shape} like the true ones")
    return 100.0 * np.abs(predicted - true).reshape(len(true), -1).mean(axis=1) / applied


# ------------------------------------------------------------------------------------------- homogenization

def rule_of_mixtures(volume_fraction, c11_soft: float, c11_hard: float) -> dict[str, np.ndarray]:
    """Voigt (arithmetic) and Reuss (harmonic) averages of the phases' C11: upper and lower bounds of C11."""
    f = np.asarray(volume_fraction, np.float64)
    return {"voigt": (1 - f) * c11_soft + f * c11_hard, "reuss": 1.0 / ((1 - f) / c11_soft + f / c11_hard)}


def two_point_stats(volumes, cutoff: int) -> np.ndarray:
    """Periodic autocorrelation of phase 1 for the vectors |r_i| <= cutoff, one flattened row per volume."""
    volumes = check_volumes(volumes, "volumes")
    n = volumes.shape[1:]
    keep = [np.r_[0:min(cutoff, s // 2) + 1, s - min(cutoff, (s - 1) // 2):s] for s in n]
    rows = []
    for m in volumes:
        spectrum = sfft.rfftn(m.astype(np.float64), workers=1)
        auto = sfft.irfftn(spectrum * spectrum.conj(), s=n, workers=1) / m.size
        rows.append(auto[np.ix_(*keep)].ravel())
    return np.asarray(rows)


class StatsRegression:
    """2-point statistics → PCA → standardised scores → polynomial features → ridge on log C11 (the penalty
    chosen by leave-one-out cross-validation)."""

    def __init__(self, cutoff: int = 8, components: int = 6, degree: int = 2):
        self.cutoff, self.components, self.degree = cutoff, components, degree

    def fit(self, volumes, c11) -> "StatsRegression":
        from sklearn.decomposition import PCA
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures, StandardScaler

        stats = two_point_stats(volumes, self.cutoff)
        self.shape = np.asarray(volumes).shape[-3:]
        components = min(self.components, len(stats) - 1, stats.shape[1])
        self.model = make_pipeline(PCA(components, random_state=0), StandardScaler(),
                                   PolynomialFeatures(self.degree), StandardScaler(),
                                   RidgeCV(np.logspace(-6, 3, 19)))
        self.model.fit(stats, np.log(np.asarray(c11, np.float64)))
        return self

    def predict(self, volumes) -> np.ndarray:
        check_volumes(volumes, "volumes", self.shape)
        return np.exp(self.model.predict(two_point_stats(volumes, self.cutoff)))


# ------------------------------------------------------------------------------------------- localization

class MKSLocalization:
    """First-order MKS localization of ε11 (fields in units of the applied strain)."""

    def fit(self, volumes, strains) -> "MKSLocalization":
        volumes = check_volumes(volumes, "volumes")
        strains = np.asarray(strains, np.float64)
        if strains.shape != volumes.shape:
            raise UserError(f"strains has shape {strains.shape}; expected {volumes.shape} like the volumes")
        self.shape = volumes.shape[1:]
        m = sfft.rfftn(volumes.astype(np.float64), axes=(1, 2, 3), workers=1)
        e = sfft.rfftn(strains, axes=(1, 2, 3), workers=1)
        power = (m.real ** 2 + m.imag ** 2).sum(axis=0)
        self.alpha = (m.conj() * e).sum(axis=0) / np.maximum(power, 1e-12 * power.max())
        fractions = volumes.reshape(len(volumes), -1).mean(axis=1)
        means = strains.reshape(len(strains), -1).mean(axis=1)
        design = np.stack([np.ones_like(fractions), fractions], axis=1)
        self.mean_coefficients = np.linalg.lstsq(design, means, rcond=None)[0]
        return self

    def predict(self, volumes) -> np.ndarray:
        volumes = check_volumes(volumes, "volumes", self.shape)
        m = sfft.rfftn(volumes.astype(np.float64), axes=(1, 2, 3), workers=1)
        e = self.alpha * m
        fractions = volumes.reshape(len(volumes), -1).mean(axis=1)
        e[:, 0, 0, 0] = (self.mean_coefficients[0] + self.mean_coefficients[1] * fractions) * np.prod(self.shape)
        return sfft.irfftn(e, s=self.shape, axes=(1, 2, 3), workers=1)
