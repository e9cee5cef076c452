import numpy as np
import pytest
from orix.quaternion import Orientation, Rotation, symmetry

from menndl_py.errors import UserError
from menndl_py.physics import ebsd
from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.physics.orientation import cubic_symmetry, disorientation_degrees

SMALL = EbsdSettings(pattern_height=32, pattern_width=40)


def rng(seed=0):
    return np.random.default_rng(seed)


def equivalents(quaternions: np.ndarray, k: int) -> np.ndarray:
    return (Rotation(cubic_symmetry()[k]) * Rotation(quaternions)).data


def rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).mean(axis=(1, 2)))


# ---------------------------------------------------------------------------------------------- symmetry

def test_every_symmetry_equivalent_gives_the_same_pattern():
    q = ebsd.random_quaternions(6, rng())
    base = ebsd.render(SMALL, q).patterns
    for k in range(24):
        np.testing.assert_allclose(ebsd.render(SMALL, equivalents(q, k)).patterns, base, atol=1e-5)
    np.testing.assert_allclose(ebsd.render(SMALL, -q).patterns, base, atol=1e-5)


def test_without_the_reduction_the_master_pattern_is_symmetric_to_well_under_a_tenth_of_a_degree():
    """kikuchipy's projection of equivalents, as given: exact for the 8 rotations that keep the Lambert grid,
    otherwise closer than the patterns of orientations 0.15° apart."""
    q = Orientation(ebsd.random_quaternions(6, rng(1)), symmetry=symmetry.O).reduce().data
    base = ebsd.master_pattern().get_patterns(Rotation(q), _detector(SMALL), compute=True,
                                              show_progressbar=False).data
    turned = (Rotation.from_axes_angles(rng(2).standard_normal((6, 3)), 0.15, degrees=True) * Rotation(q)).data
    scale = rms(_projected(turned), base)
    exact = 0
    for k in range(24):
        difference = rms(_projected(equivalents(q, k)), base)
        exact += bool(np.all(difference < 1e-3 * base.std()))
        assert np.all(difference < scale)
    assert exact == 8


def _detector(settings):
    from kikuchipy.detectors import EBSDDetector

    return EBSDDetector(shape=settings.shape, pc=settings.pc, sample_tilt=settings.sample_tilt)


def _projected(quaternions):
    return ebsd.master_pattern().get_patterns(Rotation(quaternions), _detector(SMALL), compute=True,
                                              show_progressbar=False).data


# ----------------------------------------------------------------------------------------------- physics

def test_patterns_are_float32_standardised_and_change_with_orientation():
    sample = ebsd.simulate(SMALL, 5, rng())
    assert sample.patterns.dtype == np.float32 and sample.patterns.shape == (5, 32, 40)
    np.testing.assert_allclose(sample.patterns.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(sample.patterns.std(axis=(1, 2)), 1, atol=1e-3)
    assert np.all(rms(sample.patterns[:1], sample.patterns[1:]) > 0.5)
    np.testing.assert_allclose(np.linalg.norm(sample.quaternions, axis=1), 1)
    assert np.all(sample.quaternions[:, 0] >= 0)


def test_noise_is_poisson_at_the_set_count():
    s = EbsdSettings(pattern_height=32, pattern_width=32, counts=400.0)
    q = ebsd.random_quaternions(4, rng())
    expected, _ = ebsd.record(s, q)
    noisy, pcs = ebsd.record(s, q, rng(5))
    assert expected.mean() == pytest.approx(400, rel=0.1)
    # the residual against the expected counts of the same jittered geometry has the Poisson variance
    s_fixed = EbsdSettings(pattern_height=32, pattern_width=32, counts=400.0, pc_jitter=0.0, background_shift=0.0,
                           yield_variation=0.0)
    noisy, _ = ebsd.record(s_fixed, q, rng(5))
    expected, _ = ebsd.record(s_fixed, q)
    z = (noisy - expected) / np.sqrt(expected)
    assert z.mean() == pytest.approx(0, abs=0.05) and z.var() == pytest.approx(1, abs=0.05)


def test_yield_varies_smoothly_up_to_the_set_amount():
    s = EbsdSettings(pattern_height=40, pattern_width=40, yield_variation=0.1, yield_scale=0.05)
    fields = ebsd.yield_fields(s, 300, rng(2))
    spread = (fields - 1).std(axis=(1, 2))
    assert spread.max() <= 0.1 + 1e-9 and spread.mean() == pytest.approx(0.05, rel=0.15)
    # smooth: neighbouring pixels nearly equal (a correlation length of 1 to 4 px)
    neighbours = np.corrcoef((fields[:, :, 1:] - 1).ravel(), (fields[:, :, :-1] - 1).ravel())[0, 1]
    assert neighbours > 0.85
    # and it reaches the patterns: with it their counts vary more around the same expected pattern
    q = ebsd.random_quaternions(8, rng())
    still = dict(pattern_height=40, pattern_width=40, pc_jitter=0.0, background_shift=0.0, counts=1e6)
    plain, varied = (ebsd.record(EbsdSettings(**still, yield_variation=v), q, rng(3))[0] for v in (0.0, 0.1))
    expected = ebsd.record(EbsdSettings(**still), q)[0]
    assert np.std(varied / expected - 1) > 3 * np.std(plain / expected - 1)


def test_projection_centres_are_jittered_by_the_set_amount():
    s = EbsdSettings(pattern_height=16, pattern_width=16, pc_jitter=0.01)
    _, pcs = ebsd.record(s, ebsd.random_quaternions(400, rng()), rng(1))
    assert pcs.mean(axis=0) == pytest.approx(s.pc, abs=0.002)
    assert pcs.std(axis=0) == pytest.approx([0.01] * 3, rel=0.15)
    _, nominal = ebsd.record(s, ebsd.random_quaternions(3, rng()))
    assert np.all(nominal == s.pc)


def test_orientations_are_uniform_in_so3():
    q = ebsd.random_quaternions(20000, rng())
    # uniform in SO(3): the rotation angle w has density (1 - cos w) / pi, so its mean is pi/2 + 2/pi
    angles = 2 * np.arccos(np.clip(q[:, 0], -1, 1))
    assert angles.mean() == pytest.approx(np.pi / 2 + 2 / np.pi, abs=0.02)
    assert np.abs(q[:, 1:].mean(axis=0)).max() < 0.01


def test_simulated_patterns_match_the_experimental_set_at_its_indexed_orientations():
    data = ebsd.experimental()
    assert data["patterns"].shape == (9, 60, 60) and data["patterns"].dtype == np.float32
    simulated = ebsd.render(EbsdSettings(), data["quaternions"]).patterns
    matched = np.mean(simulated * data["patterns"], axis=(1, 2))   # normalised cross-correlation
    others = np.mean(simulated * np.roll(data["patterns"], 4, axis=0), axis=(1, 2))
    assert np.all(matched > 0.3) and np.all(matched > others)


def test_the_same_seed_gives_the_same_patterns():
    a, b = ebsd.simulate(SMALL, 3, rng(7)), ebsd.simulate(SMALL, 3, rng(7))
    assert np.array_equal(a.patterns, b.patterns) and np.array_equal(a.quaternions, b.quaternions)
    assert not np.array_equal(a.patterns, ebsd.simulate(SMALL, 3, rng(8)).patterns)


def test_disorientations_of_the_experimental_orientations_are_those_of_a_grain_map():
    """Sanity of the stored orientations: the 9 points lie in a few grains (pairs within 1° or far apart)."""
    q = ebsd.experimental()["quaternions"]
    angles = disorientation_degrees(np.repeat(q, 9, axis=0), np.tile(q, (9, 1)))
    assert np.sum(angles < 1) > 9 and np.all((angles < 1) | (angles > 5))


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("field, value, message", [
    ("pattern_height", 8, "pattern_height: must be an integer in [16, 1024], got 8"),
    ("pattern_width", 60.0, "pattern_width: must be an integer in [16, 1024], got 60.0"),
    ("pcx", 1.5, "pcx: must be in [0, 1], got 1.5"),
    ("pcz", 0.0, "pcz: must be in [0.1, 5], got 0.0"),
    ("sample_tilt", float("nan"), "sample_tilt: must be a finite number, got nan"),
    ("counts", 0, "counts: must be in [1, 1e7], got 0"),
    ("kikuchi_contrast", True, "kikuchi_contrast: must be a finite number, got True"),
    ("pc_jitter", -0.1, "pc_jitter: must be in [0, 0.05], got -0.1"),
    ("background_width", "wide", "background_width: must be a finite number, got 'wide'"),
])
def test_bad_settings_are_one_line_errors_naming_the_field(field, value, message):
    with pytest.raises(UserError) as error:
        EbsdSettings(**{field: value})
    assert str(error.value) == f"task.options.simulator.{message}"
