"""Localization (Yang et al., Acta Mater. 166, 335 (2019)): the local strain ε11 of each voxel of a periodic
two-phase 3-D microstructure (MVE, 21³ by default) under macroscopic ε11, from 2-D CNNs.

Data: `sample_family` MVEs and the FFT solver's ε11 fields, stored over the applied strain. The network of a voxel
reads its periodic window³ neighbourhood (11³ by default, the paper's input; configs/localization.yaml gives the
whole 21³ MVE, which holds more of what sets the strain) as a window-channel window × window image (channel i is
the slice at offset i − window//2 along the loading direction x1, phases as −1/+1; `neighbourhoods`) and gives
that voxel's ε11 / applied ε11. The networks (`WindowNet`: valid convolutions, pooling, dense layers) are trained
and scored a whole x1 plane at a time, which gives every voxel's value exactly as its window image would, with
each voxel's share of the work done once: a sample is the slab of one plane of an MVE (the window planes around
it) and its target the plane's ε11 field.

Fitness: MASE = mean over voxels of |predicted − true| / applied strain, in %, over every voxel of every MVE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from menndl_py.config import setting
from menndl_py.errors import UserError
from menndl_py.genome import Choice, Genome, SearchSpace
from menndl_py.genome.networks.windownet import NORMS, POOL, WindowNet, slabs
from menndl_py.physics.mks import MKSLocalization, check_volumes, mase
from menndl_py.tasks.base import error_sums
from menndl_py.tasks.microstructure import data
from menndl_py.tasks.microstructure.data import as_input


@dataclass(frozen=True)
class LocalizationOptions(data.MicrostructureOptions):
    size: int = setting(21, min=3, max=256)
    train_volumes: int = setting(120, min=1, max=1_000_000)
    val_volumes: int = setting(20, min=1, max=1_000_000)
    test_volumes: int = setting(20, min=1, max=1_000_000)
    window: int = setting(11, min=1, max=255)  # odd: the neighbourhood is window³ voxels


class LocalizationTask(data.MicrostructureTask):
    name = "localization"
    summary = "local strain ε11 of each voxel of 3-D two-phase microstructures from its periodic window³ " \
              "neighbourhood, fitness: validation MASE %"
    metric = "mase"
    metric_names = ("mase", "rmse_pct")
    unit = "%"
    higher_is_better = False
    Options = LocalizationOptions
    fields = True

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        o = self.options
        if o.window % 2 == 0 or o.window > o.size:
            raise UserError(f"task.options.window: must be odd and <= size ({o.size}), got {o.window}")

    # -- samples -------------------------------------------------------------------------------------
    def neighbourhoods(self, volume, voxels: np.ndarray) -> np.ndarray:
        """The window images (len(voxels), window, window, window) float32 of the given flat voxel indices: what
        the network reads for each voxel."""
        volume = check_volumes(volume, "volume", (self.options.size,) * 3)[0]
        h = self.options.window // 2
        padded = np.pad(as_input(volume), h, mode="wrap")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (self.options.window,) * 3)
        return np.ascontiguousarray(windows[np.unravel_index(voxels, volume.shape)])

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        """The slabs (M, 1, window, n, n) of every x1 plane of MVEs rank::size (phases as −1/+1), and the planes'
        ε11 / applied ε11 (M, 1, n, n)."""
        rows = np.arange(shard[0], self.recipe()["counts"][split], shard[1])
        got = data.read(self.data_path, split, ("volumes", "strain"), rows)
        x = slabs(torch.as_tensor(as_input(got["volumes"])), self.options.window).numpy()
        return x, got["strain"].astype(np.float32).reshape(-1, 1, *got["strain"].shape[-2:])

    def predict_fields(self, model: torch.nn.Module, volumes, batch: int = 4) -> np.ndarray:
        """Predicted ε11 / applied ε11 fields of volumes (N, n, n, n) of 0s and 1s, every voxel."""
        volumes = check_volumes(volumes, "volumes", (self.options.size,) * 3)
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            return np.concatenate([
                model(slabs(torch.as_tensor(as_input(volumes[i:i + batch])).to(device), self.options.window)).cpu()
                .numpy() for i in range(0, len(volumes), batch)]).reshape(volumes.shape)

    # -- batch inference (`menndl predict`): a volume in, its ε11 field out ----------------------------
    predicts = "maps"
    ensembled = "mean"
    image_dims = 3

    def pad_for(self, genome: Genome, x: torch.Tensor) -> torch.Tensor:
        """Volumes (B, 1, n, n, n) as the network's slabs (B·n, window, n, n)."""
        return slabs(x[:, 0], self.options.window)

    def interpret(self, output: torch.Tensor, size: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per volume: its field of ε11 / applied ε11 (n, n, n) float32, and no objects."""
        n = self.options.size
        fields = output.detach().float().cpu().numpy().reshape(-1, n, n, n)
        return [(field, np.zeros((0, 4), np.float32)) for field in fields]

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
        """Slabs and their planes' fields under the same random symmetries (see `symmetric_images`)."""
        return data.symmetric_images((x, y), generator, roll_x1=False) if self.options.augment else (x, y)

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        w = self.options.window
        return SearchSpace(
            layer_genes={
                "filters": Choice((8, 16, 32, 48, 64, 96, 128)),
                "kernel": Choice((1, 3, 5)),
                "convs": Choice((1, 2)),
                "norm": Choice(NORMS),
                "activation": Choice(("relu", "elu", "gelu", "silu", "leaky_relu")),
                "pool": Choice(POOL),
                "dropout": Choice((0.0, 0.1, 0.2)),
                "dense": Choice((0, 32, 64, 128, 256, 512)),
            },
            training_genes={
                "learning_rate": Choice((1e-4, 3e-4, 1e-3, 2e-3, 3e-3)),
                "batch_size": Choice((4, 8, 16, 32)),  # slabs
                "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")),
                "weight_decay": Choice((0.0, 1e-5, 1e-4)),
            },
            depth=(1, 5), network=WindowNet(), input_shape=(w, w, w), max_params=4_000_000)

    def network_io(self, genome: Genome) -> dict:
        return {"input": {"shape": [None, *self.space().input_shape],
                          "normalisation": f"a voxel's periodic window³ neighbourhood, {data.PHASES_AS_INPUT}; "
                                           f"channel i is the slice at offset i - {self.options.window // 2} along x1"},
                "output": {"values": "ε11 of the voxel / the applied macroscopic ε11"}}

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(prediction, target)

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return error_sums(prediction.reshape(-1, 1), target.reshape(-1))

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = max(float(sums[2]), 1.0)
        return {"mase": 100.0 * float(sums[0]) / n, "rmse_pct": 100.0 * (float(sums[1]) / n) ** 0.5}

    # -- baselines -----------------------------------------------------------------------------------
    def baseline_genomes(self) -> dict[str, Genome]:
        """A hand-designed 2-D CNN in the manner of Yang et al. 2019 (3×3 convolutions on the window-channel image,
        pooling once, a last convolution, then dense layers), narrow enough for several epochs on one core even on
        the whole 21³ MVE (filters 16, 32, 32; dense 128, 64)."""
        conv = {"kernel": 3, "convs": 1, "norm": "batch", "activation": "relu", "dropout": 0.0}
        layers = [dict(conv, filters=16, pool="none", dense=0), dict(conv, filters=32, pool="max", dense=128),
                  dict(conv, filters=32, pool="none", dense=64)]
        training = {"learning_rate": 2e-3, "batch_size": 8, "optimizer": "adam", "weight_decay": 0.0}
        return {"2-D CNN (hand-designed, after Yang et al. 2019)": Genome(layers, training)}

    def mks(self) -> MKSLocalization:
        """First-order MKS fitted on the training MVEs."""
        fit = data.read(self.data_path, "train", ("volumes", "strain"))
        return MKSLocalization().fit(fit["volumes"], fit["strain"])

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """First-order MKS: MASE over every voxel, and the spread of the per-MVE MASE."""
        model, row = self.mks(), {}
        for split in evals:
            got = data.read(self.data_path, split, ("volumes", "strain"))
            per_mve = mase(model.predict(got["volumes"]), got["strain"])
            row.update({f"{split}_mase": float(per_mve.mean()), f"{split}_mase_mve_std": float(per_mve.std()),
                        f"{split}_mase_mve_max": float(per_mve.max())})
        return {"MKS first-order localization": row}
