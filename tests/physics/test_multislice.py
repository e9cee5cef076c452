"""menndl_py.physics.multislice: abTEM images of the fast simulator's specimens (a tiny cell, seconds)."""
import numpy as np
import pytest

from menndl_py.errors import UserError
from menndl_py.physics import multislice
from menndl_py.physics.multislice import Microscope
from menndl_py.physics.stem_sim import StemSettings

# a 2 × 2-cell WSe2 supercell (6.6 × 11.4 Å), coarse but above the detector's 200 mrad
TINY = Microscope(cells_x=2, cells_y=2, sampling=0.06, prism_interpolation=1, source_size=0.0)
DEFECTS = StemSettings(pixel_size=0.3, jitter=0.0, background=0.0, chalcogen_vacancy_density=0.25,
                       double_vacancy_density=0.25, dopant_density=0.2, metal_vacancy_density=0.2)


@pytest.fixture(scope="module")
def quiet():
    """The noiseless image of the tiny specimen of generator 4."""
    return multislice.simulate(DEFECTS, TINY, np.random.default_rng(4), noise=False)


def test_w_columns_outshine_se2_and_vacancies_are_dark(quiet):
    atoms, sites, classes = multislice.structure(DEFECTS, TINY, np.random.default_rng(4))
    sample = quiet
    shape = np.array(sample.image.shape)
    pixel = np.array(multislice.cell_extent(DEFECTS, TINY)) / shape
    at = np.rint(sites / pixel).astype(int) % shape
    peak = sample.image[at[:, 0], at[:, 1]]
    metal = np.arange(len(sites)) < len(sites) // 2
    by = {(m, c): peak[(metal == m) & (classes == c)] for m in (True, False) for c in range(5)}
    assert min(len(by[True, 0]), len(by[False, 0]), len(by[True, 4]) + len(by[False, 2])) > 0, by
    assert by[True, 0].min() > by[False, 0].max()                      # W brighter than Se2
    assert by[False, 0].mean() > 0.5 * by[True, 0].mean()              # but not by Z^1.7 (0.53): channelling
    for metal_site, kind in ((True, 4), (False, 2), (False, 1), (True, 3)):
        assert np.all(by[metal_site, kind] < by[metal_site, 0].min()), (metal_site, kind)   # vacancies, Mo dimmer
    assert len(atoms) == (len(by[True, 0]) + len(by[True, 3]) + 2 * len(by[False, 0]) + len(by[False, 1]))
    defect = classes > 0   # the table lists every defect site, and its label disk is painted there
    np.testing.assert_allclose(np.sort(sample.defects[:, 2]), np.sort(classes[defect]))
    assert np.all(sample.labels[at[defect, 0], at[defect, 1]] == classes[defect])
    assert np.all(sample.labels[at[~defect, 0], at[~defect, 1]] == 0)


def test_counts_follow_the_dose_and_jitter_moves_rows(quiet):
    """Twice the dose and 0.3 Å of row jitter: each row holds twice the counts, shifted along x, and so are the
    defects."""
    shaken = multislice.simulate(StemSettings(**{**DEFECTS.__dict__, "jitter": 0.3, "dose": 2 * DEFECTS.dose}),
                                 TINY, np.random.default_rng(4), noise=False)
    np.testing.assert_allclose(shaken.image.sum(axis=1), 2 * quiet.image.sum(axis=1), rtol=1e-4)
    assert not np.allclose(shaken.image, 2 * quiet.image, rtol=0.05)
    np.testing.assert_allclose(shaken.defects[:, 0], quiet.defects[:, 0])
    assert not np.allclose(shaken.defects[:, 1], quiet.defects[:, 1])


@pytest.mark.parametrize("field, value, message", [
    ("method", "bloch", "multislice.method: must be 'prism' or 'multislice'"),
    ("detector_outer", 50.0, "multislice.detector_outer: must be > detector_inner"),
    ("cells_x", 2.5, "multislice.cells_x: must be an integer"),
    ("sampling", 0.15, "multislice.detector_outer: 200 mrad is beyond"),
])
def test_bad_microscopes_are_one_line_errors(field, value, message):
    with pytest.raises(UserError) as info:
        Microscope(**{field: value})
    assert str(info.value).startswith(message)
