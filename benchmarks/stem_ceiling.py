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
One thread. The script reports; it does not assert.

    python benchmarks/stem_ceiling.py                 # 30 images per setting, about 2 min
    python benchmarks/stem_ceiling.py --quick         # 8 images per setting
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "stem_defects.yaml"))
    p.add_argument("--quick", action="store_true", help="8 images per setting")
    p.add_argument("--images", type=int, help="images per setting (default 30)")
    p.add_argument("--doses", type=float, nargs="+", default=[2000.0, 5000.0], help="electrons per Å^2")
    p.add_argument("--jitters", type=float, nargs="+", default=[0.1, 0.3], help="Å")
    args = p.parse_args(argv)
    n = args.images or (8 if args.quick else 30)

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
