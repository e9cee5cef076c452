"""Standardisation kept inside the network: an `Inputs` stage whose fixed buffers (statistics of the training split)
standardise raw features before the searched layers and map their output back to the target's units, so that the
state dict, an ONNX export and `menndl predict` all take raw values and answer in the target's units."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn as nn

from menndl_py.genome.space import Inputs


class Standardise(nn.Module):
    """x → (x - mean) / scale, per feature."""

    def __init__(self, mean, scale):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class ToUnits(nn.Module):
    """y → y * scale + mean: a network whose layers learn the standardised target answers in its units."""

    def __init__(self, mean: float, scale: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.mean


@dataclass(frozen=True)
class Scaling:
    """The `Inputs` stage of a table task's space: `features` (means, scales) standardise the inputs (None: taken as
    they are), then `inner` (a stage chosen by a gene, e.g. ElemNet's element descriptors) and the layers run, and
    `target` (mean, scale) maps their single output to the target's units (None: outputs as they are, e.g. logits).
    Without `inner` the stage has no gene of its own."""

    features: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None
    target: Optional[tuple[float, float]] = None
    inner: Optional[Inputs] = None

    @property
    def gene(self) -> str:
        return self.inner.gene if self.inner else ""

    @property
    def default(self) -> Any:
        return self.inner.default if self.inner else None

    def cost(self, value: Any, shape: tuple) -> tuple[int, int, tuple]:
        params, flops, out = self.inner.cost(value, shape) if self.inner else (0, 0, shape)
        return params, flops + (2 * shape[0] if self.features else 0), out

    def module(self, value: Any, shape: tuple, network: nn.Module) -> nn.Module:
        if self.target:
            network = nn.Sequential(network, ToUnits(*self.target))
        if self.inner:
            network = self.inner.module(value, shape, network)
        if self.features:
            network = nn.Sequential(Standardise(*self.features), network)
        return network
