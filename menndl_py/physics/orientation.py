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

import numpy as np
import torch
import torch.nn.functional as F

SMOOTHING = 1e-7  # ε of the smoothed |r_v|, radians of half-angle
THRESHOLDS = (1.0, 2.0, 5.0)  # degrees: the shares of disorientations under these are reported


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


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton products a·b of quaternions (w, x, y, z), broadcast."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - (av * bv).sum(-1, keepdim=True)
    v = aw * bv + bw * av + torch.linalg.cross(av, bv, dim=-1)
    return torch.cat([w, v], dim=-1)


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
