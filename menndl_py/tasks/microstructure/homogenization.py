"""Homogenization (Yang et al., Comput. Mater. Sci. 151, 278 (2018)): the effective stiffness C11 (GPa, under
macroscopic ε11) of a periodic two-phase 3-D microstructure, from 3-D CNNs.

Data: `sample_family` volumes (51³ by default) with hard-phase volume fractions spread over [vf_min, vf_max];
C11 from the FFT solver; phases isotropic with one Poisson ratio, E = E_soft and contrast × E_soft. Inputs are
the volumes as 2·phase − 1 (N, 1, n, n, n); targets C11 in GPa. The network's output z is read as
C11 = C_ref · exp(z), C_ref the geometric mean of the phases' C11, and trained with the L1 loss on log C11 (the
relative error to first order). Fitness: MAE % = mean of |predicted − true| / true × 100.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from menndl_py.config import setting
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.convnet import ConvNet, convnet_genes, convnet_training
from menndl_py.physics.mks import StatsRegression, check_volumes, rule_of_mixtures
from menndl_py.tasks.microstructure import data
from menndl_py.tasks.microstructure.data import as_input


@dataclass(frozen=True)
class HomogenizationOptions(data.MicrostructureOptions):
    stats_cutoff: int = setting(8, min=1)  # 2-point statistics for vectors within this many voxels
    pca_components: int = setting(6, min=1)
    poly_degree: int = setting(2, min=1, max=4)


class HomogenizationTask(data.MicrostructureTask):
    name = "homogenization"
    summary = "effective stiffness C11 of 3-D two-phase microstructures (FFT solver), fitness: validation MAE %"
    metric = "mae_pct"
    metric_names = ("mae_pct", "mae_gpa", "rmse_gpa")
    unit = "%"
    higher_is_better = False
    Options = HomogenizationOptions
    predicts = "images"
    ensembled = "mean"

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        self.c_ref = math.sqrt(math.prod(self.c11_phases()))

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(shard[0], self.recipe()["counts"][split], shard[1])
        got = data.read(self.data_path, split, ("volumes", "c11"), rows)
        return as_input(got["volumes"][:, None]), got["c11"].astype(np.float32)

    def space(self) -> SearchSpace:
        n = self.options.size
        return SearchSpace(
            layer_genes=convnet_genes(filters=(4, 8, 12, 16, 24, 32, 48)), training_genes=convnet_training(),
            depth=(1, 6), network=ConvNet(dims=3), input_shape=(1, n, n, n), max_params=4_000_000)

    def network_io(self, genome: Genome) -> dict:
        return {"input": {"shape": [None, *self.space().input_shape], "normalisation": data.PHASES_AS_INPUT},
                "output": {"values": f"log(C11 / {self.c_ref:.6g} GPa), C11 under macroscopic ε11"}}

    def _c11(self, prediction: torch.Tensor) -> torch.Tensor:
        return self.c_ref * torch.exp(prediction.squeeze(-1).double().clamp(-30.0, 30.0))

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(prediction.squeeze(-1), torch.log(target / self.c_ref))

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        true = target.double()
        err = self._c11(prediction) - true
        return torch.stack([(err.abs() / true).sum(), err.abs().sum(), (err * err).sum(),
                            torch.tensor(float(len(err)), dtype=torch.float64, device=err.device)])

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = max(float(sums[3]), 1.0)
        return {"mae_pct": 100.0 * float(sums[0]) / n, "mae_gpa": float(sums[1]) / n,
                "rmse_gpa": (float(sums[2]) / n) ** 0.5}

    def predict_c11(self, model: torch.nn.Module, volumes) -> np.ndarray:
        """C11 (GPa) of volumes (N, n, n, n) of 0s and 1s by a trained network of this task."""
        volumes = check_volumes(volumes, "volumes", (self.options.size,) * 3)
        x = torch.as_tensor(as_input(volumes[:, None])).to(next(model.parameters()).device)
        model.eval()
        with torch.no_grad():
            return self._c11(model(x)).cpu().numpy()

    def output_columns(self, output: torch.Tensor) -> dict[str, np.ndarray]:
        return {"predicted_c11_GPa": self._c11(output).cpu().numpy()}

    def baseline_genomes(self) -> dict[str, Genome]:
        """A hand-designed 3-D CNN in the manner of Yang et al. 2018 (convolution + pooling blocks of growing
        width, then dense layers), scaled to a CPU budget."""
        conv = {"kernel": 3, "convs": 1, "norm": "batch", "activation": "relu", "dropout": 0.0}
        layers, size = [], self.options.size
        for filters, dense in ((8, 0), (16, 0), (32, 128), (32, 32)):  # pooling while it leaves >= 2 voxels a side
            layers.append(dict(conv, filters=filters, pool="max" if size >= 4 else "none", dense=dense))
            size = size // 2 if size >= 4 else size
        training = {"learning_rate": 1e-3, "batch_size": 16, "optimizer": "adam", "weight_decay": 0.0}
        return {"3-D CNN (hand-designed, after Yang et al. 2018)": Genome(layers, training)}

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """Rule of mixtures (Voigt, Reuss) and 2-point statistics → PCA → polynomial ridge, fitted on train."""
        o = self.options
        fit = data.read(self.data_path, "train", ("volumes", "c11"))
        regression = StatsRegression(o.stats_cutoff, o.pca_components, o.poly_degree)
        regression.fit(fit["volumes"], fit["c11"])
        rows: dict[str, dict[str, float]] = {"rule of mixtures (Voigt)": {}, "rule of mixtures (Reuss)": {},
                                             "2-point statistics + PCA + polynomial ridge": {}}
        for split in evals:
            got = data.read(self.data_path, split, ("volumes", "c11", "volume_fraction"))
            bounds = rule_of_mixtures(got["volume_fraction"], *self.c11_phases())
            predictions = {"rule of mixtures (Voigt)": bounds["voigt"], "rule of mixtures (Reuss)": bounds["reuss"],
                           "2-point statistics + PCA + polynomial ridge": regression.predict(got["volumes"])}
            for name, predicted in predictions.items():
                sums = self.metric_sums(torch.log(torch.as_tensor(predicted) / self.c_ref)[:, None],
                                        torch.as_tensor(got["c11"]))
                rows[name].update({f"{split}_{k}": v for k, v in self.metrics(sums).items()})
        return rows
