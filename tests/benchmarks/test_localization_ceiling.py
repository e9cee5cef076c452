"""benchmarks/localization_ceiling.py: the windowed linear model is the exact least-squares fit over every voxel."""
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from localization_ceiling import WindowLinear  # noqa: E402


def test_window_linear_is_the_least_squares_fit_over_every_voxel_of_every_volume():
    rng = np.random.default_rng(0)
    sides, window = (6, 7, 8), 3  # unequal sides: no axis may be mixed up
    volumes = (rng.random((4, *sides)) < 0.5).astype(float)
    strains = rng.standard_normal(volumes.shape)
    fitted = WindowLinear(window).fit(volumes, strains, ridge=0.0)

    h = window // 2
    offsets = list(itertools.product(range(-h, h + 1), repeat=3))
    rows = [[2 * v[tuple((np.add(s, r)) % sides)] - 1 for r in offsets] + [1.0]
            for v in volumes for s in itertools.product(*map(range, sides))]
    design = np.asarray(rows)
    coefficients = np.linalg.lstsq(design, strains.ravel(), rcond=None)[0]
    np.testing.assert_allclose(fitted.predict(volumes).ravel(), design @ coefficients, atol=1e-10)
