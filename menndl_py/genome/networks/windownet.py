"""2-D CNNs on the window images of the localization task, with valid convolutions, and their exact evaluation
over whole periodic planes.

A sample is a voxel's periodic w×w×w neighbourhood read as a w-channel w×w image (channel i is the slice at
offset i − w//2 along x1). Layer i of a genome: `convs` unpadded convolutions (`filters` channels, `kernel` wide,
normalisation `norm`, `activation`), then element-wise `dropout`, then `pool` ("none", or 2×2 windows at stride 2
by "max", "avg" or a learned "conv"; odd sizes round down). The features are then flattened; every layer whose
`dense` gene is non-zero adds, in genome order, a dense layer of that width; a linear map gives the voxel's value.

Nothing in such a network depends on where its window lies, so the network applied at every voxel of an x1 plane
of a periodic volume is one fully convolutional network on the plane's slab (the w planes around it, as channels):
the convolutions run over the whole periodic plane, each pooling doubles the dilation of all that follow instead
of shrinking the map, and the first dense layer is a convolution over the last feature map. `forward` takes window
images (N, w, w, w) and gives (N, 1), or slabs (M, 1, w, n2, n3) (see `slabs`) and gives their planes' values
(M, 1, n2, n3): the same value for the same voxel, but each voxel's share of the work is done once instead of
once for every window it lies in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from menndl_py.errors import CandidateRefused
from menndl_py.genome.networks.convnet import dense_cost
from menndl_py.genome.networks.layers import ACTIVATIONS

NORMS = ("none", "batch")  # per-window statistics (instance, group) would not carry over to slabs
POOL = ("none", "max", "avg", "conv")


def _wrap(x: torch.Tensor, reach: int) -> torch.Tensor:
    """Planes (M, C, n2, n3) padded periodically with `reach` voxels after their end on both axes."""
    return F.pad(x, (0, reach, 0, reach), mode="circular")


class _Conv(nn.Module):
    """A valid convolution, its normalisation and activation."""

    def __init__(self, channels_in: int, genes: Mapping[str, Any]):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, genes["filters"], genes["kernel"])
        self.norm = nn.BatchNorm2d(genes["filters"]) if genes["norm"] == "batch" else nn.Identity()
        self.activation = ACTIVATIONS[genes["activation"]]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))

    def field(self, x: torch.Tensor, dilation: int) -> torch.Tensor:
        x = _wrap(x, (self.conv.kernel_size[0] - 1) * dilation)
        return self.activation(self.norm(F.conv2d(x, self.conv.weight, self.conv.bias, dilation=dilation)))


class _Pool(nn.Module):
    """2×2 pooling at stride 2 (max, average, or a learned 2×2 convolution)."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(channels, channels, 2, stride=2) if kind == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.conv(x)
        return (F.max_pool2d if self.kind == "max" else F.avg_pool2d)(x, 2)

    def field(self, x: torch.Tensor, dilation: int) -> torch.Tensor:
        n2, n3 = x.shape[-2:]
        x = _wrap(x, dilation)
        if self.conv is not None:
            return F.conv2d(x, self.conv.weight, self.conv.bias, dilation=dilation)
        corners = torch.stack([x[..., a:a + n2, b:b + n3] for a in (0, dilation) for b in (0, dilation)])
        return corners.amax(0) if self.kind == "max" else corners.mean(0)


class _Dense(nn.Module):
    """A dense layer (and its activation, unless it is the output). The first one flattens the last feature map
    (`side`×`side` positions, the first `offset` voxels before the centre): on slabs, a convolution over it."""

    def __init__(self, width_in: int, width: int, activation: str | None, side: int = 0, offset: int = 0):
        super().__init__()
        self.linear = nn.Linear(width_in, width)
        self.activation = ACTIVATIONS[activation]() if activation else nn.Identity()
        self.side, self.offset = side, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x.flatten(1)))

    def field(self, x: torch.Tensor, dilation: int) -> torch.Tensor:
        w, b = self.linear.weight, self.linear.bias
        if not self.side:
            return self.activation(F.conv2d(x, w[:, :, None, None], b))
        weight = w.reshape(len(w), -1, self.side, self.side)
        out = F.conv2d(_wrap(x, (self.side - 1) * dilation), weight, b, dilation=dilation)
        return self.activation(torch.roll(out, (self.offset, self.offset), dims=(-2, -1)))


class WindowCNN(nn.Module):
    """The network of a genome; see the module docstring for its two inputs."""

    def __init__(self, steps: list[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            for step in self.steps:
                x = step(x)
            return x
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"expected window images (N, w, w, w) or slabs (M, 1, w, n2, n3), got {tuple(x.shape)}")
        x, dilation = x[:, 0], 1
        for step in self.steps:
            if isinstance(step, nn.Dropout):
                x = step(x)  # element-wise: the same on both inputs
            else:
                x = step.field(x, dilation)
                dilation *= 2 if isinstance(step, _Pool) else 1
        return x


def slabs(volumes: torch.Tensor, window: int) -> torch.Tensor:
    """Volumes (N, n1, n2, n3) → their slabs (N·n1, 1, window, n2, n3): for each x1 plane, the `window` planes
    around it (periodic), ordered as the channels of the window images."""
    n1 = volumes.shape[1]
    rows = (torch.arange(n1)[:, None] + torch.arange(window) - window // 2) % n1
    return volumes[:, rows.to(volumes.device)].flatten(0, 1)[:, None]


@dataclass(frozen=True)
class WindowNet:
    """A `Network` for regression of one value per voxel from its (w, w, w) window."""

    outputs: int = 1

    @staticmethod
    def _sides(layers: Sequence[Mapping[str, Any]], shape: tuple) -> list[list[int]]:
        """Per layer, the feature map's side after each of its convolutions and after its pooling; refuses a
        layer whose convolution or pooling does not fit."""
        w, *rest = shape
        if tuple(rest) != (w, w):
            raise CandidateRefused(f"input shape {shape} is not a (w, w, w) window")
        side, sides = w, []
        for i, genes in enumerate(layers):
            after = []
            for _ in range(genes["convs"]):
                if side < genes["kernel"]:
                    raise CandidateRefused(f"layer {i}: a {genes['kernel']}×{genes['kernel']} valid convolution "
                                           f"does not fit its {side}×{side} input")
                side -= genes["kernel"] - 1
                after.append(side)
            if genes["pool"] != "none":
                if side < 2:
                    raise CandidateRefused(f"layer {i}: 2×2 pooling does not fit its 1×1 input")
                side //= 2
            sides.append(after + [side])
        return sides

    def cost(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> tuple[int, int]:
        sides = self._sides(layers, shape)
        params = flops = 0
        c = shape[0]
        for genes, after in zip(layers, sides):
            f, k = genes["filters"], genes["kernel"]
            for side in after[:genes["convs"]]:
                params += k * k * c * f + f + (2 * f if genes["norm"] == "batch" else 0)
                flops += 2 * k * k * c * f * side * side
                c = f
            if genes["pool"] == "conv":
                params += 4 * c * c + c
                flops += 8 * c * c * after[-1] ** 2
        p, f = dense_cost(layers, c * (sides[-1][-1] if sides else shape[1]) ** 2, self.outputs)
        return params + p, flops + f

    def module(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> nn.Module:
        sides = self._sides(layers, shape)
        steps, c = [], shape[0]
        for genes in layers:
            for _ in range(genes["convs"]):
                steps.append(_Conv(c, genes))
                c = genes["filters"]
            if genes["dropout"] > 0:
                steps.append(nn.Dropout(genes["dropout"]))
            if genes["pool"] != "none":
                steps.append(_Pool(genes["pool"], c))
        side = sides[-1][-1] if sides else shape[1]
        width, first = c * side * side, {"side": side, "offset": shape[1] // 2}
        for genes in [g for g in layers if g["dense"]] + [None]:
            out, activation = (genes["dense"], genes["activation"]) if genes else (self.outputs, None)
            steps.append(_Dense(width, out, activation, **first))
            width, first = out, {}
        return WindowCNN(steps)
