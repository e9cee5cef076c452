"""Dense networks: a stack of layers of one kind and an output head; cost figures and torch modules."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU, "tanh": nn.Tanh,
               "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


class Layer(Protocol):
    """One layer gene dict → cost figures and a torch module, for a given input shape."""

    def cost(self, genes: Mapping[str, Any], shape: tuple) -> tuple[int, int, tuple]:
        """(parameters, FLOPs per sample, output shape); raises CandidateRefused."""

    def module(self, genes: Mapping[str, Any], shape: tuple) -> nn.Module:
        """The torch module for these genes."""


@dataclass(frozen=True)
class Stack:
    """A `Network`: the genome's layers in sequence, each of kind `layer`, then `head`."""

    layer: Layer
    head: Layer

    def cost(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> tuple[int, int]:
        params = flops = 0
        for genes in layers:
            p, f, shape = self.layer.cost(genes, shape)
            params, flops = params + p, flops + f
        p, f, _ = self.head.cost({}, shape)
        return params + p, flops + f

    def module(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> nn.Module:
        modules = []
        for genes in layers:
            modules.append(self.layer.module(genes, shape))
            shape = self.layer.cost(genes, shape)[2]
        modules.append(self.head.module({}, shape))
        return nn.Sequential(*modules)


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
