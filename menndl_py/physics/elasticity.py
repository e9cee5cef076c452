"""Periodic small-strain linear elasticity of two-phase voxel volumes, solved with FFT-preconditioned CG.

Both phases are isotropic with the same Poisson ratio, so the stiffness is C(x) = E(x) C1, C1 the stiffness of
unit Young's modulus.

Discretisation: Willot's rotated scheme (F. Willot, C. R. Mecanique 343, 232 (2015)). Displacements live at voxel
corners, strains and stresses at voxel centres; the strain of a voxel is the symmetric part of the mean of the
finite differences along its four parallel edges, i.e. the trilinear hexahedron with one-point quadrature. It is
free of the ringing of the trigonometric (Moulinec-Suquet) discretisation and needs no special case for the Nyquist
frequencies of odd grids (on even grids the modes with two Nyquist components carry no strain and are dropped).

Solver: the periodic displacement fluctuation u solves D^T C(x) (E_macro + D u) = 0, D the discrete strain
operator, by conjugate gradients preconditioned with D^T C1 D, whose inverse is the Green operator of the
homogeneous reference medium and is applied exactly with real FFTs (3 forward and 3 inverse per iteration;
D and D^T are local stencils applied in real space). The preconditioned operator's spectrum lies in
[E_min, E_max], so the iteration count grows like sqrt(contrast) and not with the grid size. ``tol`` bounds the
preconditioned residual norm (the Green-operator equilibrium residual, in the reference energy norm) relative to
its initial value.

Voigt notation throughout: order 11, 22, 33, 23, 13, 12; strains with engineering shears (2 eps_23, ...), so
that stress_voigt = C_voigt @ strain_voigt. Fields are component-first: (6, n1, n2, n3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from menndl_py.errors import UserError
from menndl_py.physics.microstructure import check_two_phase

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass(frozen=True)
class Solution:
    """Fields (6, n1, n2, n3) and averages (6,) in Voigt notation; GPa when the moduli are in GPa.

    ``residual`` is the final preconditioned residual norm relative to the initial one.
    """
    strain: np.ndarray
    stress: np.ndarray
    average_stress: np.ndarray
    iterations: int
    converged: bool
    residual: float


def _check_moduli(E) -> tuple[float, float]:
    try:
        e0, e1 = (float(e) for e in E)
        ok = 0.0 < e0 < math.inf and 0.0 < e1 < math.inf
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"E: must be the two phases' Young's moduli, both positive and finite (GPa), got {E!r}")
    return e0, e1


def _check_nu(nu) -> float:
    try:
        value = float(nu)
    except (TypeError, ValueError):
        value = math.nan
    if not -1.0 < value < 0.5:
        raise UserError(f"nu: Poisson's ratio must be in (-1, 0.5), got {nu!r}")
    return value


def _check_tol(tol) -> float:
    try:
        value = float(tol)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value < 1.0:
        raise UserError(f"tol: must be in (0, 1), got {tol!r}")
    return value


def _macro_tensor(macro_strain) -> np.ndarray:
    """A symmetric 3x3 strain from a 3x3 tensor or a Voigt 6-vector (engineering shears)."""
    try:
        m = np.asarray(macro_strain, dtype=float)
    except (TypeError, ValueError):
        m = np.full(1, math.nan)
    if m.shape == (6,) and np.all(np.isfinite(m)):
        out = np.empty((3, 3))
        for k, (i, j) in enumerate(VOIGT):
            out[i, j] = out[j, i] = m[k] if i == j else 0.5 * m[k]
        return out
    if m.shape == (3, 3) and np.all(np.isfinite(m)) and np.allclose(m, m.T, rtol=0, atol=1e-12 * np.abs(m).max()):
        return 0.5 * (m + m.T)
    raise UserError(f"macro_strain: must be a symmetric 3x3 tensor or a Voigt 6-vector of finite numbers, "
                    f"got {macro_strain!r}")


def _to_voigt(tensor: np.ndarray, engineering: bool) -> np.ndarray:
    out = np.stack([tensor[i, j] for i, j in VOIGT])
    if engineering:
        out[3:] *= 2.0
    return out


@lru_cache(maxsize=4)
def _green(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each real-FFT frequency: 1/|k|^2 and k/|k| (zero where k = 0), k the rotated scheme's wave vector.

    The symbol of the strain operator along axis j is i e^{i(xi_1+xi_2+xi_3)/2} k_j with
    k_j = 2 sin(xi_j/2) prod_{m != j} cos(xi_m/2).
    """
    sines, cosines = [], []
    for axis, n in enumerate(shape):
        q = sfft.rfftfreq(n) if axis == 2 else sfft.fftfreq(n)
        half = np.pi * q
        sines.append(np.sin(half))
        cosines.append(np.where(2 * np.abs(q * n) == n, 0.0, np.cos(half)))  # exact zero at Nyquist
    grids = [np.ix_(*[(s if a == j else c) for a, (s, c) in enumerate(zip(sines, cosines))]) for j in range(3)]
    k = np.stack(np.broadcast_arrays(*[2.0 * g[0] * g[1] * g[2] for g in grids]))
    k2 = np.einsum("i...,i...->...", k, k)
    inverse = np.divide(1.0, k2, out=np.zeros_like(k2), where=k2 > 0)
    direction = k * np.sqrt(inverse)
    inverse.flags.writeable = direction.flags.writeable = False
    return inverse, direction


def _edge(a: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slab of ``a`` at ``index`` (0 or -1) along ``axis``, keeping the axis."""
    where = [slice(None)] * a.ndim
    where[axis] = slice(0, 1) if index == 0 else slice(-1, None)
    return a[tuple(where)]


def _shift(op, a: np.ndarray, axis: int, forward: bool, out: np.ndarray) -> np.ndarray:
    """out = op(a(x + e), a(x)) if forward else op(a(x - e), a(x)), periodic along ``axis``.

    One pass over the flattened arrays (both C-contiguous) with the axis's stride, then the wrapped slab is
    redone: much cheaper than np.roll, which copies.
    """
    step = math.prod(a.shape[axis + 1:])
    flat_a, flat_out = a.reshape(-1), out.reshape(-1)
    if forward:
        op(flat_a[step:], flat_a[:-step], out=flat_out[:-step])
        op(_edge(a, axis, 0), _edge(a, axis, -1), out=_edge(out, axis, -1))
    else:
        op(flat_a[:-step], flat_a[step:], out=flat_out[step:])
        op(_edge(a, axis, -1), _edge(a, axis, 0), out=_edge(out, axis, 0))
    return out


def _gradient(u: np.ndarray) -> np.ndarray:
    """g[j, i] = d u_i / d x_j at voxel centres, from u (3, n1, n2, n3) at voxel corners.

    Along x_j: the difference of the corner values, averaged over the voxel's four edges parallel to x_j.
    """
    s3 = _shift(np.add, u, 3, True, np.empty_like(u))
    s23 = _shift(np.add, s3, 2, True, np.empty_like(u))
    s13 = _shift(np.add, s3, 1, True, np.empty_like(u))
    s12 = _shift(np.add, _shift(np.add, u, 2, True, np.empty_like(u)), 1, True, s3)
    g = np.empty((3,) + u.shape)
    _shift(np.subtract, s23, 1, True, g[0])
    _shift(np.subtract, s13, 2, True, g[1])
    _shift(np.subtract, s12, 3, True, g[2])
    g *= 0.25
    return g


def _divergence(sigma: np.ndarray) -> np.ndarray:
    """The transpose of _gradient applied to a symmetric (3, 3, n1, n2, n3) field: nodal forces (3, n1, n2, n3)."""
    add, sub = np.add, np.subtract
    t1, t2, t3 = (np.empty_like(sigma[0]) for _ in range(3))
    f = _shift(sub, _shift(add, sigma[0], 2, False, t1), 1, False, t2)  # D1^T S2^T sigma_i1 ...
    f += _shift(sub, _shift(add, sigma[1], 1, False, t1), 2, False, t3)  # ... + D2^T S1^T sigma_i2
    f = _shift(add, f, 3, False, t1)  # S3^T of both
    f += _shift(add, _shift(add, _shift(sub, sigma[2], 3, False, t2), 2, False, t3), 1, False, t2)
    f *= 0.25
    return f


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two contiguous arrays, in numpy's own loop: BLAS may start threads on a shared core."""
    return float(np.einsum("i,i->", a.reshape(-1), b.reshape(-1)))


class _Problem:
    """A validated volume and its moduli: the operators the CG iteration needs."""

    def __init__(self, volume, E, nu):
        phases = check_two_phase(volume, "volume")
        e0, e1 = _check_moduli(E)
        nu = _check_nu(nu)
        self.shape = phases.shape
        lam, mu = nu / ((1.0 + nu) * (1.0 - 2.0 * nu)), 1.0 / (2.0 * (1.0 + nu))  # at unit Young's modulus
        modulus = np.where(phases == 1, e1, e0).astype(np.float64)
        self.lam_field, self.mu_field = lam * modulus, mu * modulus
        inverse_k2, self.direction = _green(self.shape)
        self.weight = inverse_k2 / mu
        self.scaled_direction = (lam + mu) / (lam + 2.0 * mu) * self.direction

    def stress(self, g: np.ndarray) -> np.ndarray:
        """sigma = E(x) (lam tr(eps) I + 2 mu eps) with eps = sym(g), g (3, 3, n1, n2, n3)."""
        trace = g[0, 0] + g[1, 1]
        trace += g[2, 2]
        trace *= self.lam_field
        s = g + g.transpose(1, 0, 2, 3, 4)
        s *= self.mu_field
        for i in range(3):
            s[i, i] += trace
        return s

    def precondition(self, r: np.ndarray) -> np.ndarray:
        """(D^T C1 D)^+ r: the reference medium's Green operator, in Fourier space."""
        f = sfft.rfftn(r, axes=(1, 2, 3), workers=1)
        n = self.direction
        along = n[0] * f[0]
        along += n[1] * f[1]
        along += n[2] * f[2]
        f -= self.scaled_direction * along
        f *= self.weight
        return sfft.irfftn(f, s=self.shape, axes=(1, 2, 3), workers=1, overwrite_x=True)

    def solve(self, macro: np.ndarray, tol: float, max_iterations: int) -> Solution:
        shape = self.shape
        macro_field = np.broadcast_to(macro[:, :, None, None, None], (3, 3) + shape)
        u = np.zeros((3,) + shape)
        r = -_divergence(self.stress(np.array(macro_field)))
        z = self.precondition(r)
        rz = rz0 = _dot(r, z)
        p = z
        iterations, residual = 0, 0.0
        while rz0 > 0.0:
            residual = math.sqrt(max(rz, 0.0) / rz0)
            if residual <= tol or iterations >= max_iterations:
                break
            q = _divergence(self.stress(_gradient(p)))
            alpha = rz / _dot(p, q)
            u += alpha * p
            r -= alpha * q
            z = self.precondition(r)
            rz_next = _dot(r, z)
            p *= rz_next / rz
            p += z
            rz = rz_next
            iterations += 1
        strain = _gradient(u)
        strain += macro_field
        stress = self.stress(strain)
        strain = 0.5 * (strain + strain.transpose(1, 0, 2, 3, 4))
        stress_v = _to_voigt(stress, engineering=False)
        return Solution(strain=_to_voigt(strain, engineering=True), stress=stress_v,
                        average_stress=stress_v.mean(axis=(1, 2, 3)), iterations=iterations,
                        converged=residual <= tol, residual=residual)


def _check_iterations(max_iterations) -> int:
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
        raise UserError(f"max_iterations: must be a positive integer, got {max_iterations!r}")
    return int(max_iterations)


def solve(volume, E: tuple[float, float], nu: float, macro_strain, tol: float = 1e-6,
          max_iterations: int = 1000) -> Solution:
    """Strain and stress fields of the periodic volume (0/1 voxels) under a macroscopic strain.

    ``E`` = (Young's modulus of phase 0, of phase 1) in GPa, ``nu`` the Poisson ratio of both, ``macro_strain``
    a symmetric 3x3 tensor or a Voigt 6-vector with engineering shears. A run that reaches ``max_iterations``
    returns with ``converged`` False.
    """
    problem = _Problem(volume, E, nu)
    return problem.solve(_macro_tensor(macro_strain), _check_tol(tol), _check_iterations(max_iterations))


def effective_stiffness_c11(volume, E: tuple[float, float], nu: float, tol: float = 1e-6,
                            max_iterations: int = 1000) -> float:
    """C11 of the effective stiffness (GPa): mean sigma_11 / eps_0 under macroscopic eps_11 = eps_0, all other
    macroscopic strain components zero."""
    problem = _Problem(volume, E, nu)
    load = _macro_tensor(np.eye(6)[0])
    return float(problem.solve(load, _check_tol(tol), _check_iterations(max_iterations)).average_stress[0])


def effective_stiffness(volume, E: tuple[float, float], nu: float, tol: float = 1e-6,
                        max_iterations: int = 1000) -> np.ndarray:
    """The 6x6 effective stiffness in Voigt notation (GPa): column j is the mean stress under the unit Voigt
    strain e_j (six solves)."""
    problem = _Problem(volume, E, nu)
    tol, max_iterations = _check_tol(tol), _check_iterations(max_iterations)
    columns = [problem.solve(_macro_tensor(np.eye(6)[j]), tol, max_iterations).average_stress for j in range(6)]
    return np.stack(columns, axis=1)


def isotropic_moduli(E: float, nu: float) -> tuple[float, float]:
    """Bulk and shear moduli (K, G) of an isotropic solid."""
    return E / (3.0 * (1.0 - 2.0 * nu)), E / (2.0 * (1.0 + nu))


def hashin_shtrikman(E: tuple[float, float], nu: float, volume_fraction: float) -> dict[str, tuple[float, float]]:
    """Hashin-Shtrikman bounds {"K": (lower, upper), "G": (lower, upper)} (GPa) of an isotropic two-phase composite
    with ``volume_fraction`` of phase 1."""
    e0, e1 = _check_moduli(E)
    nu = _check_nu(nu)
    try:
        f1 = float(volume_fraction)
    except (TypeError, ValueError):
        f1 = math.nan
    if not 0.0 <= f1 <= 1.0:
        raise UserError(f"volume_fraction: must be in [0, 1], got {volume_fraction!r}")
    phases = sorted([(*isotropic_moduli(e0, nu), 1.0 - f1), (*isotropic_moduli(e1, nu), f1)])

    def bound(ref: int) -> tuple[float, float]:
        (k_r, g_r, f_r), (k_o, g_o, f_o) = phases[ref], phases[1 - ref]
        if f_o == 0.0 or k_o == k_r:
            return k_r, g_r
        k = k_r + f_o / (1.0 / (k_o - k_r) + 3.0 * f_r / (3.0 * k_r + 4.0 * g_r))
        g = g_r + f_o / (1.0 / (g_o - g_r) + 6.0 * f_r * (k_r + 2.0 * g_r) / (5.0 * g_r * (3.0 * k_r + 4.0 * g_r)))
        return k, g

    (k_lo, g_lo), (k_hi, g_hi) = bound(0), bound(1)
    return {"K": (k_lo, k_hi), "G": (g_lo, g_hi)}
