"""Domain randomization of the fast STEM simulator: draws reproducible per image, labels where the image shows the
defects whatever the drift, pixel size and image shape, ranges checked."""
import copy

import numpy as np
import pytest

from menndl_py.errors import UserError
from menndl_py.physics import stem_sim
from menndl_py.physics.stem_sim import StemSettings, check_ranges, randomized, simulate
from menndl_py.tasks.making import item_rng

RANGES = {"z_exponent": [1.3, 2.0], "chalcogen_contrast": [0.8, 2.2], "probe_fwhm": [0.8, 1.2],
          "pixel_size": [0.15, 0.4], "dose": [1e4, 1e6, "log"], "drift": [0.5, 1.5], "jitter": [0.0, 0.3],
          "image_size": [64, 160], "image_width": [64, 160]}


def test_each_image_draws_its_own_settings_reproducibly():
    ranges = check_ranges(StemSettings(), RANGES)
    first = [randomized(StemSettings(), ranges, item_rng(3, "train", i)) for i in range(20)]
    again = [randomized(StemSettings(), ranges, item_rng(3, "train", i)) for i in range(20)]
    assert first == again
    for name, (low, high, _) in ranges.items():
        values = [getattr(s, name) for s in first]
        assert all(low <= v <= high for v in values) and len(set(values)) > 10, name
    assert all(isinstance(s.image_size, int) and isinstance(s.image_width, int) for s in first)
    a, b = (simulate(first[0], item_rng(3, "train", 0)) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == a.labels.shape == first[0].shape


@pytest.mark.parametrize("index", range(4))
def test_labels_follow_drift_pixel_size_and_shape(index):
    """A vacancy's label sits on a dark spot of the noiseless image, where an intact column of its sublattice
    would be bright, under a large drift, any pixel size and a non-square image."""
    base = StemSettings(tail_weight=0.0, background=0.0, double_vacancy_density=0.05, metal_vacancy_density=0.05)
    rng = item_rng(11, "train", index)
    settings = randomized(base, check_ranges(base, RANGES), rng)
    columns = stem_sim.specimen(settings, copy.deepcopy(rng))
    sample = simulate(settings, rng, noise=False)
    h, w = settings.shape

    def value(yx):
        y, x = np.rint(yx).astype(int)
        return sample.image[y, x]

    inside = np.all((columns.yx > 3) & (columns.yx < np.array([h, w]) - 4), axis=1)
    checked = 0
    for kind, metal in ((2, False), (4, True)):
        intact = [value(p) for p in columns.yx[inside & (columns.classes == 0) & (columns.is_metal == metal)]]
        for y, x, c in sample.defects:
            if c == kind and 3 < y < h - 4 and 3 < x < w - 4:
                assert sample.labels[int(round(y)), int(round(x))] == kind
                assert value(np.array([y, x])) < 0.5 * np.median(intact), (kind, settings)
                checked += 1
    assert checked > 0


def test_contrast_probe_tail_and_background_gradient():
    still = dict(max_rotation=0.0, max_strain=0.0, drift=0.0, jitter=0.0, chalcogen_vacancy_density=0.0,
                 double_vacancy_density=0.0, dopant_density=0.0, metal_vacancy_density=0.0, read_noise=0.0)
    plain = simulate(StemSettings(image_size=64, **still), item_rng(0, "test", 0), noise=False).image
    bright = simulate(StemSettings(image_size=64, chalcogen_contrast=2.0, **still), item_rng(0, "test", 0),
                      noise=False).image
    background = 64 * 64 * StemSettings().dose * StemSettings().pixel_size ** 2 * StemSettings().background
    z = (34 / 74) ** 1.7   # Se2 columns of WSe2 twice this, W columns 1, one of each per cell
    assert (bright.sum() - background) / (plain.sum() - background) == pytest.approx((1 + 4 * z) / (1 + 2 * z),
                                                                                      rel=0.03)
    sloped = StemSettings(image_size=64, image_width=96, background=0.01, background_slope_y=0.02, **still)
    empty = stem_sim.render(sloped, np.zeros((0, 2)), np.zeros(0))
    assert empty.shape == (64, 96)
    assert empty[-1, 0] - empty[0, 0] == pytest.approx(sloped.dose * sloped.pixel_size ** 2 * 0.02, rel=1e-4)
    one = StemSettings(image_size=64, tail_weight=0.3, tail_fwhm=3.0, background=0.0)
    spot = stem_sim.render(one, [[32, 32]], [1000.0])
    assert spot.sum() == pytest.approx(1000.0, rel=0.02)   # the tail's wide Gaussian keeps its counts
    assert spot[32, 32 + 10] > 10 * stem_sim.render(StemSettings(image_size=64, tail_weight=0.0, background=0.0),
                                                    [[32, 32]], [1000.0])[32, 32 + 10]


@pytest.mark.parametrize("ranges, message", [
    ({"colour": [0, 1]}, "task.options.randomize.colour: not a randomizable simulator field"),
    ({"dose": [2, 1]}, "task.options.randomize.dose: must be [low, high]"),
    ({"dose": [0, 1, "log"]}, "task.options.randomize.dose: must be [low, high]"),
    ({"image_size": [64.0, 128]}, "task.options.randomize.image_size: must be [low, high] (integers"),
    ({"pixel_size": [0.2, 0.6]}, "task.options.randomize: the ranges reach settings that are not valid"),
    ("dose", "task.options.randomize: must be a mapping"),
])
def test_bad_ranges_are_one_line_errors(ranges, message):
    with pytest.raises(UserError) as info:
        check_ranges(StemSettings(), ranges)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
