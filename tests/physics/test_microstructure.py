import numpy as np
import pytest

from menndl_py.errors import UserError
from menndl_py.physics.microstructure import KINDS, check_two_phase, generate, sample_family


def agreement(volume: np.ndarray, axis: int, lag: int) -> float:
    """Fraction of voxels in the same phase as the voxel `lag` further along `axis` (periodically)."""
    return float(np.mean(volume == np.roll(volume, -lag, axis)))


def seam_and_interior(volume: np.ndarray, axis: int) -> tuple[float, float]:
    """Agreement of neighbouring planes across the periodic boundary, and averaged over the interior planes."""
    v = np.moveaxis(volume, axis, 0)
    return float(np.mean(v[-1] == v[0])), float(np.mean(v[1:] == v[:-1]))


@pytest.mark.parametrize("shape,fraction", [((10, 11, 12), 0.3), ((16, 16, 16), 0.5), ((7, 9, 5), 0.77),
                                            ((8, 8, 8), 0.0), ((8, 8, 8), 1.0)])
def test_volume_fraction_is_exact(shape, fraction):
    v = generate(shape, fraction, (2.0, 1.0, 0.5), np.random.default_rng(3))
    assert v.shape == shape and v.dtype == np.uint8
    assert set(np.unique(v)) <= {0, 1}
    assert int(v.sum()) == round(fraction * v.size)


def test_same_seed_same_volume():
    a = generate((12, 12, 12), 0.4, (2, 2, 2), 7)
    b = generate((12, 12, 12), 0.4, (2, 2, 2), np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, generate((12, 12, 12), 0.4, (2, 2, 2), 8))


def test_periodic_without_seam():
    v = generate((40, 40, 40), 0.5, (3.0, 3.0, 3.0), np.random.default_rng(0))
    for axis in range(3):
        seam, interior = seam_and_interior(v, axis)
        assert interior > 0.8
        assert abs(seam - interior) < 0.05, (axis, seam, interior)
    # the check sees a seam where there is one: a crop of a larger periodic volume is not periodic
    cropped = generate((80, 40, 40), 0.5, (3.0, 3.0, 3.0), np.random.default_rng(0))[:40]
    seam, interior = seam_and_interior(cropped, 0)
    assert interior - seam > 0.2


def test_correlation_lengths_set_the_anisotropy():
    rng = np.random.default_rng(1)
    needles = generate((32, 32, 32), 0.5, (6.0, 1.5, 1.5), rng)
    along = agreement(needles, 0, 3)
    across = [agreement(needles, a, 3) for a in (1, 2)]
    assert along > max(across) + 0.15
    assert abs(across[0] - across[1]) < 0.05
    plates = generate((32, 32, 32), 0.5, (1.5, 6.0, 6.0), rng)
    normal = agreement(plates, 0, 3)
    assert min(agreement(plates, a, 3) for a in (1, 2)) > normal + 0.15
    isotropic = generate((32, 32, 32), 0.5, (2.0, 2.0, 2.0), rng)
    values = [agreement(isotropic, a, 3) for a in range(3)]
    assert max(values) - min(values) < 0.05


def test_sample_family_covers_the_kinds_and_ranges():
    shape = (12, 12, 12)
    volumes, d = sample_family(12, shape, (0.3, 0.6), np.random.default_rng(5))
    assert volumes.shape == (12, *shape) and volumes.dtype == np.uint8
    assert set(d["kind"]) == set(KINDS)
    assert d["correlation_lengths"].shape == (12, 3)
    assert np.all(d["volume_fraction"] >= 0.3 - 0.5 / volumes[0].size)
    assert np.all(d["volume_fraction"] <= 0.6 + 0.5 / volumes[0].size)
    assert np.allclose(d["volume_fraction"], volumes.reshape(12, -1).mean(axis=1))
    for kind, axis, ell in zip(d["kind"], d["axis"], d["correlation_lengths"]):
        others = np.delete(ell, axis)
        if kind == "isotropic":
            assert axis == -1 and np.ptp(ell) == 0
        elif kind == "elongated":
            assert others[0] == others[1] and ell[axis] >= 2 * others[0]
        else:
            assert others[0] == others[1] and others[0] >= 2 * ell[axis]
        assert np.all((ell >= 1.0) & (ell <= 12.0))


def test_check_two_phase_accepts_zeros_and_ones_of_any_numeric_type():
    for v in (np.zeros((2, 3, 4), bool), np.ones((2, 3, 4), np.float32), np.eye(3, dtype=np.int64)[None]):
        out = check_two_phase(v, "v")
        assert out.dtype == np.uint8 and out.shape == v.shape and np.array_equal(out, v)
    check_two_phase(np.zeros((2, 3, 4)), "v", shape=(2, 3, 4))


@pytest.mark.parametrize("volume,shape,message", [
    (np.array([0, 1, 2] * 9).reshape(3, 3, 3), None,
     "vol.h5: volume 3 has values {0,1,2}; expected two phases 0 and 1"),
    (np.full((2, 2, 2), 0.5), None, "vol.h5: volume 3 has values {0.5}; expected two phases 0 and 1"),
    (np.array([0.0, np.nan] * 4).reshape(2, 2, 2), None,
     "vol.h5: volume 3 has values {0,nan}; expected two phases 0 and 1"),
    (np.zeros((4, 4)), None, "vol.h5: volume 3 has shape (4, 4); expected a non-empty 3-D volume"),
    (np.zeros((4, 4, 0)), None, "vol.h5: volume 3 has shape (4, 4, 0); expected a non-empty 3-D volume"),
    (np.zeros((4, 4, 4)), (4, 4, 5), "vol.h5: volume 3 has shape (4, 4, 4); expected (4, 4, 5)"),
])
def test_check_two_phase_names_the_volume(volume, shape, message):
    with pytest.raises(UserError) as info:
        check_two_phase(volume, "vol.h5: volume 3", shape=shape)
    assert str(info.value) == message


@pytest.mark.parametrize("call,name", [
    (lambda: generate((5, 5), 0.5, (1, 1, 1), 0), "shape"),
    (lambda: generate((5, 5, 0), 0.5, (1, 1, 1), 0), "shape"),
    (lambda: generate((5, 5, 5.5), 0.5, (1, 1, 1), 0), "shape"),
    (lambda: generate((5, 5, 5), 1.5, (1, 1, 1), 0), "volume_fraction"),
    (lambda: generate((5, 5, 5), "half", (1, 1, 1), 0), "volume_fraction"),
    (lambda: generate((5, 5, 5), 0.5, (1, -1, 1), 0), "correlation_lengths"),
    (lambda: generate((5, 5, 5), 0.5, (1, 1), 0), "correlation_lengths"),
    (lambda: sample_family(0, (5, 5, 5), (0.2, 0.4), 0), "n"),
    (lambda: sample_family(2, (5, 5, 5), (0.4, 0.2), 0), "vf_range"),
    (lambda: sample_family(2, (5, 5, 5), (0.2, 0.4), 0, aspect_range=(0.5, 2)), "aspect_range"),
])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(UserError) as info:
        call()
    assert str(info.value).startswith(f"{name}: ") and "\n" not in str(info.value)
