"""Element descriptors as an input gene: beside the 86 fractions, their average of an element table (the mat2vec,
magpie or oliynyk tables the crabnet package bundles), computed inside the network so that data and predictions
stay fractions. Each table's columns are standardised over the 86 elements; an element a table lacks counts as the
column's mean."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from menndl_py.tasks.elemnet.data import ELEMENTS, crabnet_data

FRACTIONS = "fractions"  # the fractions alone, as ElemNet takes them
TABLES = ("magpie", "oliynyk", "mat2vec")
INPUTS = (FRACTIONS, *TABLES)  # the values of the gene


@functools.cache
def table(name: str) -> np.ndarray:
    """(86, descriptors): the table's rows for ELEMENTS, standardised, float32."""
    path = crabnet_data("element_properties", (f"{name}.csv",)) / f"{name}.csv"
    values = pd.read_csv(path, index_col=0).reindex(list(ELEMENTS)).astype(np.float64)
    values = (values - values.mean()) / values.std().replace(0.0, 1.0)
    return np.ascontiguousarray(values.fillna(0.0).to_numpy(np.float32))  # Horovod broadcasts it


class WithDescriptors(nn.Module):
    """x → [x, x @ table]: the fractions and their weighted average of the table's (fixed) descriptors."""

    def __init__(self, descriptors: np.ndarray):
        super().__init__()
        self.register_buffer("descriptors", torch.as_tensor(descriptors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x @ self.descriptors], dim=1)


@dataclass(frozen=True)
class ElementDescriptors:
    """The `Inputs` stage of ElemNet's space, chosen by the once-per-genome gene `inputs`: the fractions alone
    (the default, for genomes written without the gene) or with one table's averages."""

    gene: str = "inputs"
    default: str = FRACTIONS

    def cost(self, value: Any, shape: tuple) -> tuple[int, int, tuple]:
        if value == FRACTIONS:
            return 0, 0, shape
        n = table(value).shape[1]
        return 0, 2 * shape[0] * n, (shape[0] + n,)

    def module(self, value: Any, shape: tuple, network: nn.Module) -> nn.Module:
        return network if value == FRACTIONS else nn.Sequential(WithDescriptors(table(value)), network)
