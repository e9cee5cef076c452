"""Layer kinds shared by tasks: cost figures and torch modules from gene dicts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU, "tanh": nn.Tanh,
               "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


@dataclass(frozen=True)
class Dense:
    """Linear → optional batch norm → activation → optional dropout. Genes: width, activation, dropout, batch_norm."""

    def cost(self, genes: Mapping[str, Any], shape: tuple) -> tuple[int, int, tuple]:
        n_in, width = math.prod(shape), genes["width"]
        params = n_in * width + width + (2 * width if genes["batch_norm"] else 0)
        return params, 2 * n_in * width, (width,)

    def module(self, genes: Mapping[str, Any], shape: tuple) -> nn.Module:
        parts = [nn.Flatten()] if len(shape) > 1 else []
        parts.append(nn.Linear(math.prod(shape), genes["width"]))
        if genes["batch_norm"]:
            parts.append(nn.BatchNorm1d(genes["width"]))
        parts.append(ACTIVATIONS[genes["activation"]]())
        if genes["dropout"] > 0:
            parts.append(nn.Dropout(genes["dropout"]))
        return nn.Sequential(*parts)


@dataclass(frozen=True)
class LinearHead:
    """The output layer: a linear map to `outputs` values (flattening its input first)."""

    outputs: int

    def cost(self, genes: Mapping[str, Any], shape: tuple) -> tuple[int, int, tuple]:
        n_in = math.prod(shape)
        return n_in * self.outputs + self.outputs, 2 * n_in * self.outputs, (self.outputs,)

    def module(self, genes: Mapping[str, Any], shape: tuple) -> nn.Module:
        linear = nn.Linear(math.prod(shape), self.outputs)
        return nn.Sequential(nn.Flatten(), linear) if len(shape) > 1 else linear
