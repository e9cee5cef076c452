"""HAADF-STEM images of a 1H transition-metal dichalcogenide monolayer with point defects and exact labels: the
fast simulator (milliseconds per image); `physics.multislice` makes slower, physics-grade images of the same
specimens.

The model, in projection along the c axis: metal columns (one atom) and chalcogen columns (two stacked atoms)
on the two sublattices of a honeycomb of lattice constant a. A column scatters onto the HAADF detector a share of
the beam proportional to the sum of Z^n over its atoms (incoherent Z-contrast, n ~ 1.7), chalcogen columns times
`chalcogen_contrast`. The image of the columns is their sum of probe intensities (a Gaussian core plus a tail: an
Airy pattern, or a wider Gaussian), at the column positions after a random rotation, strain, scan drift and row
jitter, on a background with linear gradients; the counts are then Poisson at the given dose, plus Gaussian read
noise. Defects are drawn per site; their positions go through the same geometry, so the label disks and the
coordinate table sit exactly where the image shows them.

Assumptions of the intensity model, and what it leaves out: each column scatters independently of its
neighbours and of the probe's position inside it (no channelling, no cross-talk between columns, no dependence on
thickness, voltage, convergence or detector angles beyond what Z^n and `chalcogen_contrast` stand for: multislice
images of WSe2 give Se2 columns at about 0.96 of W, where Z^1.7 sums give 0.54); the probe is one fixed
incoherent shape (no aberrations, no defocus spread, no source-size blur apart from what its width says); atoms do
not vibrate and do not relax around defects; the dose is spread evenly, without scan distortion other than a
smooth drift and per-row jitter. `randomize` (see `randomized`) draws these settings per image over ranges, so a
network trained on them does not learn one contrast model.

Rendering is exact at sub-pixel positions and costs one FFT: each column is splatted as a small sampled Gaussian
(width sigma_1 <= 1 px) and the spectrum is multiplied by probe / Gaussian(sigma_1), so the result is the
probe sampled at the pixel centres, with no interpolation blur.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.fft

from menndl_py.errors import UserError
from menndl_py.physics import randomization

CLASSES = ("lattice", "chalcogen_vacancy", "double_vacancy", "dopant", "metal_vacancy")

# Atomic numbers of the hosts' and the usual dopants' elements.
ATOMIC_NUMBER = {"S": 16, "Se": 34, "Te": 52, "V": 23, "Cr": 24, "Nb": 41, "Mo": 42, "Ta": 73, "W": 74, "Re": 75}
METALS = ("V", "Cr", "Nb", "Mo", "Ta", "W", "Re")

# material -> (metal, chalcogen, in-plane lattice constant a in Å, bulk values from X-ray diffraction)
MATERIALS = {"WSe2": ("W", "Se", 3.28), "WS2": ("W", "S", 3.15), "MoS2": ("Mo", "S", 3.16)}

_WHERE = "task.options"
_SPLAT = 5         # taps of the splat kernel on each side of a column (2 * _SPLAT in all)
_DRIFT_STEPS = 3   # fixed-point steps solving "a column appears on the row scanned when the drift put it there"


@dataclass(frozen=True)
class StemSettings:
    """Physical parameters of one simulated image (lengths in Å, angles in degrees).

    Defaults: an aberration-corrected 60-80 kV instrument imaging WSe2 with a 1.0 Å probe, 0.2 Å pixels
    (256 px = 51 Å, about 15 unit cells across, the probe sampled by 5 px per FWHM), 1e5 e/Å^2 (a routine
    dose for TMDs; 4000 electrons per pixel), a W atom scattering 4% of the beam onto the detector at its peak
    (cross-section 0.05 Å^2), a faint background, and defect densities of a few per image per class.
    """

    material: str = "WSe2"              # WSe2, WS2 or MoS2
    dopant: str | None = None           # metal-site dopant; None: Mo in W hosts, W in Mo hosts
    z_exponent: float = 1.7             # a column scatters as sum of Z^n over its atoms
    chalcogen_contrast: float = 1.0     # chalcogen columns scatter this times their Z^n sum (channelling, angles)
    image_size: int = 256               # pixels on a side (the height when image_width is set)
    image_width: int | None = None      # pixels across; None: image_size (square)
    pixel_size: float = 0.2             # Å
    probe_fwhm: float = 1.0             # Å, full width at half maximum of the probe intensity
    tail_weight: float = 0.2            # share of the probe intensity in its tail
    tail_fwhm: float = 0.0              # Å: the tail a Gaussian of this FWHM; 0: an Airy pattern of probe_fwhm
    atom_cross_section: float = 0.05    # Å^2, HAADF cross-section of a W atom; Z scales as (Z/74)^n
    background: float = 0.002           # share of the beam on the detector everywhere (support, contamination)
    background_slope_y: float = 0.0     # change of that share from the top row to the bottom row
    background_slope_x: float = 0.0     # change of that share from the left column to the right column
    dose: float = 1e5                   # electrons per Å^2
    read_noise: float = 2.0             # detector noise, standard deviation in counts
    chalcogen_vacancy_density: float = 0.01   # per chalcogen site: one of the two atoms missing
    double_vacancy_density: float = 0.003     # per chalcogen site: both atoms missing
    dopant_density: float = 0.01              # per metal site
    metal_vacancy_density: float = 0.003      # per metal site
    max_rotation: float = 180.0         # lattice rotated uniformly in +-max_rotation (180: any orientation)
    max_strain: float = 0.02            # each strain component uniform in +-max_strain
    drift: float = 0.3                  # Å: linear and quadratic drift coefficients uniform in +-drift per axis
    jitter: float = 0.1                 # Å, standard deviation of the x offset of each scan row
    label_radius: float = 0.6           # Å, radius of the label disk at each defect

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("material", "dopant") or (f.name == "image_width" and value is None):
                continue
            if f.name in ("image_size", "image_width"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 16:
                    _bad(f.name, "must be an integer >= 16", value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                _bad(f.name, "must be a finite number", value)
        if not isinstance(self.material, str) or self.material not in MATERIALS:
            _bad("material", f"must be one of {', '.join(MATERIALS)}", self.material)
        if self.dopant is not None and (self.dopant not in METALS or self.dopant == MATERIALS[self.material][0]):
            _bad("dopant", f"must be a metal other than the host's, one of {', '.join(METALS)}", self.dopant)
        _check(self, "z_exponent", 0 < self.z_exponent <= 2, "must be in (0, 2]")
        _check(self, "pixel_size", self.pixel_size > 0, "must be > 0")
        _check(self, "probe_fwhm", self.probe_fwhm >= 2 * self.pixel_size,
               f"must be >= 2 pixels ({2 * self.pixel_size:g} Å)")
        _check(self, "tail_weight", 0 <= self.tail_weight <= 1, "must be in [0, 1]")
        _check(self, "tail_fwhm", self.tail_fwhm == 0 or self.tail_fwhm >= self.probe_fwhm,
               f"must be 0 (an Airy tail) or >= probe_fwhm ({self.probe_fwhm:g} Å)")
        _check(self, "chalcogen_contrast", 0 < self.chalcogen_contrast <= 10, "must be in (0, 10]")
        _check(self, "atom_cross_section", self.atom_cross_section > 0, "must be > 0")
        for name in ("background", "read_noise", "drift", "jitter"):
            _check(self, name, getattr(self, name) >= 0, "must be >= 0")
        _check(self, "background", self.background >= (abs(self.background_slope_y) + abs(self.background_slope_x)) / 2,
               "must be >= half the sum of |background_slope_y| and |background_slope_x| (no negative background)")
        _check(self, "dose", self.dose > 0, "must be > 0")
        for name in ("chalcogen_vacancy_density", "double_vacancy_density", "dopant_density",
                     "metal_vacancy_density"):
            _check(self, name, 0 <= getattr(self, name) <= 1, "must be in [0, 1]")
        _check(self, "double_vacancy_density", self.chalcogen_vacancy_density + self.double_vacancy_density <= 1,
               "plus chalcogen_vacancy_density must be <= 1")
        _check(self, "metal_vacancy_density", self.dopant_density + self.metal_vacancy_density <= 1,
               "plus dopant_density must be <= 1")
        _check(self, "max_rotation", 0 <= self.max_rotation <= 180, "must be in [0, 180]")
        _check(self, "max_strain", 0 <= self.max_strain <= 0.1, "must be in [0, 0.1]")
        _check(self, "label_radius", self.label_radius >= self.pixel_size,
               f"must be >= pixel_size ({self.pixel_size:g} Å)")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image in pixels."""
        return self.image_size, self.image_width or self.image_size

    @property
    def dopant_element(self) -> str:
        """The dopant: as set, else Mo in a W host and W in a Mo host."""
        return self.dopant or ("Mo" if MATERIALS[self.material][0] == "W" else "W")


def _bad(name: str, rule: str, value) -> None:
    raise UserError(f"{_WHERE}.{name}: {rule}, got {value!r}")


def _check(settings: StemSettings, name: str, ok: bool, rule: str) -> None:
    if not ok:
        _bad(name, rule, getattr(settings, name))


class Sample(NamedTuple):
    image: np.ndarray     # float32 (H, W): detector counts
    labels: np.ndarray    # uint8 (H, W): class of each pixel
    defects: np.ndarray   # float32 (K, 3): y, x (pixels, centre of pixel (0, 0) at (0, 0)), class


def column_intensity(settings: StemSettings, atoms) -> float:
    """Expected counts integrated over the image of one column holding ``atoms`` (element symbols)."""
    n = settings.z_exponent
    return settings.dose * settings.atom_cross_section * sum((ATOMIC_NUMBER[a] / 74) ** n for a in atoms)


# ------------------------------------------------------------------------------------------------- render

@functools.lru_cache(maxsize=8)
def _canvas(settings: StemSettings) -> tuple[int, tuple[int, int], float, np.ndarray]:
    """(margin, canvas shape, splat sigma, transfer function): the image plus a margin wide enough for the
    probe, padded to fast FFT lengths; the transfer function is probe / splat kernel on the rfft2 grid."""
    px = settings.pixel_size
    margin = math.ceil(4 * max(settings.probe_fwhm, settings.tail_fwhm) / px) + _SPLAT
    shape = tuple(scipy.fft.next_fast_len(n + 2 * margin, real=True) for n in settings.shape)
    sigma = settings.probe_fwhm / px / math.sqrt(8 * math.log(2))
    sigma_1 = min(1.0, sigma / math.sqrt(2))
    k2 = scipy.fft.fftfreq(shape[0])[:, None] ** 2 + scipy.fft.rfftfreq(shape[1])[None, :] ** 2   # cycles per pixel
    gauss = np.exp(-2 * math.pi ** 2 * sigma ** 2 * k2)
    if settings.tail_fwhm > 0:
        sigma_tail = settings.tail_fwhm / px / math.sqrt(8 * math.log(2))
        tail = np.exp(-2 * math.pi ** 2 * sigma_tail ** 2 * k2)
    else:  # the Airy pattern's transfer function is the autocorrelation of a disk; its FWHM is 1.029 / cutoff
        s = np.minimum(np.sqrt(k2) * settings.probe_fwhm / px / 1.029, 1.0)
        tail = 2 / math.pi * (np.arccos(s) - s * np.sqrt(1 - s * s))
    probe = (1 - settings.tail_weight) * gauss + settings.tail_weight * tail
    transfer = probe / np.exp(-2 * math.pi ** 2 * sigma_1 ** 2 * k2)
    return margin, shape, sigma_1, transfer.astype(np.float32)


def _render_canvas(settings: StemSettings, yx: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Expected counts on the whole canvas of columns at canvas positions ``yx`` (each _SPLAT px inside), without
    the background."""
    _, shape, sigma_1, transfer = _canvas(settings)
    taps = np.arange(1 - _SPLAT, _SPLAT + 1)
    base = np.floor(yx).astype(np.int64)
    kernel = np.exp(-0.5 * ((taps[None, None, :] - (yx - base)[:, :, None]) / sigma_1) ** 2)   # (K, 2, taps)
    kernel /= kernel.sum(axis=2, keepdims=True)
    values = counts[:, None, None] * kernel[:, 0, :, None] * kernel[:, 1, None, :]
    rows = base[:, 0, None] + taps
    cols = base[:, 1, None] + taps
    index = rows[:, :, None] * shape[1] + cols[:, None, :]
    delta = np.bincount(index.ravel(), values.ravel(), shape[0] * shape[1]).astype(np.float32).reshape(shape)
    return scipy.fft.irfft2(scipy.fft.rfft2(delta) * transfer, s=shape)


def _background(settings: StemSettings) -> np.ndarray:
    """Expected background counts of each pixel: the mean share plus its linear gradients."""
    h, w = settings.shape
    y = np.linspace(-0.5, 0.5, h)[:, None] * settings.background_slope_y
    x = np.linspace(-0.5, 0.5, w)[None, :] * settings.background_slope_x
    return settings.dose * settings.pixel_size ** 2 * (settings.background + y + x)


def render(settings: StemSettings, yx, counts) -> np.ndarray:
    """Noiseless image (float32 counts, background included) of columns at pixel positions ``yx`` (K, 2) whose
    images integrate to ``counts`` (K,) (see column_intensity). Columns far outside the image are left out."""
    margin, shape, _, _ = _canvas(settings)
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2) + margin
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    inside = np.all((yx >= _SPLAT) & (yx < np.array(shape) - _SPLAT), axis=1)
    h, w = settings.shape
    return _render_canvas(settings, yx[inside], counts[inside])[margin:margin + h, margin:margin + w] \
        + _background(settings)


# ---------------------------------------------------------------------------------------------- structure

@functools.lru_cache(maxsize=8)
def _lattice(settings: StemSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sites (N, 2) y, x in Å around the origin, is_metal (N,), cell basis (2, 2)): enough unit cells to cover
    the canvas under any rotation, the strain and the drift."""
    _, shape, _, _ = _canvas(settings)
    a = MATERIALS[settings.material][2]
    basis = np.array([[0.0, a], [a * math.sqrt(3) / 2, a / 2]])     # rows: a1, a2 as (y, x)
    half_diagonal = max(shape) * settings.pixel_size / math.sqrt(2)
    reach = (half_diagonal + 4 * settings.drift + 2 * a) / (1 - 2 * settings.max_strain)
    n = math.ceil(reach / (a * math.sqrt(3) / 2)) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    metal = np.stack([i.ravel(), j.ravel()], axis=1) @ basis
    chalcogen = metal + (basis[0] + basis[1]) / 3
    sites = np.concatenate([metal, chalcogen])
    return sites, np.arange(len(sites)) < len(metal), basis


def _site_counts(settings: StemSettings) -> np.ndarray:
    """Integrated counts of a column by [sublattice (0 metal, 1 chalcogen), class]."""
    metal, chalcogen, _ = MATERIALS[settings.material]
    counts = np.zeros((2, len(CLASSES)))
    counts[0, 0] = column_intensity(settings, [metal])
    counts[0, 3] = column_intensity(settings, [settings.dopant_element])
    counts[1, 0] = column_intensity(settings, [chalcogen, chalcogen])
    counts[1, 1] = column_intensity(settings, [chalcogen])
    counts[1] *= settings.chalcogen_contrast
    return counts


def _rotation_strain(angle: float, strain: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    exx, eyy, exy = strain
    return np.array([[c, -s], [s, c]]) @ np.array([[1 + eyy, exy], [exy, 1 + exx]])


class Specimen(NamedTuple):
    yx: np.ndarray        # float64 (K, 2): where each column appears, image pixels (centre of pixel (0, 0) at 0)
    classes: np.ndarray   # int64 (K,): class of each column's site (0: intact)
    counts: np.ndarray    # float64 (K,): expected counts integrated over each column's image (0: empty)
    is_metal: np.ndarray  # bool (K,): the column's sublattice


def specimen(settings: StemSettings, rng: np.random.Generator) -> Specimen:
    """Every column of one image as the scan records it: the lattice under a random rotation, strain, drift and
    row jitter, each site's class drawn from the defect densities. The random draws do not depend on the
    densities; columns up to a probe's reach outside the image are included."""
    margin, shape, _, _ = _canvas(settings)
    sites, is_metal, basis = _lattice(settings)
    px, (h, w) = settings.pixel_size, settings.shape

    origin = rng.random(2) @ basis
    angle = math.radians(settings.max_rotation) * rng.uniform(-1, 1)
    strain = settings.max_strain * rng.uniform(-1, 1, 3)
    drift = settings.drift / px * rng.uniform(-1, 1, (2, 2))     # rows: linear, quadratic; columns: y, x
    jitter = settings.jitter / px * rng.standard_normal(shape[0])    # x offset of each canvas row
    draw = rng.random(len(sites))

    # specimen positions in image pixels, then where the scan records them: row y' shows the specimen shifted by
    # the drift at that row's time t = y' / h, and by that row's jitter in x
    yx = (sites + origin) @ _rotation_strain(angle, strain).T / px + np.array([h - 1, w - 1]) / 2
    y = yx[:, 0].copy()
    for _ in range(_DRIFT_STEPS):
        t = y / h
        y = yx[:, 0] + drift[0, 0] * t + drift[1, 0] * t * t
    t = y / h
    row = np.clip(np.rint(y).astype(np.int64) + margin, 0, shape[0] - 1)
    yx = np.stack([y, yx[:, 1] + drift[0, 1] * t + drift[1, 1] * t * t + jitter[row]], axis=1) + margin
    keep = np.all((yx >= _SPLAT) & (yx < np.array(shape) - _SPLAT), axis=1)
    yx, is_metal, draw = yx[keep], is_metal[keep], draw[keep]

    # a site's class from its one uniform draw u: u < p_a -> class a; p_a <= u < p_a + p_b -> class b; else 0
    chalcogen_p = (settings.chalcogen_vacancy_density, settings.double_vacancy_density)
    metal_p = (settings.dopant_density, settings.metal_vacancy_density)
    level = (draw[:, None] < np.where(is_metal[:, None], np.cumsum(metal_p), np.cumsum(chalcogen_p))).sum(axis=1)
    sublattice = np.where(is_metal, 0, 1)
    classes = np.array([[0, 4, 3], [0, 2, 1]])[sublattice, level]
    return Specimen(yx - margin, classes, _site_counts(settings)[sublattice, classes], is_metal)


def simulate(settings: StemSettings, rng: np.random.Generator, *, noise: bool = True) -> Sample:
    """One image, its label map and its defect table. With ``noise=False`` the image holds the expected counts.

    The random draws do not depend on the densities, and the noise is drawn last: the same ``rng`` state gives
    the same geometry for settings that differ only in densities or noise."""
    margin, _, _, _ = _canvas(settings)
    h, w = settings.shape
    columns = specimen(settings, rng)
    present = columns.counts > 0
    expected = _render_canvas(settings, columns.yx[present] + margin,
                              columns.counts[present])[margin:margin + h, margin:margin + w] + _background(settings)

    defect = columns.classes > 0
    where = columns.yx[defect]
    labels = paint(settings.shape, settings.label_radius / settings.pixel_size, where, columns.classes[defect])
    inside = np.all((where >= -0.5) & (where < np.array([h, w]) - 0.5), axis=1)
    table = np.concatenate([where[inside], columns.classes[defect][inside, None]], axis=1).astype(np.float32)

    if noise:
        image = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
        if settings.read_noise > 0:
            image += rng.normal(0.0, settings.read_noise, image.shape).astype(np.float32)
    else:
        image = expected.astype(np.float32)
    return Sample(image, labels, table)


def paint(shape: tuple[int, int], radius: float, yx: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Label map of ``shape`` with a disk of ``radius`` pixels around each defect (pixel centres within it)."""
    h, w = shape
    labels = np.zeros(shape, dtype=np.uint8)
    reach = math.ceil(radius) + 1
    offsets = np.arange(-reach, reach + 1)
    centre = np.rint(yx).astype(np.int64)
    rows = centre[:, 0, None, None] + offsets[None, :, None]
    cols = centre[:, 1, None, None] + offsets[None, None, :]
    inside = ((rows - yx[:, 0, None, None]) ** 2 + (cols - yx[:, 1, None, None]) ** 2 <= radius * radius) \
        & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    which = np.broadcast_to(classes[:, None, None], inside.shape)
    labels[np.broadcast_to(rows, inside.shape)[inside], np.broadcast_to(cols, inside.shape)[inside]] = which[inside]
    return labels


# ------------------------------------------------------------------------------------------ randomization

RANDOMIZED_INTEGERS = ("image_size", "image_width")


def check_ranges(settings: StemSettings, ranges: dict, where: str = "task.options.randomize") -> dict:
    """Validated ranges of domain randomization (see `randomization.check_ranges`; integers for the image size),
    checked also at the corners where a probe fits the pixel size and the background its slopes."""
    numeric = [f.name for f in dataclasses.fields(StemSettings) if f.name not in ("material", "dopant")]
    out = randomization.check_ranges(settings, ranges, where, numeric, RANDOMIZED_INTEGERS)
    lo = {k: r[0] for k, r in out.items()}
    hi = {k: r[1] for k, r in out.items()}
    widest = {k: max(abs(r[0]), abs(r[1])) for k, r in out.items()}
    corners = [{k: v for k, v in {"pixel_size": hi.get("pixel_size"), "probe_fwhm": lo.get("probe_fwhm"),
                                  "label_radius": lo.get("label_radius"), "background": lo.get("background"),
                                  "background_slope_y": widest.get("background_slope_y"),
                                  "background_slope_x": widest.get("background_slope_x")}.items() if v is not None},
               {k: v for k, v in {"probe_fwhm": hi.get("probe_fwhm"), "tail_fwhm": lo.get("tail_fwhm")}.items()
                if v is not None}]
    randomization.reachable(settings, corners, where)
    return out


def randomized(settings: StemSettings, ranges: dict, rng: np.random.Generator) -> StemSettings:
    """``settings`` with each field of ``ranges`` (as check_ranges returns them) drawn from its range, in the
    order of the field names: one image's microscope, contrast and scan."""
    return randomization.randomized(settings, ranges, rng, RANDOMIZED_INTEGERS)
