"""Fully convolutional encoder–decoder networks (U-Net-like) whose levels are genome layers.

Level i of a genome of depth L: a block of `convs` convolutions with `filters` channels and a `kernel`-wide
window at 1/2**i of the input's size; levels 0..L-2 end by halving the size (`down`), the last is the bottleneck.
The decoder climbs back: at level i it doubles the size (`up`), joins the encoder's level-i output when `skip` is
set, and applies a block like the encoder's. A 1×1 convolution gives `classes` channels at the input's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from menndl_py.errors import CandidateRefused
from menndl_py.genome.networks.layers import ACTIVATIONS
from menndl_py.genome.space import Choice

DOWN = ("max", "avg", "conv")
UP = ("transpose", "bilinear", "nearest")
NORMS = ("none", "batch", "instance", "group")
CONV_ACTIVATIONS = ("relu", "elu", "gelu", "silu", "leaky_relu")
# The encoder–decoder space of the segmentation tasks: a level's genes, and the training genes.
ENCODER_DECODER_GENES = {
    "filters": Choice((4, 8, 12, 16, 24, 32, 48, 64)),
    "kernel": Choice((3, 5, 7)),
    "convs": Choice((1, 2, 3)),
    "activation": Choice(CONV_ACTIVATIONS),
    "norm": Choice(NORMS),
    "down": Choice(DOWN),
    "up": Choice(UP),
    "skip": Choice((False, True)),
    "dropout": Choice((0.0, 0.1, 0.2)),
}
ENCODER_DECODER_TRAINING = {
    "learning_rate": Choice((1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    "batch_size": Choice((4, 8, 16, 32)),
    "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")),
    "weight_decay": Choice((0.0, 1e-5, 1e-4)),
}


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 4), channels)
    return nn.Identity()


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def block(genes: Mapping[str, Any], channels_in: int, dims: int) -> nn.Sequential:
    """`convs` × (convolution → normalisation → activation), then dropout."""
    parts, c = [], channels_in
    for _ in range(genes["convs"]):
        parts += [_conv(dims)(c, genes["filters"], genes["kernel"], padding=genes["kernel"] // 2),
                  _norm(genes["norm"], genes["filters"], dims), ACTIVATIONS[genes["activation"]]()]
        c = genes["filters"]
    if genes["dropout"] > 0:
        parts.append((nn.Dropout2d if dims == 2 else nn.Dropout3d)(genes["dropout"]))
    return nn.Sequential(*parts)


def block_cost(genes: Mapping[str, Any], channels_in: int, voxels: int, dims: int) -> tuple[int, int]:
    """(parameters, FLOPs) of `block` on `voxels` positions."""
    params = flops = 0
    c, f, window = channels_in, genes["filters"], genes["kernel"] ** dims
    for _ in range(genes["convs"]):
        params += window * c * f + f + (0 if genes["norm"] == "none" else 2 * f)
        flops += 2 * window * c * f * voxels
        c = f
    return params, flops


def down(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "max":
        return (nn.MaxPool2d if dims == 2 else nn.MaxPool3d)(2)
    if kind == "avg":
        return (nn.AvgPool2d if dims == 2 else nn.AvgPool3d)(2)
    return _conv(dims)(channels, channels, 2, stride=2)


class _Up(nn.Module):
    def __init__(self, kind: str, channels_in: int, channels_out: int, dims: int):
        super().__init__()
        self.kind = kind
        if kind == "transpose":
            self.conv = (nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d)(channels_in, channels_out, 2,
                                                                                   stride=2)
        else:
            self.mode = "nearest" if kind == "nearest" else ("bilinear" if dims == 2 else "trilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "transpose":
            return self.conv(x)
        return nn.functional.interpolate(x, scale_factor=2, mode=self.mode,
                                         **({} if self.mode == "nearest" else {"align_corners": False}))


def up_channels(kind: str, channels_in: int, channels_out: int) -> int:
    return channels_out if kind == "transpose" else channels_in


class EncoderDecoderModule(nn.Module):
    def __init__(self, levels: Sequence[Mapping[str, Any]], channels: int, classes: int, dims: int):
        super().__init__()
        self.skips = [bool(g["skip"]) for g in levels[:-1]]
        self.encode, self.down, c = nn.ModuleList(), nn.ModuleList(), channels
        for i, genes in enumerate(levels):
            self.encode.append(block(genes, c, dims))
            c = genes["filters"]
            if i < len(levels) - 1:
                self.down.append(down(genes["down"], c, dims))
        self.up, self.decode = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(levels) - 1)):
            genes = levels[i]
            self.up.append(_Up(genes["up"], c, genes["filters"], dims))
            c_in = up_channels(genes["up"], c, genes["filters"]) + (genes["filters"] if genes["skip"] else 0)
            self.decode.append(block(genes, c_in, dims))
            c = genes["filters"]
        self.head = _conv(dims)(c, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = []
        for i, encode in enumerate(self.encode):
            x = encode(x)
            if i < len(self.down):
                kept.append(x)
                x = self.down[i](x)
        for up, decode in zip(self.up, self.decode):
            x, skip = up(x), kept.pop()
            x = decode(torch.cat([x, skip], 1) if self.skips[len(kept)] else x)
        return self.head(x)


@dataclass(frozen=True)
class EncoderDecoder:
    """A `Network` for per-pixel (or per-voxel) classification: the output has the input's spatial size."""

    classes: int
    dims: int = 2

    def cost(self, levels: Sequence[Mapping[str, Any]], shape: tuple) -> tuple[int, int]:
        channels, *size = shape
        halvings = len(levels) - 1
        if any(s % 2 ** halvings for s in size):
            raise CandidateRefused(f"{len(levels)} levels halve the size {halvings} times, but the input "
                                   f"{'×'.join(map(str, size))} is not divisible by {2 ** halvings}")
        voxels = math.prod(size)
        bottom = voxels // 2 ** (halvings * self.dims)
        if bottom == 1 and levels[-1]["norm"] in ("instance", "batch"):
            raise CandidateRefused(f"{levels[-1]['norm']} normalisation at a 1-pixel bottleneck")
        params = flops = 0
        c = channels
        for i, genes in enumerate(levels):
            p, f = block_cost(genes, c, voxels // 2 ** (i * self.dims), self.dims)
            params, flops, c = params + p, flops + f, genes["filters"]
            if i < halvings and genes["down"] == "conv":
                params += 2 ** self.dims * c * c + c
                flops += 2 * 2 ** self.dims * c * c * voxels // 2 ** ((i + 1) * self.dims)
        for i in reversed(range(halvings)):
            genes, at = levels[i], voxels // 2 ** (i * self.dims)
            if genes["up"] == "transpose":
                params += 2 ** self.dims * c * genes["filters"] + genes["filters"]
                flops += 2 * c * genes["filters"] * at
            c_in = up_channels(genes["up"], c, genes["filters"]) + (genes["filters"] if genes["skip"] else 0)
            p, f = block_cost(genes, c_in, at, self.dims)
            params, flops, c = params + p, flops + f, genes["filters"]
        return params + c * self.classes + self.classes, flops + 2 * c * self.classes * voxels

    def module(self, levels: Sequence[Mapping[str, Any]], shape: tuple) -> nn.Module:
        return EncoderDecoderModule(levels, shape[0], self.classes, self.dims)
