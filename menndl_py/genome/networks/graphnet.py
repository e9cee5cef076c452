"""Crystal-graph networks (CGCNN's space: Xie & Grossman, PRL 120, 145301 (2018)) whose convolutions are genome
layers: message passing with CGCNN's gated convolution (`torch_geometric.nn.CGConv`).

The input is a batch of padded graphs (n, atoms, 1 + 2K): per atom its atomic number (0: no atom), the indices of
its K nearest neighbours (-1: none) and their distances in Å (`tasks/crystal_graph/data.py`). Elements are embedded
(a linear map of the one-hot atomic number, as CGCNN's embedding of its atom features).

Layer i of a genome: a projection to `features` channels when the width changes, then one CGConv over the edges
shorter than its `cutoff`, their distances expanded in `gaussians` Gaussians spread evenly over [0, cutoff]
(CGCNN's width: the spacing), with batch normalisation when `batch_norm`; its `readout` (mean, sum or attention
pooling over the atoms of a structure, or none) adds its atom features' pooled vector to the structure's features,
so each layer may be read out or not (CGCNN reads out its last). The readouts are joined; every layer whose `dense`
gene is non-zero then adds, in genome order, a dense layer of that width with the layer's `activation` (as the
conv nets do); a linear map gives one value per structure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from menndl_py.errors import CandidateRefused
from menndl_py.genome.networks.convnet import dense_cost
from menndl_py.genome.networks.layers import ACTIVATIONS
from menndl_py.genome.space import Choice

ELEMENT_SLOTS = 119  # one-hot atomic numbers 0..118 (0: padding)
READOUTS = ("none", "mean", "sum", "attention")
GRAPH_ACTIVATIONS = {"softplus": nn.Softplus, **{k: ACTIVATIONS[k] for k in ("relu", "silu", "elu")}}
FCC_LATTICE = 3.85  # Å: a typical fcc lattice constant, for the neighbour count of the cost estimate
_FCC_SHELLS = ((1 / math.sqrt(2), 12), (1.0, 6), (math.sqrt(1.5), 24), (math.sqrt(2), 12), (math.sqrt(2.5), 24),
               (math.sqrt(3), 8), (math.sqrt(3.5), 48), (2.0, 6))


def graphnet_genes(cutoffs: tuple = (3.2, 3.8, 4.4, 5.0)) -> dict:
    """A graph network layer's genes (a convolution, its readout and its dense layer)."""
    return {"features": Choice((16, 32, 48, 64, 96, 128)), "cutoff": Choice(cutoffs),
            "gaussians": Choice((8, 16, 32, 48)), "batch_norm": Choice((False, True)), "readout": Choice(READOUTS),
            "dense": Choice((0, 32, 64, 128, 256)), "activation": Choice(tuple(GRAPH_ACTIVATIONS))}


def graphnet_training(batch_sizes: tuple = (16, 32, 64, 128, 256)) -> dict:
    """A graph network's training genes."""
    return {"learning_rate": Choice((1e-4, 3e-4, 1e-3, 3e-3, 1e-2)), "batch_size": Choice(batch_sizes),
            "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")), "weight_decay": Choice((0.0, 1e-5, 1e-4))}


def neighbours_within(cutoff: float, lattice: float = FCC_LATTICE) -> int:
    """Neighbours of an atom of an fcc crystal within `cutoff` Å (the cost estimate's edges per atom)."""
    return sum(count for distance, count in _FCC_SHELLS if distance * lattice <= cutoff)


@dataclass(frozen=True)
class GraphNet:
    """A `Network` from padded crystal graphs (atoms, 1 + 2K) to `outputs` values per structure. Its FLOPs are per
    atom (of an fcc crystal, `neighbours_within`), the size of a structure being free."""

    outputs: int = 1

    def cost(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> tuple[int, int]:
        if len(shape) != 2 or shape[1] < 3 or shape[1] % 2 == 0:
            raise CandidateRefused(f"input shape {shape} is not (atoms, 1 + 2 × neighbours)")
        if all(genes["readout"] == "none" for genes in layers):
            raise CandidateRefused("no layer reads out (every readout gene is 'none')")
        width = layers[0]["features"]
        params, flops = ELEMENT_SLOTS * width, 0
        read = 0
        for genes in layers:
            f, g = genes["features"], genes["gaussians"]
            if f != width:
                params, flops = params + width * f + f, flops + 2 * width * f
            edges = neighbours_within(genes["cutoff"])
            z = 2 * f + g
            params += 2 * (z * f + f) + (2 * f if genes["batch_norm"] else 0)
            flops += edges * (3 * g + 2 * 2 * z * f + 4 * f)
            if genes["readout"] == "attention":
                params, flops = params + f + 1, flops + 2 * f
            read += f if genes["readout"] != "none" else 0
            width = f
        p, fl = dense_cost(layers, read, self.outputs)
        return params + p, flops + fl

    def module(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> nn.Module:
        return CrystalGraphNetwork(layers, self.outputs)


class GaussianBasis(nn.Module):
    """Distances expanded in `count` Gaussians centred evenly over [0, cutoff], as wide as their spacing."""

    def __init__(self, cutoff: float, count: int):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, cutoff, count))
        self.width = cutoff / max(count - 1, 1)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((distance[:, None] - self.centres) / self.width) ** 2)


class CrystalGraphNetwork(nn.Module):
    """The module of a genome's layers (see the module's description)."""

    def __init__(self, layers: Sequence[Mapping[str, Any]], outputs: int):
        from torch_geometric.nn import CGConv
        from torch_geometric.nn.aggr import AttentionalAggregation, MeanAggregation, SumAggregation

        super().__init__()
        self.cutoffs = [float(genes["cutoff"]) for genes in layers]
        self.embed = nn.Embedding(ELEMENT_SLOTS, layers[0]["features"])
        self.projections, self.bases, self.convs, self.readouts = (nn.ModuleList() for _ in range(4))
        width, read = layers[0]["features"], 0
        for genes in layers:
            f = genes["features"]
            self.projections.append(nn.Linear(width, f) if f != width else nn.Identity())
            self.bases.append(GaussianBasis(genes["cutoff"], genes["gaussians"]))
            self.convs.append(CGConv(f, dim=genes["gaussians"], aggr="add", batch_norm=genes["batch_norm"]))
            pooling = {"mean": MeanAggregation, "sum": SumAggregation, "none": None}.get(genes["readout"])
            self.readouts.append(AttentionalAggregation(nn.Linear(f, 1)) if genes["readout"] == "attention"
                                 else pooling() if pooling is not None else None)
            read += f if genes["readout"] != "none" else 0
            width = f
        head = []
        for genes in layers:
            if genes["dense"]:
                head += [nn.Linear(read, genes["dense"]), GRAPH_ACTIVATIONS[genes["activation"]]()]
                read = genes["dense"]
        self.head = nn.Sequential(*head, nn.Linear(read, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, atoms, columns = x.shape
        k = (columns - 1) // 2
        numbers = x[:, :, 0].round().long()
        present = (numbers > 0).reshape(-1)
        node_of = torch.cumsum(present.long(), 0) - 1  # padded slot → node index
        structure = torch.arange(n, device=x.device).repeat_interleave(atoms)[present]
        slot = torch.arange(n * atoms, device=x.device).reshape(n, atoms, 1).expand(n, atoms, k)
        neighbour = x[:, :, 1:1 + k].round().long()
        distance = x[:, :, 1 + k:].float()
        base = (torch.arange(n, device=x.device) * atoms).reshape(n, 1, 1)
        edge = neighbour >= 0
        centre_node = node_of[slot[edge]]
        neighbour_node = node_of[(neighbour + base)[edge]]
        distance = distance[edge]
        h = self.embed(numbers.reshape(-1)[present])
        pooled = []
        for cutoff, projection, basis, conv, readout in zip(self.cutoffs, self.projections, self.bases, self.convs,
                                                            self.readouts):
            near = distance <= cutoff
            edge_index = torch.stack([neighbour_node[near], centre_node[near]])  # messages neighbour → centre
            h = conv(projection(h), edge_index, basis(distance[near]))
            if readout is not None:
                pooled.append(readout(h, structure, dim_size=n))
        return self.head(torch.cat(pooled, dim=1))
