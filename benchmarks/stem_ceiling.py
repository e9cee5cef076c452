#!/usr/bin/env python
"""How much defect F1 the STEM images leave to win: an ideal observer against Fourier filtering, per imaging setting.

The ideal observer knows where every column of an image is and what every other column holds; it only has to
tell, from the noisy counts, what each column is. For each column it takes the weighted least-squares amplitude
of the column's own probe image (weights 1 / expected variance: Poisson counts plus read noise) in the image less
every other column's expected counts, and classifies it by two thresholds per sublattice (deepest class below
the first: double vacancy, metal vacancy; the other defect below the second: single vacancy, dopant), chosen on
the same images for the best F1: a ceiling no detector of these images can pass by more than chance. Fourier
filtering (the task's baseline) is tuned on other images, as the task tunes it, and scored on the same ones.

The settings are the config's simulator settings with the dose and the scan-row jitter varied over a grid.

On multislice images (`--multislice CONFIG`: the config's validation and test microscopes, steady and jittered,
the sets benchmarks/stem_transfer.py scores) there is no column template to subtract exactly, so the observer
knows every column's position (and each scan row's jitter) and fits all column amplitudes of an image at once: a
periodic Gaussian per column, its width the one of a grid that fits the image best, plus a constant. Its thresholds
are again chosen on the same images, for the best F1. Fourier filtering is tuned as in benchmarks/stem_transfer.py
at its best (on the task's first 40 fast-simulator training images). One thread. The script reports; it does not
assert.

    python benchmarks/stem_ceiling.py                 # 30 images per setting, about 2 min
    python benchmarks/stem_ceiling.py --quick         # 8 images per setting
    python benchmarks/stem_ceiling.py --multislice configs/stem_defects-transfer.yaml   # about 1 min
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)

PATCH = 8  # pixels each side of a column's centre in its least-squares fit


def column_amplitudes(settings, image, columns):
    """Least-squares amplitude (counts) of every column whose patch lies inside the image; (amplitudes, index)."""
    import numpy as np

    from menndl_py.physics import stem_sim

    h = settings.image_size
    small = dataclasses.replace(settings, image_size=2 * PATCH + 1)
    floor = settings.dose * settings.pixel_size ** 2 * settings.background
    expected = stem_sim.render(settings, columns.yx, columns.counts)
    variance = np.maximum(expected, 1.0) + settings.read_noise ** 2
    centre = np.rint(columns.yx).astype(np.int64)
    inside = np.flatnonzero(np.all((centre >= PATCH) & (centre < h - PATCH), axis=1))
    amplitudes = np.empty(len(inside))
    for n, k in enumerate(inside):
        template = stem_sim.render(small, columns.yx[k] - centre[k] + PATCH, [1.0]) - floor
        window = (slice(centre[k, 0] - PATCH, centre[k, 0] + PATCH + 1),
                  slice(centre[k, 1] - PATCH, centre[k, 1] + PATCH + 1))
        weights = template / variance[window]
        others = expected[window] - columns.counts[k] * template
        amplitudes[n] = (weights * (image[window] - others)).sum() / (weights * template).sum()
    return amplitudes, inside


def best_two_thresholds(amplitude, classes, deep: int, shallow: int, scale: float):
    """Best mean F1 of (deep, shallow) over thresholds t1 < t2 on a grid: a < t1 is `deep`, t1 <= a < t2
    `shallow`; returns (F1 of deep, F1 of shallow)."""
    import numpy as np

    grid = np.linspace(-0.5, 1.2, 171) * scale
    below = {k: np.searchsorted(np.sort(amplitude[classes == k]), grid) for k in (deep, shallow)}
    every = np.searchsorted(np.sort(amplitude), grid)
    n_deep, n_shallow = (classes == deep).sum(), (classes == shallow).sum()
    tp1 = below[deep][:, None]
    f1_deep = 2 * tp1 / np.maximum(every[:, None] + n_deep, 1)
    tp2 = below[shallow][None, :] - below[shallow][:, None]
    called = every[None, :] - every[:, None]
    f1_shallow = np.where(called >= 0, 2 * tp2 / np.maximum(called + n_shallow, 1), 0.0)
    total = np.broadcast_to(f1_deep, f1_shallow.shape) + f1_shallow
    i, j = np.unravel_index(np.argmax(total), total.shape)
    return float(f1_deep[i, 0]), float(f1_shallow[i, j])


def ideal_observer(settings, n: int, seed: int) -> list[float]:
    """Ceiling F1 per defect class (single vacancy, double vacancy, dopant, metal vacancy) on n images."""
    import numpy as np

    from menndl_py.physics import stem_sim

    amplitudes, classes, metal = [], [], []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        state = rng.bit_generator.state
        image = stem_sim.simulate(settings, rng).image
        rng.bit_generator.state = state  # the same draws again: the columns of that image
        columns = stem_sim.specimen(settings, rng)
        a, inside = column_amplitudes(settings, image.astype(np.float64), columns)
        amplitudes.append(a), classes.append(columns.classes[inside]), metal.append(columns.is_metal[inside])
    a, c, m = np.concatenate(amplitudes), np.concatenate(classes), np.concatenate(metal)
    metal_element, chalcogen, _ = stem_sim.MATERIALS[settings.material]
    mv, dopant = best_two_thresholds(a[m], c[m], 4, 3, stem_sim.column_intensity(settings, [metal_element]))
    dv, sv = best_two_thresholds(a[~m], c[~m], 2, 1, stem_sim.column_intensity(settings, [chalcogen] * 2))
    return [sv, dv, dopant, mv]


def fourier(settings, n: int, seed: int) -> list[float]:
    """Fourier filtering's F1 per defect class on the same n images, tuned on n others."""
    import numpy as np

    from menndl_py.physics import stem_analysis, stem_sim
    from menndl_py.tasks.stem.task import true_defects

    def images(s):
        samples = [stem_sim.simulate(settings, np.random.default_rng((s, i))) for i in range(n)]
        return [x.image for x in samples], [true_defects(x.labels) for x in samples]

    radius = 1.0 / settings.pixel_size
    method = stem_analysis.FourierFilterBaseline(disk_radius=settings.label_radius / settings.pixel_size)
    method.fit(*images(seed + 1), radius)
    test, truth = images(seed)
    counts = sum(stem_analysis.match_counts(method.predict(x), t, radius, 5) for x, t in zip(test, truth))
    f1 = stem_analysis.f1_scores(counts)
    return [f1[f"f1_{c}"] for c in range(1, 5)]


def multislice_columns(settings, microscope, split: str, index: int, seed: int):
    """(positions (K, 2) y, x in pixels before the jitter, x shift of each scan row in pixels, classes (K,),
    is_metal (K,)) of multislice image `index` of `split`: the draws `multislice.simulate` made, again."""
    import numpy as np

    from menndl_py.physics import multislice
    from menndl_py.tasks.making import item_rng

    rng = item_rng(seed, split, index)
    _, sites, classes = multislice.structure(settings, microscope, rng)
    shape = multislice.image_shape(settings, microscope)
    pixel = np.array(multislice.cell_extent(settings, microscope)) / shape
    rng.integers(2**31)  # the abTEM seed
    shift = settings.jitter / pixel[1] * rng.standard_normal(shape[0])
    is_metal = np.arange(len(sites)) < 2 * microscope.cells_x * microscope.cells_y
    return sites / pixel, shift, classes, is_metal


def column_fit(image, yx, shift):
    """Least-squares amplitudes of periodic Gaussian columns at `yx` (rows shifted by `shift`) plus a constant,
    at the Gaussian width (pixels) of a grid that leaves the smallest residual."""
    import numpy as np

    h, w = image.shape
    r, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    dy = (r[None] - yx[:, 0, None, None] + h / 2) % h - h / 2
    dx = (x[None] - shift[None, :, None] - yx[:, 1, None, None] + w / 2) % w - w / 2
    d2 = (dy ** 2 + dx ** 2).reshape(len(yx), -1)
    y, best = image.ravel(), None
    for sigma in np.arange(0.6, 3.01, 0.2):
        design = np.concatenate([np.exp(-d2 / (2 * sigma ** 2)), np.ones((1, h * w))])  # (K + 1, pixels)
        fit = np.linalg.solve(design @ design.T, design @ y)  # the normal equations
        residual = np.sum((y - fit @ design) ** 2)
        if best is None or residual < best[0]:
            best = residual, fit[:-1]
    return best[1]


def multislice_observer(images, labels, split: str, settings, microscope, seed: int) -> list[float]:
    """The column-fit observer's F1 per defect class on these multislice images (their columns drawn again and
    checked against the label maps)."""
    import numpy as np

    amplitudes, classes, metal = [], [], []
    for i, (image, label) in enumerate(zip(images, labels)):
        yx, shift, c, m = multislice_columns(settings, microscope, split, i, seed)
        row = np.rint(yx[:, 0]).astype(int) % len(shift)
        at = np.rint(yx + np.stack([np.zeros(len(yx)), shift[row]], 1)).astype(int) % label.shape
        if not np.array_equal(label[at[:, 0], at[:, 1]][c > 0], c[c > 0]):
            raise SystemExit(f"{split} image {i}: the columns drawn again do not match its labels")
        amplitudes.append(column_fit(image.astype(np.float64), yx, shift)), classes.append(c), metal.append(m)
    a, c, m = np.concatenate(amplitudes), np.concatenate(classes), np.concatenate(metal)
    mv, dopant = best_two_thresholds(a[m], c[m], 4, 3, np.median(a[m & (c == 0)]))
    dv, sv = best_two_thresholds(a[~m], c[~m], 2, 1, np.median(a[~m & (c == 0)]))
    return [sv, dv, dopant, mv]


def multislice_rows(config: str, n: int) -> list[list]:
    """Table rows of the observer and of Fourier filtering on the first n images of each multislice set."""
    import numpy as np
    from stem_transfer import fourier_on_fast_images, image_sets

    from menndl_py import config as config_module
    from menndl_py.engine.transport.share import Solo
    from menndl_py.physics import stem_analysis
    from menndl_py.tasks import make_task
    from menndl_py.tasks.stem.task import true_defects

    cfg = config_module.load(config)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    fourier = fourier_on_fast_images(task, task.settings.label_radius / task.settings.pixel_size)
    rows = []
    for name, (images, labels, source) in image_sets(task, task.settings.jitter or 0.3, 0, Solo()).items():
        if not source:
            continue
        split, settings, microscope = source
        images, labels = images[:n], labels[:n]
        ideal = multislice_observer(images, labels, split, settings, microscope, task.options.seed)
        counts = sum(stem_analysis.match_counts(fourier.predict(x.astype(np.float64)), true_defects(t),
                                                task.radius_px, 5) for x, t in zip(images, labels))
        f1 = stem_analysis.f1_scores(counts)
        classic = [f1[f"f1_{c}"] for c in range(1, 5)]
        rows.append([f"{name} ({len(images)})", "column-fit observer", *(f"{v:.2f}" for v in ideal),
                     f"{sum(ideal) / 4:.3f}", f"{(sum(ideal) - sum(classic)) / 4:+.3f}"])
        rows.append(["", "Fourier filtering", *(f"{v:.2f}" for v in classic), f"{sum(classic) / 4:.3f}", ""])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "stem_defects.yaml"))
    p.add_argument("--quick", action="store_true", help="8 images per setting")
    p.add_argument("--images", type=int, help="images per setting (default 30)")
    p.add_argument("--doses", type=float, nargs="+", default=[2000.0, 5000.0], help="electrons per Å^2")
    p.add_argument("--jitters", type=float, nargs="+", default=[0.1, 0.3], help="Å")
    p.add_argument("--multislice", metavar="CONFIG", help="the observer on CONFIG's multislice validation and test "
                                                          "images instead (made first where missing)")
    args = p.parse_args(argv)
    n = args.images or (8 if args.quick else 30)
    if args.multislice:
        print(f"stem_ceiling: {args.multislice} multislice sets, at most {n} images each, one thread\n"
              f"  {code_version()}")
        start = time.perf_counter()
        print(table(["images", "detector", "single vac.", "double vac.", "dopant", "metal vac.", "defect F1",
                     "headroom"], multislice_rows(args.multislice, args.images or (8 if args.quick else 36)),
                    title="\nobject-level F1 per defect class (headroom: observer − Fourier)"))
        print(f"\n{time.perf_counter() - start:.0f} s")
        return 0

    from menndl_py import config
    from menndl_py.tasks import make_task

    cfg = config.load(args.config)
    base = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir).settings
    print(f"stem_ceiling: {args.config} simulator settings, {n} images per setting, one thread\n  {code_version()}")
    start, rows = time.perf_counter(), []
    for dose in args.doses:
        for jitter in args.jitters:
            settings = dataclasses.replace(base, dose=dose, jitter=jitter)
            ideal, classic = ideal_observer(settings, n, 11), fourier(settings, n, 11)
            rows.append([f"{dose:g} e/Å², jitter {jitter:g} Å", "ideal observer", *(f"{v:.2f}" for v in ideal),
                         f"{sum(ideal) / 4:.3f}", f"{(sum(ideal) - sum(classic)) / 4:+.3f}"])
            rows.append(["", "Fourier filtering", *(f"{v:.2f}" for v in classic), f"{sum(classic) / 4:.3f}", ""])
    print(table(["setting", "detector", "single vac.", "double vac.", "dopant", "metal vac.", "defect F1",
                 "headroom"], rows, title="\nobject-level F1 per defect class (headroom: ideal − Fourier)"))
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
