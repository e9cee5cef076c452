"""ElemNet: formation enthalpy (eV/atom) from the 86 element fractions of a composition (Jha et al., Sci. Rep. 2018);
the gene `inputs` may add their average of an element descriptor table (mat2vec, magpie, oliynyk) inside the network.

Data: OQMD formation enthalpies with CrabNet's train/val/test split (bundled in the crabnet 2.0.8 wheel).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from menndl_py.config import setting
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.genome import Choice, Genome, SearchSpace
from menndl_py.genome.networks.layers import Dense, LinearHead, Stack
from menndl_py.tasks.base import Task, error_sums
from menndl_py.tasks.elemnet import data as elemnet_data
from menndl_py.tasks.elemnet.descriptors import FRACTIONS, INPUTS, ElementDescriptors
from menndl_py.tasks.files.formulas import formula_fractions

# ElemNet's published 17-layer network: (width, dropout after the layer) per layer.
_ELEMNET_17 = ([(1024, 0.0)] * 3 + [(1024, 0.2)] + [(512, 0.0)] * 2 + [(512, 0.1)] + [(256, 0.0)] * 2
               + [(256, 0.3)] + [(128, 0.0)] * 2 + [(128, 0.2)] + [(64, 0.0)] * 2 + [(32, 0.0)])
# A plain MLP chosen by hand in a minute: on all training rows, 10 minutes on 2 CPU cores, test MAE 0.0486 eV/atom
# (issue 17's figure, its weight decay unstated; this genome takes 1e-4, a value of the space).
HAND_MLP = "MLP 512-512-256-128 (hand-made)"


@dataclass(frozen=True)
class ElemNetOptions:
    train_size: Optional[int] = setting(None, min=1)
    val_size: Optional[int] = setting(None, min=1)
    test_size: Optional[int] = setting(None, min=1)
    max_abs_enthalpy: float = setting(elemnet_data.DEFAULT_MAX_ABS_ENTHALPY, min=0.1)  # eV/atom: the data recipe
    forest_trees: int = setting(100, min=1, max=10_000)


class ElemNetTask(Task):
    name = "elemnet"
    summary = "formation enthalpy from composition (OQMD, 86 element fractions), fitness: validation MAE"
    metric = "mae"
    metric_names = ("mae", "rmse")
    unit = "eV/atom"
    latency_per = (10_000.0, "10,000 compositions")
    higher_is_better = False
    Options = ElemNetOptions
    predicts = "table"
    ensembled = "mean"

    @property
    def data_path(self) -> Path:
        """elemnet.h5 for the default cut, one file per other cut: a changed config never meets stale data."""
        cut = getattr(self.options, "max_abs_enthalpy", None)  # subclasses (synthetic) may have other options
        if cut in (None, elemnet_data.DEFAULT_MAX_ABS_ENTHALPY):
            return self.data_dir / f"{self.name}.h5"
        digest = hashlib.sha1(json.dumps({"max_abs_enthalpy": cut}).encode()).hexdigest()[:10]
        return self.data_dir / f"{self.name}-{digest}.h5"

    def make_data(self, share: Solo = Solo()) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        counts = elemnet_data.make_dataset(self.data_path, max_abs_enthalpy=self.options.max_abs_enthalpy)
        parts = []
        for split, c in counts.items():
            parts.append(f"{split}: {c['n_kept']:,} kept of {c['n_raw']:,} ({c['n_dropped_enthalpy']:,} with "
                         f"|dH| > {self.options.max_abs_enthalpy:g} eV/atom, {c['n_dropped_elements']:,} with other "
                         f"elements, {c['n_dropped_unparseable']:,} unparseable)")
        return f"{self.data_path}: " + "; ".join(parts)

    def _size(self, split: str) -> Optional[int]:
        return getattr(self.options, f"{split}_size")

    def check_data(self) -> None:
        for split in ("train", "val", "test"):
            self.load(split)

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        return elemnet_data.load_split(self.data_path, split, size=self._size(split), shard=shard,
                                       max_abs_enthalpy=self.options.max_abs_enthalpy)

    def space(self) -> SearchSpace:
        return SearchSpace(
            layer_genes={
                "width": Choice((16, 32, 64, 128, 256, 384, 512, 768, 1024)),
                "activation": Choice(("relu", "elu", "selu", "gelu", "silu", "tanh")),
                "dropout": Choice((0.0, 0.05, 0.1, 0.2, 0.3)),
                "batch_norm": Choice((False, True)),
            },
            training_genes={
                "learning_rate": Choice((1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)),
                "batch_size": Choice((32, 64, 128, 256, 512)),
                "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")),
                "weight_decay": Choice((0.0, 1e-6, 1e-5, 1e-4, 1e-3)),
                "inputs": Choice(INPUTS),
            },
            depth=(1, 24), network=Stack(Dense(), LinearHead(1)), input_shape=(len(elemnet_data.ELEMENTS),),
            max_params=8_000_000, inputs=ElementDescriptors())

    def network_io(self, genome: Genome) -> dict:
        return {"input": {"shape": [None, len(elemnet_data.ELEMENTS)], "columns": list(elemnet_data.ELEMENTS),
                          "normalisation": "atomic fractions of the elements in columns, summing to 1 (float32)"},
                "output": {"values": "formation enthalpy, eV/atom"}}

    def table_inputs(self, frame) -> tuple[np.ndarray, list[str]]:
        """The 86 element fractions of the table's `formula` column."""
        if "formula" not in frame.columns:
            raise UserError(f"the table has no column 'formula', of which elemnet predicts the formation enthalpy "
                            f"(columns: {', '.join(map(str, frame.columns[:12]))})")
        return formula_fractions(frame["formula"])

    def output_columns(self, output: torch.Tensor) -> dict[str, np.ndarray]:
        return {"predicted_formation_enthalpy_eV_per_atom": output.detach().float().cpu().squeeze(-1).numpy()}

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(prediction.squeeze(-1), target)

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return error_sums(prediction, target)

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = max(float(sums[2]), 1.0)
        return {"mae": float(sums[0]) / n, "rmse": (float(sums[1]) / n) ** 0.5}

    def baseline_genomes(self) -> dict[str, Genome]:
        layers = [{"width": w, "activation": "relu", "dropout": d, "batch_norm": False} for w, d in _ELEMNET_17]
        training = {"learning_rate": 1e-4, "batch_size": 32, "optimizer": "adam", "weight_decay": 0.0,
                    "inputs": FRACTIONS}
        mlp = [{"width": w, "activation": "silu", "dropout": 0.0, "batch_norm": False} for w in (512, 512, 256, 128)]
        return {"ElemNet-17 (Jha et al. 2018)": Genome(layers, training),
                HAND_MLP: Genome(mlp, {"learning_rate": 2e-3, "batch_size": 512, "optimizer": "adamw",
                                       "weight_decay": 1e-4, "inputs": FRACTIONS})}

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        forest = elemnet_data.random_forest_baseline(*train, evals, n_estimators=self.options.forest_trees, n_jobs=-1)
        return {"random forest on element fractions": forest}
