import numpy as np
import pytest

from menndl_py.errors import UserError
from menndl_py.physics.elasticity import (
    effective_stiffness,
    effective_stiffness_c11,
    hashin_shtrikman,
    isotropic_moduli,
    solve,
)
from menndl_py.physics.microstructure import generate

NU = 0.3


def lame(E: float, nu: float) -> tuple[float, float]:
    return E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))


def laminate_c11(E: tuple[float, float], nu: float, fraction: float, normal: int) -> float:
    """Exact C11 of a laminate of isotropic layers (phase 1 taking `fraction`) with the given layer normal.

    Normal x1, under eps11 with the other macroscopic strains zero: the tangential strains eps22 = eps33 = eps23 = 0
    in every layer, sigma11 and the shears sigma12, sigma13 are uniform, so the shears vanish and
    sigma11 = M eps11 with M = lam + 2 mu: C11 = <1/M>^-1.
    Normal x2 (x3 alike): eps11 = e and eps33 = eps13 = 0 in every layer; sigma22 = lam e + M eps22 = s is
    uniform with <eps22> = 0, so s = e <lam/M> / <1/M>; sigma11 = M e + lam eps22 = (M - lam^2/M) e + (lam/M) s:
    C11 = <M - lam^2/M> + <lam/M>^2 / <1/M>.
    """
    weights = (1.0 - fraction, fraction)
    lams, mus = zip(*(lame(e, nu) for e in E))
    moduli = [lam + 2 * mu for lam, mu in zip(lams, mus)]

    def mean(values):
        return sum(w * v for w, v in zip(weights, values))

    inv_m = mean([1 / m for m in moduli])
    if normal == 0:
        return 1 / inv_m
    ratio = mean([lam / m for lam, m in zip(lams, moduli)])
    return mean([m - lam ** 2 / m for lam, m in zip(lams, moduli)]) + ratio ** 2 / inv_m


@pytest.mark.parametrize("contrast", [10.0, 50.0])
@pytest.mark.parametrize("normal", [0, 1, 2])
@pytest.mark.parametrize("n", [9, 10])
def test_laminate_effective_c11_is_exact(contrast, normal, n):
    volume = np.zeros((n, n, n), np.uint8)
    layers = [slice(None)] * 3
    layers[normal] = slice(2, 6)
    volume[tuple(layers)] = 1
    E = (70.0, 70.0 * contrast)
    exact = laminate_c11(E, NU, 4 / n, normal)
    assert effective_stiffness_c11(volume, E, NU, tol=1e-8) == pytest.approx(exact, rel=1e-6)
    sol = solve(volume, E, NU, [1e-3, 0, 0, 0, 0, 0], tol=1e-8)
    if normal == 0:  # the load is carried in series: sigma11 is uniform
        assert np.ptp(sol.stress[0]) < 1e-6 * np.abs(sol.stress[0]).max()
    else:  # the strain along the layers is the macroscopic one
        assert np.allclose(sol.strain[0], 1e-3, rtol=0, atol=1e-12)


def test_laminate_with_a_negative_poisson_ratio():
    volume = np.zeros((11, 5, 5), np.uint8)
    volume[3:8] = 1
    E = (1.0, 10.0)
    for normal, vol in ((0, volume), (1, volume.transpose(1, 0, 2))):
        assert effective_stiffness_c11(vol, E, -0.4, tol=1e-8) == pytest.approx(
            laminate_c11(E, -0.4, 5 / 11, normal), rel=1e-6)


def test_homogeneous_medium_has_uniform_strain_equal_to_the_macro_strain():
    macro = np.array([[1e-3, 2e-4, 0.0], [2e-4, -3e-4, 1e-4], [0.0, 1e-4, 5e-4]])
    E, nu = 200.0, 0.25
    lam, mu = lame(E, nu)
    expected_stress = lam * np.trace(macro) * np.eye(3) + 2 * mu * macro
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for volume, moduli in ((np.zeros((6, 7, 8), np.uint8), (E, 3 * E)),
                           (generate((6, 7, 8), 0.5, (1, 1, 1), 0), (E, E))):
        sol = solve(volume, moduli, nu, macro)
        assert sol.converged and sol.iterations == 0
        for k, (i, j) in enumerate(voigt):
            assert np.all(sol.strain[k] == macro[i, j] * (1 if i == j else 2))
            assert np.allclose(sol.stress[k], expected_stress[i, j], rtol=1e-14, atol=0)
        assert np.allclose(sol.average_stress, [expected_stress[i, j] for i, j in voigt], rtol=1e-14)


def test_tensor_and_voigt_macro_strains_agree_and_the_mean_strain_is_the_macro_strain():
    volume = generate((9, 8, 7), 0.4, (1.5, 1.5, 1.5), 2)
    macro_voigt = np.array([1e-3, -2e-4, 3e-4, 4e-4, -1e-4, 2e-4])
    tensor = np.array([[1e-3, 1e-4, -0.5e-4], [1e-4, -2e-4, 2e-4], [-0.5e-4, 2e-4, 3e-4]])
    a = solve(volume, (10.0, 100.0), NU, macro_voigt, tol=1e-9)
    b = solve(volume, (10.0, 100.0), NU, tensor, tol=1e-9)
    assert a.converged and a.iterations > 0 and a.strain.shape == (6, 9, 8, 7) and a.stress.shape == (6, 9, 8, 7)
    assert np.allclose(a.strain, b.strain, rtol=0, atol=1e-15) and np.allclose(a.stress, b.stress, atol=1e-12)
    assert np.allclose(a.strain.mean(axis=(1, 2, 3)), macro_voigt, rtol=0, atol=1e-15)
    assert np.allclose(a.average_stress, a.stress.mean(axis=(1, 2, 3)))


@pytest.mark.parametrize("contrast", [10.0, 50.0])
def test_random_microstructures_fall_inside_the_hashin_shtrikman_bounds(contrast):
    E = (10.0, 10.0 * contrast)
    for seed, shape in ((0, (15, 15, 15)), (1, (16, 16, 16))):
        volume = generate(shape, 0.4, (1.5, 1.5, 1.5), seed)
        C = effective_stiffness(volume, E, NU, tol=1e-8)
        assert np.allclose(C, C.T, rtol=0, atol=1e-7 * np.abs(C).max())
        S = np.linalg.inv(C)
        trace, off = np.trace(C[:3, :3]), C[0, 1] + C[0, 2] + C[1, 2]
        k_voigt, g_voigt = (trace + 2 * off) / 9, (trace - off + 3 * np.trace(C[3:, 3:])) / 15
        s_trace, s_off = np.trace(S[:3, :3]), S[0, 1] + S[0, 2] + S[1, 2]
        k_reuss, g_reuss = 1 / S[:3, :3].sum(), 15 / (4 * s_trace - 4 * s_off + 3 * np.trace(S[3:, 3:]))
        bounds = hashin_shtrikman(E, NU, float(volume.mean()))
        for lo_hi, values in ((bounds["K"], (k_reuss, k_voigt)), (bounds["G"], (g_reuss, g_voigt))):
            assert lo_hi[0] < values[0] <= values[1] < lo_hi[1]


def test_hashin_shtrikman_limits():
    E = (10.0, 100.0)
    k0, g0 = isotropic_moduli(E[0], NU)
    k1, g1 = isotropic_moduli(E[1], NU)
    for fraction, k, g in ((0.0, k0, g0), (1.0, k1, g1)):
        bounds = hashin_shtrikman(E, NU, fraction)
        assert bounds["K"] == pytest.approx((k, k)) and bounds["G"] == pytest.approx((g, g))
    b = hashin_shtrikman(E, NU, 0.3)
    assert k0 < b["K"][0] < b["K"][1] < 0.7 * k0 + 0.3 * k1


def test_permuting_axes_permutes_the_stiffness():
    volume = generate((7, 9, 8), 0.5, (2.0, 1.0, 1.0), 4)
    C = effective_stiffness(volume, (1.0, 20.0), NU, tol=1e-10)
    swapped = effective_stiffness(volume.transpose(1, 0, 2), (1.0, 20.0), NU, tol=1e-10)
    order = [1, 0, 2, 4, 3, 5]  # x1 <-> x2 in Voigt order 11, 22, 33, 23, 13, 12
    assert np.allclose(swapped, C[np.ix_(order, order)], rtol=0, atol=1e-8 * np.abs(C).max())


def test_tightening_the_tolerance_changes_the_answer_by_less_than_the_tolerance():
    volume = generate((17, 17, 17), 0.45, (1.5, 2.5, 1.5), 6)
    for tol in (1e-4, 1e-6):
        loose = effective_stiffness_c11(volume, (1.0, 50.0), NU, tol=tol)
        tight = effective_stiffness_c11(volume, (1.0, 50.0), NU, tol=tol * 1e-3)
        assert abs(loose - tight) < tol * abs(tight)


def test_iteration_limit_reports_not_converged():
    volume = generate((9, 9, 9), 0.5, (1.5, 1.5, 1.5), 0)
    sol = solve(volume, (1.0, 50.0), NU, np.eye(6)[0], max_iterations=2)
    assert sol.iterations == 2 and not sol.converged and sol.residual > 1e-6
    full = solve(volume, (1.0, 50.0), NU, np.eye(6)[0])
    assert full.converged and full.residual <= 1e-6 and full.iterations > 2


GOOD = np.eye(3, dtype=np.uint8)[None].repeat(3, axis=0)


@pytest.mark.parametrize("kwargs,name", [
    ({"E": (0.0, 10.0)}, "E"),
    ({"E": (10.0, -5.0)}, "E"),
    ({"E": (10.0, float("inf"))}, "E"),
    ({"E": (10.0,)}, "E"),
    ({"E": "stiff"}, "E"),
    ({"nu": 0.5}, "nu"),
    ({"nu": -1.0}, "nu"),
    ({"nu": 0.7}, "nu"),
    ({"nu": float("nan")}, "nu"),
    ({"volume": GOOD * 2}, "volume"),
    ({"volume": GOOD[0]}, "volume"),
    ({"macro_strain": [1e-3, 0, 0]}, "macro_strain"),
    ({"macro_strain": [[0, 1e-3, 0], [0, 0, 0], [0, 0, 0]]}, "macro_strain"),
    ({"macro_strain": [np.nan, 0, 0, 0, 0, 0]}, "macro_strain"),
    ({"tol": 0.0}, "tol"),
    ({"max_iterations": 0}, "max_iterations"),
])
def test_bad_inputs_raise_user_errors_naming_the_argument(kwargs, name):
    args = {"volume": GOOD, "E": (10.0, 100.0), "nu": NU, "macro_strain": np.eye(6)[0]} | kwargs
    with pytest.raises(UserError) as info:
        solve(**args)
    message = str(info.value)
    assert message.startswith(f"{name}") and "\n" not in message
    if name in ("E", "nu"):
        with pytest.raises(UserError, match=f"^{name}: "):
            effective_stiffness_c11(args["volume"], args["E"], args["nu"])
