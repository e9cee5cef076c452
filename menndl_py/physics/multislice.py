"""HAADF-STEM images of the fast simulator's specimens by multislice (abTEM): physics-grade images with exact labels.

The specimen is the monolayer `stem_sim` images (WSe2, WS2 or MoS2; chalcogen single and double vacancies, metal
vacancies and dopants drawn per site from the same densities), built in 3-D as a periodic orthorhombic supercell
of `cells_x` × `cells_y` cells (a × a√3) with the two chalcogen atoms of a column above and below the metal plane.
abTEM propagates the probe through its potential (PRISM or plain multislice; optionally frozen phonons) for the
microscope of `Microscope` (voltage, convergence semi-angle, annular detector, defocus, C_s), so channelling,
cross-talk and probe tails are in the image. The image (the share of the beam on the detector at each probe
position, scanned at the task's pixel size or finer and Fourier-resampled to it: the cell is periodic) is blurred
by the source size, shifted row by row by the scan jitter, and brought to counts as `stem_sim` does: dose × pixel
area × (share + background), Poisson, plus read noise. Labels are painted at the defect sites, after the same
jitter. There is no rotation, strain or drift (the cell must stay periodic).

`tasks.stem.multislice_data` makes data sets of these images over the ranks of a job.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.signal

from menndl_py.errors import UserError
from menndl_py.physics import stem_sim
from menndl_py.physics.stem_sim import MATERIALS, Sample, StemSettings

# material -> distance between the two chalcogen atoms of a column (Å, bulk crystal structures)
CHALCOGEN_SEPARATION = {"WSe2": 3.34, "WS2": 3.14, "MoS2": 3.17}
VACUUM = 5.0  # Å of vacuum above and below the layer


@dataclass(frozen=True)
class Microscope:
    """A microscope and the multislice calculation of its images (lengths in Å, angles in mrad).

    Defaults: an aberration-corrected 80 kV instrument with a 25 mrad probe and a 60-200 mrad HAADF detector,
    in focus, a 0.5 Å source; PRISM at 0.05 Å potential sampling, no frozen phonons; 5 × 3 cells (16 × 17 Å of
    WSe2)."""

    voltage: float = 80.0               # kV
    convergence: float = 25.0           # mrad, probe semi-angle
    detector_inner: float = 60.0        # mrad
    detector_outer: float = 200.0       # mrad
    defocus: float = 0.0                # Å (positive: underfocus)
    cs: float = 0.0                     # Å, spherical aberration (C_s = C30)
    source_size: float = 0.5            # Å, FWHM of the Gaussian blur of the effective source
    sampling: float = 0.05              # Å, potential and wave sampling
    slice_thickness: float = 1.0        # Å
    method: str = "prism"               # "prism" or "multislice"
    prism_interpolation: int = 2        # PRISM's interpolation factor (1: exact multislice)
    frozen_phonons: int = 0             # thermal configurations averaged; 0: atoms at rest
    phonon_sigma: float = 0.08          # Å, rms displacement of each atom per axis
    cells_x: int = 5                    # orthorhombic cells (a wide) across
    cells_y: int = 3                    # orthorhombic cells (a√3 high) down
    size_multiple: int = 1              # image sides rounded to a multiple of this (for networks that halve them)

    def __post_init__(self):
        where = "multislice"
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "method":
                if value not in ("prism", "multislice"):
                    raise UserError(f"{where}.method: must be 'prism' or 'multislice', got {value!r}")
            elif f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"{where}.{f.name}: must be an integer, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{where}.{f.name}: must be a finite number, got {value!r}")
        rules = {"voltage": (self.voltage >= 10, ">= 10"), "convergence": (self.convergence > 0, "> 0"),
                 "detector_inner": (self.detector_inner >= 0, ">= 0"),
                 "detector_outer": (self.detector_outer > self.detector_inner, "> detector_inner"),
                 "source_size": (self.source_size >= 0, ">= 0"), "cs": (True, ""),
                 "sampling": (0.005 <= self.sampling <= 0.2, "in [0.005, 0.2]"),
                 "slice_thickness": (self.slice_thickness > 0, "> 0"),
                 "prism_interpolation": (1 <= self.prism_interpolation <= 16, "in [1, 16]"),
                 "frozen_phonons": (0 <= self.frozen_phonons <= 100, "in [0, 100]"),
                 "phonon_sigma": (self.phonon_sigma >= 0, ">= 0"),
                 "cells_x": (1 <= self.cells_x <= 50, "in [1, 50]"), "cells_y": (1 <= self.cells_y <= 50, "in [1, 50]"),
                 "size_multiple": (1 <= self.size_multiple <= 64, "in [1, 64]")}
        for name, (ok, rule) in rules.items():
            if not ok:
                raise UserError(f"{where}.{name}: must be {rule}, got {getattr(self, name)!r}")
        if self.detector_outer > 1000 * _max_angle(self):
            raise UserError(f"multislice.detector_outer: {self.detector_outer:g} mrad is beyond the "
                            f"{1000 * _max_angle(self):.0f} mrad the sampling reaches; make sampling finer")


def _wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å."""
    e = voltage_kv * 1e3
    return 12.2643 / math.sqrt(e * (1 + 0.97845e-6 * e))


def _max_angle(microscope: Microscope) -> float:
    """The largest scattering angle (rad) the wave's sampling represents, after abTEM's 2/3 antialiasing."""
    return _wavelength(microscope.voltage) * 2 / 3 / (2 * microscope.sampling)


def cell_extent(settings: StemSettings, microscope: Microscope) -> tuple[float, float]:
    """(height, width) of the periodic supercell in Å."""
    a = MATERIALS[settings.material][2]
    return microscope.cells_y * a * math.sqrt(3), microscope.cells_x * a


def image_shape(settings: StemSettings, microscope: Microscope) -> tuple[int, int]:
    """(height, width) in pixels: the supercell at the pixel size nearest settings.pixel_size that divides it
    into a multiple of size_multiple pixels (the pixels are then slightly rectangular: choose cells to keep them
    within a few percent)."""
    m = microscope.size_multiple
    return tuple(m * max(1, round(e / settings.pixel_size / m)) for e in cell_extent(settings, microscope))


def structure(settings: StemSettings, microscope: Microscope, rng: np.random.Generator):
    """(ase.Atoms of the supercell, column positions (K, 2) y, x in Å, their classes (K,)): the lattice shifted
    by a random offset, each site's class drawn from the densities as `stem_sim.specimen` draws them, a single
    vacancy's missing atom above or below at random."""
    from ase import Atoms

    metal, chalcogen, a = MATERIALS[settings.material]
    h, w = cell_extent(settings, microscope)
    ys, xs = np.meshgrid(np.arange(microscope.cells_y) * a * math.sqrt(3), np.arange(microscope.cells_x) * a,
                         indexing="ij")
    corner = np.stack([ys.ravel(), xs.ravel()], axis=1)
    metals = np.concatenate([corner, corner + [a * math.sqrt(3) / 2, a / 2]])
    chalcogens = np.concatenate([corner + [a * math.sqrt(3) / 6, a / 2], corner + [a * 2 * math.sqrt(3) / 3, 0]])
    sites = np.concatenate([metals, chalcogens]) + rng.random(2) * [h, w]
    sites %= [h, w]
    is_metal = np.arange(len(sites)) < len(metals)
    draw, upper = rng.random(len(sites)), rng.random(len(sites)) < 0.5
    chalcogen_p = np.cumsum((settings.chalcogen_vacancy_density, settings.double_vacancy_density))
    metal_p = np.cumsum((settings.dopant_density, settings.metal_vacancy_density))
    level = (draw[:, None] < np.where(is_metal[:, None], metal_p, chalcogen_p)).sum(axis=1)
    classes = np.array([[0, 4, 3], [0, 2, 1]])[np.where(is_metal, 0, 1), level]

    half = CHALCOGEN_SEPARATION[settings.material] / 2
    z0 = VACUUM + half
    symbols, positions = [], []
    for (y, x), m, c, up in zip(sites, is_metal, classes, upper):
        if m and c != 4:
            symbols.append(settings.dopant_element if c == 3 else metal)
            positions.append((x, y, z0))
        elif not m:
            for z, top in ((z0 - half, True), (z0 + half, False)):
                if c == 0 or (c == 1 and top != up):
                    symbols.append(chalcogen)
                    positions.append((x, y, z))
    atoms = Atoms(symbols, positions=positions, cell=[w, h, 2 * z0], pbc=True)
    return atoms, sites, classes


def haadf(atoms, microscope: Microscope, shape: tuple[int, int], seed: int) -> np.ndarray:
    """The share of the beam on the detector at each probe position of a grid of ``shape`` (y, x) over the cell,
    float64 (H, W), one thread."""
    import abtem

    abtem.config.set({"device": "cpu", "fft": "fftw", "fftw.threads": 1, "fftw.planning_effort": "FFTW_ESTIMATE",
                      "dask.lazy": False})
    # wave grid points a multiple of PRISM's interpolation factor, so the probe's normalisation is exact
    m = microscope.prism_interpolation if microscope.method == "prism" else 1
    gpts = tuple(int(m * math.ceil(e / microscope.sampling / m)) for e in atoms.cell.lengths()[:2])
    if microscope.frozen_phonons:
        atoms = abtem.FrozenPhonons(atoms, num_configs=microscope.frozen_phonons, sigmas=microscope.phonon_sigma,
                                    seed=seed)
    potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=microscope.slice_thickness,
                                projection="infinite", parametrization="lobato")
    energy = microscope.voltage * 1e3
    detector = abtem.AnnularDetector(inner=microscope.detector_inner, outer=microscope.detector_outer)
    scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=(shape[1], shape[0]), endpoint=False,
                          potential=potential)
    aberrations = {"defocus": microscope.defocus, "Cs": microscope.cs}
    if microscope.method == "prism":
        s_matrix = abtem.SMatrix(potential=potential, energy=energy, semiangle_cutoff=microscope.convergence,
                                 interpolation=microscope.prism_interpolation)
        ctf = abtem.CTF(semiangle_cutoff=microscope.convergence, energy=energy, **aberrations)
        measured = s_matrix.scan(scan=scan, detectors=detector, ctf=ctf)
    else:
        probe = abtem.Probe(semiangle_cutoff=microscope.convergence, energy=energy, **aberrations)
        measured = probe.scan(potential, scan=scan, detectors=detector)
    if hasattr(measured, "compute"):
        measured = measured.compute(scheduler="synchronous", progress_bar=False)
    return np.asarray(measured.array, dtype=np.float64).T   # abTEM's axes are (x, y)


def simulate(settings: StemSettings, microscope: Microscope, rng: np.random.Generator, *,
             noise: bool = True) -> Sample:
    """One multislice image at the task's dose and noise, its label map and its defect table (as stem_sim.simulate
    returns them; pixel size: `image_shape`'s)."""
    atoms, sites, classes = structure(settings, microscope, rng)
    shape = image_shape(settings, microscope)
    extent = np.array(cell_extent(settings, microscope))
    pixel = extent / shape
    nyquist = _wavelength(microscope.voltage) / (4 * microscope.convergence * 1e-3)
    scanned = tuple(max(n, math.ceil(e / nyquist)) for n, e in zip(shape, extent))
    seed = int(rng.integers(2**31))
    share = haadf(atoms, microscope, scanned, seed)
    if scanned != shape:
        share = scipy.signal.resample(scipy.signal.resample(share, shape[0], axis=0), shape[1], axis=1)
    if microscope.source_size > 0:
        sigma = microscope.source_size / math.sqrt(8 * math.log(2)) / pixel
        share = scipy.ndimage.gaussian_filter(share, sigma, mode="wrap")

    yx = sites / pixel
    shift = settings.jitter / pixel[1] * rng.standard_normal(shape[0])   # x offset of each scan row, pixels
    if settings.jitter > 0:
        k = np.fft.rfftfreq(shape[1])
        share = np.fft.irfft(np.fft.rfft(share, axis=1) * np.exp(-2j * np.pi * k[None, :] * shift[:, None]),
                             n=shape[1], axis=1)
        yx[:, 1] += shift[np.rint(yx[:, 0]).astype(np.int64) % shape[0]]
    yx = (yx + 0.5) % shape - 0.5
    expected = settings.dose * pixel.prod() * (np.maximum(share, 0) + settings.background)

    defect = classes > 0
    where, kinds = yx[defect], classes[defect]
    copies = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]) * shape
    radius = settings.label_radius / math.sqrt(pixel.prod())
    labels = stem_sim.paint(shape, radius, (where[None] + copies[:, None]).reshape(-1, 2), np.tile(kinds, 9))
    table = np.concatenate([where, kinds[:, None]], axis=1).astype(np.float32)
    if noise:
        image = rng.poisson(expected).astype(np.float32)
        if settings.read_noise > 0:
            image += rng.normal(0.0, settings.read_noise, shape).astype(np.float32)
    else:
        image = expected.astype(np.float32)
    return Sample(image, labels, table)


def describe(microscope: Microscope) -> str:
    """One line naming the simulator and the microscope."""
    m = microscope
    phonons = f", {m.frozen_phonons} frozen phonons" if m.frozen_phonons else ""
    method = f"PRISM (interpolation {m.prism_interpolation})" if m.method == "prism" else "multislice"
    return (f"abTEM {method}{phonons}: {m.voltage:g} kV, {m.convergence:g} mrad, HAADF {m.detector_inner:g}-"
            f"{m.detector_outer:g} mrad, defocus {m.defocus:g} Å, Cs {m.cs:g} Å, source {m.source_size:g} Å, "
            f"{m.cells_x}×{m.cells_y} cells")
