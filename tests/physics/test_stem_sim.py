import math
from dataclasses import replace

import numpy as np
import pytest

from menndl_py.errors import UserError
from menndl_py.physics import stem_sim
from menndl_py.physics.stem_sim import ATOMIC_NUMBER, MATERIALS, StemSettings, column_intensity, render, simulate

NO_DEFECTS = dict(chalcogen_vacancy_density=0.0, double_vacancy_density=0.0, dopant_density=0.0,
                  metal_vacancy_density=0.0)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------- physics

@pytest.mark.parametrize("tail_weight", [0.0, 0.2])
def test_a_single_column_integrates_to_its_sum_of_z_to_the_n(tail_weight):
    s = StemSettings(image_size=128, tail_weight=tail_weight)
    background = s.dose * s.pixel_size ** 2 * s.background
    totals = {}
    for element in ("S", "Se", "Mo", "Te", "W"):
        image = render(s, [(63.3, 64.7)], [column_intensity(s, [element])])
        totals[element] = float((image.astype(np.float64) - background).sum())
    # the Airy rings reach past a 25 Å field by a few tenths of a percent of the column
    assert totals["W"] == pytest.approx(s.dose * s.atom_cross_section, rel=1e-4 if tail_weight == 0 else 1e-2)
    assert totals["W"] / totals["Se"] == pytest.approx((74 / 34) ** 1.7, rel=1e-4)
    z = np.log([ATOMIC_NUMBER[e] for e in totals])
    n = np.polyfit(z, np.log(list(totals.values())), 1)[0]
    assert n == pytest.approx(1.7, abs=1e-4)


def test_the_probe_has_the_requested_fwhm_at_any_sub_pixel_position():
    s = StemSettings(image_size=64, tail_weight=0.0, background=0.0)
    for y, x in [(31.0, 32.0), (31.5, 32.25), (30.81, 33.47)]:
        image = render(s, [(y, x)], [1.0]).astype(np.float64)
        rows, cols = np.indices(image.shape)
        assert (image * rows).sum() / image.sum() == pytest.approx(y, abs=1e-3)
        assert (image * cols).sum() / image.sum() == pytest.approx(x, abs=1e-3)
        variance = (image * (cols - x) ** 2).sum() / image.sum()
        fwhm = math.sqrt(8 * math.log(2) * variance) * s.pixel_size
        assert fwhm == pytest.approx(s.probe_fwhm, rel=1e-3)


@pytest.mark.parametrize("material", list(MATERIALS))
def test_the_lattice_has_the_materials_lattice_constant(material):
    s = StemSettings(material=material, max_rotation=0.0, max_strain=0.0, drift=0.0, jitter=0.0, **NO_DEFECTS)
    image = simulate(s, rng(), noise=False).image
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    ky, kx = np.unravel_index(np.argmax(power), power.shape)
    k = np.hypot(*(np.fft.fftfreq(s.image_size)[[ky, kx]])) / s.pixel_size   # cycles per Å
    a = MATERIALS[material][2]
    assert k == pytest.approx(2 / (math.sqrt(3) * a), abs=1 / (s.image_size * s.pixel_size))


def defect_and_intact(**changes):
    """The same image, noiseless, with and without its defects: (sample, intact image, settings)."""
    s = StemSettings(tail_weight=0.0, chalcogen_vacancy_density=0.03, double_vacancy_density=0.03,
                     dopant_density=0.03, metal_vacancy_density=0.03, **changes)
    sample = simulate(s, rng(3), noise=False)
    intact = simulate(replace(s, **NO_DEFECTS), rng(3), noise=False)
    return sample, intact.image.astype(np.float64), s


def isolated(defects, size, apart=22.0, border=12.0):
    """Defects at least ``apart`` px from any other and ``border`` px from the edges."""
    yx = defects[:, :2]
    distance = np.hypot(*(yx[:, None, :] - yx[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distance, np.inf)
    inside = np.all((yx >= border) & (yx <= size - 1 - border), axis=1)
    return defects[inside & (distance.min(axis=1) >= apart)]


def test_each_defect_changes_its_column_by_the_expected_share_of_z_to_the_n():
    sample, intact, s = defect_and_intact(max_rotation=0.0, max_strain=0.0, drift=0.0, jitter=0.0)
    difference = intact - sample.image
    expected = {1: 0.5, 2: 1.0, 3: 1 - (42 / 74) ** 1.7, 4: 1.0}   # of the intact column: Se2 or W
    rows, cols = np.indices(difference.shape)
    seen = set()
    for y, x, c in isolated(sample.defects, s.image_size):
        window = np.hypot(rows - y, cols - x) <= 10
        intact_column = column_intensity(s, ["W"] if c >= 3 else ["Se", "Se"])
        assert difference[window].sum() / intact_column == pytest.approx(expected[int(c)], rel=2e-3)
        seen.add(int(c))
    assert seen == {1, 2, 3, 4}


def test_labels_and_table_sit_on_the_defects_after_rotation_strain_drift_and_jitter():
    sample, intact, s = defect_and_intact(max_strain=0.05, drift=2.0, jitter=0.3)
    difference = intact - sample.image
    rows, cols = np.indices(difference.shape)
    checked = 0
    for y, x, c in isolated(sample.defects, s.image_size):
        window = np.hypot(rows - y, cols - x) <= 10
        weight = difference * window
        assert (weight * rows).sum() / weight.sum() == pytest.approx(y, abs=0.02)   # the dip (or bump) is there
        assert (weight * cols).sum() / weight.sum() == pytest.approx(x, abs=0.02)
        disk = window & (sample.labels == c)
        assert disk.sum() >= math.pi * (s.label_radius / s.pixel_size - 1) ** 2
        assert rows[disk].mean() == pytest.approx(y, abs=0.3) and cols[disk].mean() == pytest.approx(x, abs=0.3)
        assert not np.any(window & (sample.labels != c) & (sample.labels != 0))
        checked += 1
    assert checked >= 10
    # the labels are the disks of the table's defects, nothing else (at the edges: of defects just outside)
    radius = s.label_radius / s.pixel_size
    far = (rows > radius) & (rows < s.image_size - 1 - radius) & (cols > radius) & (cols < s.image_size - 1 - radius)
    for y, x, _ in sample.defects:
        far &= np.hypot(rows - y, cols - x) > radius
    assert not sample.labels[far].any()


def test_drift_and_jitter_move_columns_by_a_function_of_their_scan_row():
    still = StemSettings(max_rotation=0.0, max_strain=0.0, drift=0.0, jitter=0.0, chalcogen_vacancy_density=0.05)
    plain = simulate(still, rng(4)).defects

    def shift(settings):
        moved = simulate(settings, rng(4)).defects
        nearest = np.hypot(*(moved[:, None, :2] - plain[None, :, :2]).transpose(2, 0, 1)).argmin(axis=1)
        return moved[:, 0], moved[:, :2] - plain[nearest, :2]

    _, jitter = shift(replace(still, jitter=0.2))
    np.testing.assert_array_equal(jitter[:, 0], 0)   # jitter moves along x only, by an offset per row
    assert 0.1 < np.ptp(jitter[:, 1]) and np.abs(jitter[:, 1]).max() < 5

    rows, drift = shift(replace(still, drift=0.3))
    assert np.abs(drift).max() > 0.1
    for axis in (0, 1):   # a smooth (nearly quadratic) function of the row
        fit = np.polyval(np.polyfit(rows, drift[:, axis], 2), rows)
        assert np.abs(fit - drift[:, axis]).max() < 0.02


def test_the_specimen_is_the_image_simulate_makes():
    s = StemSettings(image_size=96, chalcogen_vacancy_density=0.05, dopant_density=0.05, jitter=0.3)
    state = rng(8)
    columns = stem_sim.specimen(s, state)
    sample = simulate(s, rng(8), noise=False)
    np.testing.assert_allclose(render(s, columns.yx, columns.counts), sample.image, rtol=1e-4, atol=1e-3)
    defect = columns.classes > 0
    inside = np.all((columns.yx >= -0.5) & (columns.yx < s.image_size - 0.5), axis=1)
    np.testing.assert_allclose(columns.yx[defect & inside], sample.defects[:, :2], atol=1e-4)
    np.testing.assert_array_equal(columns.classes[defect & inside], sample.defects[:, 2])
    assert set(columns.classes[columns.is_metal]) <= {0, 3, 4} and set(columns.classes[~columns.is_metal]) <= {0, 1, 2}
    assert (columns.counts[columns.classes == 2] == 0).all() and (columns.counts[columns.classes == 1] > 0).all()


# ------------------------------------------------------------------------------------------------ noise

def residual(s, seed=1):
    clean = simulate(s, rng(seed), noise=False).image.astype(np.float64)
    noisy = simulate(s, rng(seed)).image.astype(np.float64)
    return clean, noisy - clean


def test_shot_noise_is_poisson_at_the_dose_and_read_noise_adds_its_variance():
    s = StemSettings(image_size=128, read_noise=0.0)
    clean, r = residual(s)
    assert r.mean() == pytest.approx(0.0, abs=0.1)
    assert (r ** 2).mean() / clean.mean() == pytest.approx(1.0, rel=0.05)
    counts = simulate(s, rng(1)).image
    np.testing.assert_array_equal(counts, np.round(counts))

    clean2, r2 = residual(replace(s, dose=2 * s.dose))
    assert clean2.mean() == pytest.approx(2 * clean.mean(), rel=1e-5)
    assert (r2 ** 2).mean() / (r ** 2).mean() == pytest.approx(2.0, rel=0.07)

    clean4, r4 = residual(replace(s, read_noise=4.0))
    np.testing.assert_allclose(clean4, clean)
    assert ((r4 ** 2).mean() - clean.mean()) == pytest.approx(16.0, rel=0.2)


def test_same_seed_same_sample_and_another_seed_another():
    s = StemSettings(image_size=64)
    a, b, c = simulate(s, rng(5)), simulate(s, rng(5)), simulate(s, rng(6))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.float32 and a.labels.dtype == np.uint8 and a.defects.dtype == np.float32
    assert a.image.shape == a.labels.shape == (64, 64) and a.defects.shape[1] == 3


# ------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("field, value", [
    ("dose", -1), ("dose", True), ("read_noise", float("nan")), ("material", "MoTe2"), ("dopant", "W"),
    ("dopant", "Se"), ("z_exponent", 3.0), ("image_size", 8), ("image_size", 64.0), ("pixel_size", 0.0),
    ("probe_fwhm", 0.3), ("tail_weight", 1.5), ("max_rotation", 200.0), ("max_strain", 0.5), ("jitter", -0.1),
    ("label_radius", 0.1), ("metal_vacancy_density", 2.0),
])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(UserError, match=rf"^task\.options\.{field}: .*got {value!r}$") as info:
        StemSettings(**{field: value})
    assert "\n" not in str(info.value)


def test_densities_of_one_sublattice_must_sum_to_at_most_one():
    with pytest.raises(UserError, match=r"^task\.options\.double_vacancy_density: .*<= 1"):
        StemSettings(chalcogen_vacancy_density=0.6, double_vacancy_density=0.5)


def test_the_dopant_defaults_to_the_other_metal():
    assert StemSettings().dopant_element == "Mo"
    assert StemSettings(material="MoS2").dopant_element == "W"
    assert StemSettings(dopant="Re").dopant_element == "Re"
