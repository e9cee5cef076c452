"""Crystal orientations of cubic crystals as network targets: the 24 proper rotations of cubic symmetry, a
differentiable disorientation angle in torch (the training loss), and the exact disorientation from orix (the
metric).

Target: the unit quaternion (w, x, y, z), in orix's convention (sample to crystal; symmetry acts on the left, s·q).
The network outputs 4 numbers, normalised to a unit quaternion. Why not the continuous 6-D representation (two
columns of the rotation matrix, Zhou et al. 2019)? Its advantage is that a network need not jump where a 4-D
representation must pick one of q and -q; here the loss takes the minimum over q's 48 equivalents (24 symmetry
rotations, each as ±q), so no representative is imposed, and under cubic symmetry no representation of the
orientation is free of jumps anyway (the quotient of SO(3) by the group has no continuous section). The quaternion
makes the symmetry minimum one batched product with 24 constants, is what EBSD software stores, and its angle is
exact in a few operations.

The alternative target, the cubic tensor (`cubic_tensor`, 15 numbers): the sum of r⊗r⊗r⊗r over the crystal's three
cube axes r in the sample frame. The cubic symmetries only permute those axes and flip their signs, so every
equivalent of an orientation has the same tensor, and different orientations have different ones: a target with
no symmetry left to take a minimum over, which a network's last layer can reach linearly, trained with the squared
distance (`tensor_loss`). A network's tensor is read back as the orientation whose tensor lies nearest it
(`tensor_orientations`: the nearest of a grid over the fundamental zone, refined by Gauss-Newton steps).

Loss: the disorientation angle itself (radians, so the training minimises the fitness, the mean angle). For each
symmetry equivalent e = s·q_t of the truth, the relative rotation r = conj(e)·q_p has angle 2·atan2(|r_v|, |r_w|);
this is accurate in float32 to well under 1e-4°, where 2·acos(|<q_p, e>|) loses ~0.03° near 0 and has an infinite
gradient there. |r_v| is smoothed as sqrt(|r_v|² + ε²) − ε (ε = 1e-7 rad), so the gradient is finite everywhere and
zero at a perfect prediction, and the angle is off by at most 2ε (1e-5°). The minimum over the 24 equivalents is a
hard minimum: the gradient flows through the nearest equivalent, and ties happen only on the boundary of the
fundamental zone (a set of measure zero), where both sides give the same angle.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

SMOOTHING = 1e-7  # ε of the smoothed |r_v|, radians of half-angle
THRESHOLDS = (1.0, 2.0, 5.0)  # degrees: the shares of disorientations under these are reported
TENSOR_INDICES = tuple((a, b, c, d) for a in range(3) for b in range(a, 3) for c in range(b, 3) for d in range(c, 3))
GRID_DEGREES = 10.0  # the grid `tensor_orientations` starts from...
REFINE_STEPS = 6     # ...then this many Gauss-Newton steps, with slopes by differences of DIFFERENCE radians
DIFFERENCE = 1e-4


@functools.lru_cache(maxsize=1)
def cubic_symmetry() -> np.ndarray:
    """The 24 proper rotations of the cubic point group 432 (orix's `symmetry.O`) as unit quaternions (24 × 4)."""
    from orix.quaternion import symmetry

    return np.ascontiguousarray(symmetry.O.data, dtype=np.float64)


def normalise(output: torch.Tensor) -> torch.Tensor:
    """Network outputs (N × 4) as unit quaternions."""
    return F.normalize(output, dim=-1, eps=1e-12)


def disorientation(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Differentiable disorientation angles (N, radians) between network outputs (N × 4, normalised here) and
    true unit quaternions (N × 4), under cubic symmetry."""
    p = normalise(output)
    s = torch.as_tensor(cubic_symmetry(), dtype=p.dtype, device=p.device)
    e = _product(s[None, :, :], target.to(p.dtype)[:, None, :])                  # N × 24 × 4: s·q_t
    ew, ev = e[..., 0], e[..., 1:]
    pw, pv = p[:, None, 0], p[:, None, 1:]
    rw = ew * pw + (ev * pv).sum(-1)                                              # conj(e)·q_p
    rv = ew[..., None] * pv - pw[..., None] * ev - torch.linalg.cross(ev, pv, dim=-1)
    length = torch.sqrt((rv * rv).sum(-1) + SMOOTHING ** 2) - SMOOTHING
    return (2 * torch.atan2(length, rw.abs())).min(dim=1).values


def disorientation_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss: the mean disorientation angle in radians."""
    return disorientation(output, target).mean()


def cubic_tensor(quaternions: torch.Tensor) -> torch.Tensor:
    """The cubic tensors (N × 15) of unit quaternions (N × 4): the distinct components of Σ_i r_i⊗r_i⊗r_i⊗r_i over
    the rows r_i of the rotation matrix (the cube axes), each times the square root of how often it occurs in the
    full tensor, so that the Euclidean distance between two is the Frobenius distance of the tensors."""
    w, x, y, z = F.normalize(quaternions, dim=-1).unbind(-1)
    rows = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).unflatten(-1, (3, 3))
    return rows[..., _tensor_index()].prod(-1).sum(-2) * _tensor_weights().to(rows)  # over the 3 axes


def tensor_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss of the tensor target: the mean squared distance between network outputs (N × 15) and the
    cubic tensors of the true unit quaternions (N × 4); zero for every symmetry equivalent of the truth."""
    return (output - cubic_tensor(target.to(output.dtype))).square().sum(-1).mean()


@torch.no_grad()
def tensor_orientations(tensors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(unit quaternions N × 4, misfits N) read from network outputs (N × 15): for each, the orientation whose
    cubic tensor lies nearest it, and that distance (0 for an exact tensor). The nearest of a GRID_DEGREES grid
    over the fundamental zone, then REFINE_STEPS Gauss-Newton steps (small turns about the three axes, each kept
    only if it comes nearer): within 1e-5° for an exact tensor. Outputs with a non-finite value give NaN, as a
    diverged network's quaternion does."""
    tensors = tensors.detach().double().cpu()
    finite = torch.isfinite(tensors).all(-1)
    tensors = torch.where(finite[:, None], tensors, 0.0)
    grid, grid_tensors = _grid()
    nearest = torch.cdist(tensors, grid_tensors).argmin(1)
    q, here = grid[nearest], grid_tensors[nearest]  # here: q's tensor
    axes = torch.eye(3, dtype=torch.float64)
    nudges = _turn(DIFFERENCE * axes)[None]
    for _ in range(REFINE_STEPS):
        slopes = (cubic_tensor(_product(q[:, None], nudges)) - here[:, None]) / DIFFERENCE  # N × 3 × 15
        residual = tensors - here
        step = torch.linalg.solve(slopes @ slopes.transpose(1, 2) + 1e-12 * axes, slopes @ residual[..., None])
        moved = F.normalize(_product(q, _turn(step[..., 0])), dim=-1)
        there = cubic_tensor(moved)
        nearer = ((there - tensors).norm(dim=-1) < residual.norm(dim=-1))[:, None]
        q, here = torch.where(nearer, moved, q), torch.where(nearer, there, here)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    misfit = (here - tensors).norm(dim=-1)
    return torch.where(finite[:, None], q, nan).numpy(), torch.where(finite, misfit, nan).numpy()


def _turn(vectors: torch.Tensor) -> torch.Tensor:
    """Unit quaternions of rotation vectors (… × 3, radians)."""
    angle = vectors.norm(dim=-1, keepdim=True)
    return torch.cat([torch.cos(angle / 2), torch.sin(angle / 2) * vectors / angle.clamp_min(1e-300)], -1)


@functools.lru_cache(maxsize=1)
def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Unit quaternions every GRID_DEGREES over the cubic fundamental zone (orix), and their cubic tensors."""
    from orix.quaternion import symmetry
    from orix.sampling import get_sample_fundamental

    grid = torch.from_numpy(get_sample_fundamental(resolution=GRID_DEGREES, point_group=symmetry.O).data.copy())
    return grid, cubic_tensor(grid)


@functools.lru_cache(maxsize=1)
def _tensor_index() -> torch.Tensor:
    return torch.tensor(TENSOR_INDICES)


@functools.lru_cache(maxsize=1)
def _tensor_weights() -> torch.Tensor:
    """√(how many index orders each of TENSOR_INDICES stands for in the full 3×3×3×3 tensor)."""
    return torch.tensor([math.sqrt(math.factorial(4) / math.prod(math.factorial(i.count(v)) for v in set(i)))
                         for i in TENSOR_INDICES], dtype=torch.float64)


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton products a·b of quaternions (w, x, y, z), broadcast."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - (av * bv).sum(-1, keepdim=True)
    v = aw * bv + bw * av + torch.linalg.cross(av, bv, dim=-1)
    return torch.cat([w, v], dim=-1)


def fundamental_zone(quaternions) -> np.ndarray:
    """Unit quaternions (N × 4) brought into the cubic fundamental zone: of the 24 equivalents s·q, the one nearest
    the identity (largest |w|), with w >= 0. The zone is the set of rotations nearer the identity than any
    symmetry rotation, so this is orix's `Orientation.reduce()` under `symmetry.O`, in one batched product
    instead of a call whose fixed cost is about 20 ms."""
    q = torch.as_tensor(np.asarray(quaternions, dtype=np.float64).reshape(-1, 4))
    equivalents = _product(torch.from_numpy(cubic_symmetry())[None], q[:, None])  # N × 24 × 4
    nearest = equivalents[..., 0].abs().argmax(1)
    equivalent = equivalents[torch.arange(len(q)), nearest].numpy()
    return np.where(equivalent[:, :1] < 0, -equivalent, equivalent)


def disorientation_degrees(predicted, truth) -> np.ndarray:
    """Exact disorientation angles in degrees between predicted and true quaternions (N × 4 each; predictions
    need not be normalised), under cubic symmetry, computed by orix; NaN for a prediction of length 0 or with
    non-finite values (orix would call it 0°)."""
    from orix.quaternion import Orientation, symmetry

    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, 4)
    length = np.linalg.norm(predicted, axis=1, keepdims=True)
    usable = (np.isfinite(length) & (length > 0))[:, 0]
    a = Orientation(np.where(usable[:, None], predicted / np.where(usable[:, None], length, 1), [1.0, 0, 0, 0]),
                    symmetry=symmetry.O)
    b = Orientation(np.asarray(truth, dtype=np.float64).reshape(-1, 4), symmetry=symmetry.O)
    return np.where(usable, a.angle_with(b, degrees=True), np.nan)


def summary(degrees) -> dict[str, float]:
    """Mean and median disorientation (degrees) and the shares under 1°, 2° and 5°."""
    degrees = np.asarray(degrees, dtype=np.float64)
    out = {"mean_disorientation": float(degrees.mean()), "median_disorientation": float(np.median(degrees))}
    out.update({f"share_under_{t:g}deg": float(np.mean(degrees < t)) for t in THRESHOLDS})
    return out
