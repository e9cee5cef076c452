"""Convolutional regressors (2-D or 3-D) whose blocks are genome layers, ending in dense layers and a linear head.

Layer i of a genome: a block of `convs` convolutions (`filters` channels, `kernel`-wide, size-preserving padding,
normalisation `norm`, `activation`, then `dropout`), followed by `pool` ("none", or halving the size with "max",
"avg" or a stride-2 "conv"; odd sizes round down). After the last block the features are flattened; every layer
whose `dense` gene is non-zero then adds, in genome order, a dense layer of that width with the layer's
activation; a linear map gives `outputs` values. So one genome encodes both the convolution stack and the
dense part, and every gene of every layer is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch.nn as nn

from menndl_py.errors import CandidateRefused
from menndl_py.genome.networks.conv import CONV_ACTIVATIONS, NORMS, block, block_cost, down
from menndl_py.genome.networks.layers import ACTIVATIONS
from menndl_py.genome.space import Choice

POOL = ("none", "max", "avg", "conv")
FILTERS = (4, 8, 12, 16, 24, 32, 48, 64)
DENSE = (0, 16, 32, 64, 128, 256)


def convnet_genes(filters: tuple = FILTERS, dense: tuple = DENSE) -> dict:
    """The conv-net space's genes of a layer (a block, its pooling, and its dense layer)."""
    return {"filters": Choice(filters), "kernel": Choice((3, 5)), "convs": Choice((1, 2)), "norm": Choice(NORMS),
            "activation": Choice(CONV_ACTIVATIONS), "pool": Choice(POOL), "dropout": Choice((0.0, 0.1, 0.2)),
            "dense": Choice(dense)}


def convnet_training(batch_sizes: tuple = (8, 16, 32, 64)) -> dict:
    """The conv-net space's training genes."""
    return {"learning_rate": Choice((1e-4, 3e-4, 1e-3, 3e-3)), "batch_size": Choice(batch_sizes),
            "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")), "weight_decay": Choice((0.0, 1e-5, 1e-4))}


def dense_cost(layers: Sequence[Mapping[str, Any]], width: int, outputs: int) -> tuple[int, int]:
    """(parameters, FLOPs) of the dense layers that the layers' `dense` genes add after `width` features, and of
    the linear map to `outputs` values."""
    params = flops = 0
    for genes in layers:
        if genes["dense"]:
            params += width * genes["dense"] + genes["dense"]
            flops += 2 * width * genes["dense"]
            width = genes["dense"]
    return params + width * outputs + outputs, flops + 2 * width * outputs


@dataclass(frozen=True)
class ConvNet:
    """A `Network` for regression from images (dims=2, channels first) or volumes (dims=3)."""

    dims: int = 3
    outputs: int = 1

    def _sizes(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> list[tuple]:
        """The spatial size at the input of each block, and after the last; refuses a stack that pools to nothing."""
        _, *size = shape
        if len(size) != self.dims:
            raise CandidateRefused(f"input shape {shape} is not channels + {self.dims} spatial sizes")
        sizes, pools = [tuple(size)], 0
        for genes in layers:
            if genes["pool"] != "none":
                pools += 1
                size = [s // 2 for s in size]
                if min(size) < 1:
                    raise CandidateRefused(f"{pools} poolings shrink the {'×'.join(map(str, shape[1:]))} input "
                                           f"below 1 voxel")
            sizes.append(tuple(size))
        return sizes

    def cost(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> tuple[int, int]:
        sizes = self._sizes(layers, shape)
        params = flops = 0
        c = shape[0]
        for genes, size, after in zip(layers, sizes, sizes[1:]):
            if genes["norm"] == "instance" and math.prod(size) == 1:
                raise CandidateRefused("instance normalisation of a 1-voxel feature map")
            p, f = block_cost(genes, c, math.prod(size), self.dims)
            params, flops, c = params + p, flops + f, genes["filters"]
            if genes["pool"] == "conv":
                params += 2 ** self.dims * c * c + c
                flops += 2 * 2 ** self.dims * c * c * math.prod(after)
        p, f = dense_cost(layers, c * math.prod(sizes[-1]), self.outputs)
        return params + p, flops + f

    def module(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> nn.Module:
        sizes = self._sizes(layers, shape)
        parts, c = [], shape[0]
        for genes in layers:
            parts.append(block(genes, c, self.dims))
            c = genes["filters"]
            if genes["pool"] != "none":
                parts.append(down(genes["pool"], c, self.dims))
        parts.append(nn.Flatten())
        width = c * math.prod(sizes[-1])
        for genes in layers:
            if genes["dense"]:
                parts += [nn.Linear(width, genes["dense"]), ACTIVATIONS[genes["activation"]]()]
                width = genes["dense"]
        parts.append(nn.Linear(width, self.outputs))
        return nn.Sequential(*parts)
