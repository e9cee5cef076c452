"""EBSD patterns of nickel for any crystal orientation, degraded as a microscope records them and corrected as users
correct them, from kikuchipy's dynamically simulated (EMsoft) nickel master pattern bundled in its wheel.

The expected counts of a pattern are B(x) · (1 + contrast · K(x)): K is the master pattern projected onto the
detector (kikuchipy's `get_patterns`) and standardised, B a smooth Gaussian background (the backscatter yield)
scaled to the mean count per pixel. The counts are Poisson; each pattern has its own projection centre (the nominal
one plus a small jitter, as the centre drifts across a scan), its own small background shift, and its own smooth
yield variation: B is multiplied by 1 + a · F, F a Gaussian random field (unit variance, correlation length drawn
log-uniformly within a factor of two of `yield_scale`) and a drawn uniformly in [0, `yield_variation`]. The field
stands for what a Gaussian background leaves out and a user's correction does not remove: orientation-dependent
channelling of the backscatter yield, screen vignetting, stray light. Users' correction follows: the static
background (the map's mean background) subtracted, the dynamic background (a Gaussian blur of the pattern) removed,
the intensities standardised: kikuchipy's `remove_static_background`, `remove_dynamic_background` and
`normalize_intensity`.

The defaults copy kikuchipy's experimental nickel set (`nickel_ebsd_small`: 60 × 60 px, its projection centre and
sample tilt, a Gaussian fitted to its static background, and the Kikuchi contrast and Poisson count that give its
band contrast and its pixel noise without the yield variation), measured by `benchmarks/ebsd_simulator.py`. There,
after correction, the experimental patterns differ from noise-free simulations at their indexed orientations 26
times more than simulated noise does at wavelengths of 15 to 60 px, and 6 times more at 6 to 15 px; without the
yield variation simulated patterns differ 2 and 1.2 times, with it (a up to 0.05) 42 and 7.5 times on average. The
field is matched to the corrected patterns, not to the raw ones: it doubles the raw band contrast (1 to 8 px) of
the simulated patterns over the experimental.

Orientations are unit quaternions (w, x, y, z) in orix's convention: from the sample frame to the crystal frame, so
the cubic symmetry acts on the left (s · q).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from menndl_py.errors import UserError
from menndl_py.physics import randomization

_WHERE = "task.options.simulator"
BATCH = 256  # patterns projected per call to kikuchipy (its per-call cost is ~15 ms)


@dataclass(frozen=True)
class EbsdSettings:
    """Detector geometry and degradations of simulated patterns. Projection centre (PC) in kikuchipy's Bruker
    convention: pcx from the left and pcy from the top in detector widths and heights, pcz the distance from the
    sample in detector heights. Angles in degrees; background positions and widths in detector widths."""

    pattern_height: int = 60          # pixels
    pattern_width: int = 60           # pixels
    pcx: float = 0.425
    pcy: float = 0.213
    pcz: float = 0.501
    sample_tilt: float = 70.0         # the sample surface, from horizontal
    detector_tilt: float = 0.0        # the detector screen, from vertical
    pc_jitter: float = 0.002          # standard deviation of each PC coordinate, pattern to pattern
    counts: float = 4500.0            # mean counts per pixel (Poisson noise)
    kikuchi_contrast: float = 0.02    # standard deviation of the Kikuchi signal relative to the background
    background_x: float = 0.40        # centre of the Gaussian background, from the left
    background_y: float = 0.46        # centre of the Gaussian background, from the top
    background_width: float = 0.44    # standard deviation of the Gaussian background
    background_shift: float = 0.02    # standard deviation of each pattern's background centre shift
    yield_variation: float = 0.05     # largest relative std of each pattern's smooth yield variation
    yield_scale: float = 0.04         # its typical correlation length (std of a Gaussian), in detector widths

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 1024:
                    _bad(f.name, "must be an integer in [16, 1024]", value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                _bad(f.name, "must be a finite number", value)
        for name in ("pcx", "pcy"):
            _check(self, name, 0 <= getattr(self, name) <= 1, "must be in [0, 1]")
        _check(self, "pcz", 0.1 <= self.pcz <= 5, "must be in [0.1, 5]")
        _check(self, "sample_tilt", 0 <= self.sample_tilt <= 90, "must be in [0, 90]")
        _check(self, "detector_tilt", -30 <= self.detector_tilt <= 30, "must be in [-30, 30]")
        _check(self, "pc_jitter", 0 <= self.pc_jitter <= 0.05, "must be in [0, 0.05]")
        _check(self, "counts", 1 <= self.counts <= 1e7, "must be in [1, 1e7]")
        _check(self, "kikuchi_contrast", 0 < self.kikuchi_contrast <= 0.2, "must be in (0, 0.2]")
        _check(self, "background_width", 0.05 <= self.background_width <= 10, "must be in [0.05, 10]")
        _check(self, "background_shift", 0 <= self.background_shift <= 0.2, "must be in [0, 0.2]")
        _check(self, "yield_variation", 0 <= self.yield_variation <= 0.5, "must be in [0, 0.5]")
        _check(self, "yield_scale", 0.005 <= self.yield_scale <= 1, "must be in [0.005, 1]")

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern_height, self.pattern_width

    @property
    def pc(self) -> np.ndarray:
        return np.array([self.pcx, self.pcy, self.pcz])


def _bad(name: str, rule: str, value) -> None:
    raise UserError(f"{_WHERE}.{name}: {rule}, got {value!r}")


def _check(settings: EbsdSettings, name: str, ok: bool, rule: str) -> None:
    if not ok:
        _bad(name, rule, getattr(settings, name))


def check_ranges(settings: EbsdSettings, ranges: dict, where: str = "task.options.randomize") -> dict:
    """Validated ranges of domain randomization (see `randomization.check_ranges`) of any setting but the
    detector's size: the microscope, noise and background that training patterns are drawn over."""
    fields = [f.name for f in dataclasses.fields(EbsdSettings) if f.name not in ("pattern_height", "pattern_width")]
    return randomization.check_ranges(settings, ranges, where, fields)


class Sample(NamedTuple):
    patterns: np.ndarray     # float32 (N, H, W): corrected, each with zero mean and unit standard deviation
    quaternions: np.ndarray  # float64 (N, 4): the orientations (w, x, y, z); w >= 0 from `simulate`
    pcs: np.ndarray          # float64 (N, 3): each pattern's projection centre


# ------------------------------------------------------------------------------------------------ sources

@functools.lru_cache(maxsize=1)
def master_pattern():
    """kikuchipy's nickel master pattern (20 kV, square Lambert, both hemispheres) as float32, so projections keep
    its intensities. The file is bundled in kikuchipy's wheel; nothing is downloaded."""
    import kikuchipy

    master = kikuchipy.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    master.change_dtype("float32")
    return master


def experimental() -> dict[str, np.ndarray]:
    """kikuchipy's experimental nickel patterns (`nickel_ebsd_small`: 3 × 3 points of a scan, 60 × 60 px, NORDIF
    UF-1100 detector, 20 kV) with what kikuchipy stores beside them: `patterns` corrected as simulated ones are
    (float32, N × 60 × 60), `raw` (uint8), `quaternions` (N × 4), `pcs` (N × 3, Bruker), `scores` and the
    `static_background`. The orientations and projection centres come from Hough indexing (PyEBSDIndex) followed by
    kikuchipy's orientation and PC refinement against a simulated master pattern (kikuchipy 0.8 changelog, #578 and
    #584); `scores` are the refinement's normalised cross-correlations. They are a pattern-matching result, not an
    independent ground truth."""
    import kikuchipy

    signal = kikuchipy.data.nickel_ebsd_small()
    raw = signal.data.reshape(-1, *signal.data.shape[-2:])
    static = np.asarray(signal.static_background)
    quaternions = signal.xmap.rotations.data.reshape(-1, 4)
    return {"patterns": correct_background(raw.astype(np.float32), static.astype(np.float32)),
            "raw": raw, "quaternions": np.where(quaternions[:, :1] < 0, -quaternions, quaternions),
            "pcs": signal.detector.pc.reshape(-1, 3), "scores": signal.xmap.scores.reshape(-1),
            "static_background": static}


# --------------------------------------------------------------------------------------------- orientations

def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """n orientations uniform in SO(3) (normalised 4-D Gaussian vectors; orix's `Rotation.random` takes no
    generator), as unit quaternions with w >= 0."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


# ------------------------------------------------------------------------------------------------- render

def detector(settings: EbsdSettings, pc=None):
    """kikuchipy's detector of the settings, at the nominal projection centre or at `pc` (3, or one per pattern)."""
    from kikuchipy.detectors import EBSDDetector

    return EBSDDetector(shape=settings.shape, pc=settings.pc if pc is None else pc, sample_tilt=settings.sample_tilt,
                        tilt=settings.detector_tilt)


def project(settings: EbsdSettings, quaternions, pcs=None) -> np.ndarray:
    """The master pattern's intensities (float32, N × H × W) on the detector for each orientation, at the nominal
    projection centre or at one centre per pattern (`pcs`, N × 3).

    Each orientation is first replaced by its symmetry equivalent in the fundamental zone (orix's `reduce`), so
    equivalent orientations give identical patterns. Projected as given, 16 of the 24 equivalents differ slightly
    (an RMS difference as from a 0.1° rotation): the 401 × 401 Lambert grid of the bundled master pattern is mapped
    onto itself only by the 8 rotations that map the z axis onto ±z, so the others interpolate it at other points."""
    import dask
    from orix.quaternion import Orientation, Rotation, symmetry

    quaternions = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(quaternions), *settings.shape), np.float32)
    for start in range(0, len(quaternions), BATCH):
        stop = min(start + BATCH, len(quaternions))
        reduced = Orientation(quaternions[start:stop], symmetry=symmetry.O).reduce()
        pc = settings.pc if pcs is None else np.asarray(pcs, dtype=np.float64)[start:stop]
        with dask.config.set(scheduler="synchronous"):
            out[start:stop] = master_pattern().get_patterns(Rotation(reduced.data), detector(settings, pc),
                                                            compute=True, show_progressbar=False).data
    return out


def background(settings: EbsdSettings, shifts=None) -> np.ndarray:
    """The smooth background (float64, N × H × W, mean 1 at the nominal centre) with each pattern's centre shifted
    by `shifts` (N × 2: x, y in detector widths); one pattern at the nominal centre without shifts."""
    h, w = settings.shape
    shifts = np.zeros((1, 2)) if shifts is None else np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    y = ((np.arange(h) + 0.5) / w)[None, :, None]
    x = ((np.arange(w) + 0.5) / w)[None, None, :]
    cx = settings.background_x + shifts[:, 0, None, None]
    cy = settings.background_y + shifts[:, 1, None, None]
    gauss = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * settings.background_width ** 2))
    nominal = np.exp(-((x - settings.background_x) ** 2 + (y - settings.background_y) ** 2)
                     / (2 * settings.background_width ** 2))
    return gauss / nominal.mean()


def yield_fields(settings: EbsdSettings, n: int, rng: np.random.Generator) -> np.ndarray:
    """n smooth yield variations 1 + a · F (float64, N × H × W); see the module's docstring."""
    from scipy.ndimage import gaussian_filter

    amplitudes = settings.yield_variation * rng.random(n)
    scales = settings.yield_scale * settings.pattern_width * 2 ** rng.uniform(-1, 1, n)
    fields = np.empty((n, *settings.shape))
    for field, scale, noise in zip(fields, scales, rng.standard_normal((n, *settings.shape))):
        field[:] = gaussian_filter(noise, scale, mode="reflect")
        field /= field.std()
    return 1 + amplitudes[:, None, None] * fields


def correct_background(patterns: np.ndarray, static: np.ndarray | None) -> np.ndarray:
    """Patterns (float32, N × H × W) as users correct them with kikuchipy: the static background subtracted (when
    there is one), the dynamic background removed (a Gaussian of std width / 8, in the frequency domain), then zero
    mean and unit standard deviation."""
    import dask
    from kikuchipy.signals import EBSD

    signal = EBSD(np.asarray(patterns, dtype=np.float32))
    with dask.config.set(scheduler="synchronous"):
        if static is not None:
            signal.remove_static_background("subtract", static_bg=np.asarray(static, np.float32),
                                            show_progressbar=False)
        signal.remove_dynamic_background(show_progressbar=False)
        signal.normalize_intensity(num_std=1, show_progressbar=False)
    return signal.data


def record(settings: EbsdSettings, quaternions, rng: np.random.Generator | None = None) -> tuple:
    """(raw counts (float32, N × H × W), projection centres (N × 3)) of the given orientations. With a generator:
    each pattern's projection centre and background centre are jittered, its yield varied, then its counts are
    Poisson, in that order of draws; without one: the nominal geometry and the expected counts (no noise)."""
    quaternions = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    n = len(quaternions)
    if rng is None:
        pcs, shifts = np.broadcast_to(settings.pc, (n, 3)).copy(), np.zeros((n, 2))
    else:
        pcs = settings.pc + settings.pc_jitter * rng.standard_normal((n, 3))
        shifts = settings.background_shift * rng.standard_normal((n, 2))
    yields = 1 if rng is None or settings.yield_variation == 0 else yield_fields(settings, n, rng)
    kikuchi = project(settings, quaternions, None if rng is None or settings.pc_jitter == 0 else pcs)
    kikuchi = (kikuchi - kikuchi.mean(axis=(1, 2), keepdims=True)) / kikuchi.std(axis=(1, 2), keepdims=True)
    signal = np.maximum(1 + settings.kikuchi_contrast * kikuchi, 0)
    expected = settings.counts * background(settings, shifts) * yields * signal
    counts = expected if rng is None else rng.poisson(expected)
    return counts.astype(np.float32), pcs


def static_background(settings: EbsdSettings) -> np.ndarray:
    """The map's mean background in counts (float32, H × W): what users record and subtract."""
    return (settings.counts * background(settings)[0]).astype(np.float32)


def render(settings: EbsdSettings, quaternions, rng: np.random.Generator | None = None) -> Sample:
    """Corrected patterns of the given orientations (see `record`)."""
    counts, pcs = record(settings, quaternions, rng)
    return Sample(correct_background(counts, static_background(settings)),
                  np.asarray(quaternions, dtype=np.float64).reshape(-1, 4), pcs)


def simulate(settings: EbsdSettings, n: int, rng: np.random.Generator) -> Sample:
    """n patterns of orientations uniform in SO(3), with noise; the orientations are drawn first."""
    return render(settings, random_quaternions(n, rng), rng)
