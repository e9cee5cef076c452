"""Localization (Yang et al., Acta Mater. 166, 335 (2019)): the local strain ε11 of each voxel of a periodic
two-phase 3-D microstructure (MVE, 21³ by default) under macroscopic ε11, from 2-D CNNs.

Data: `sample_family` MVEs and the FFT solver's ε11 fields, stored over the applied strain. A sample is one voxel:
its periodic window³ neighbourhood (11³ by default) as a window-channel window × window image — channel i is the
slice at offset i − window//2 along the loading direction x1 — with phases as −1/+1; the target is that voxel's
ε11 / applied ε11. All voxels of many MVEs would not fit in memory (21³ × 11³ floats per MVE), so each split
draws `<split>_voxels` voxels per MVE with a generator of (seed, split, MVE): the same on any shard, and the same
number per MVE, so the mean over samples is the mean over MVEs of each MVE's mean. `predict_fields` builds the
neighbourhoods of whole MVEs batch by batch, for per-microstructure figures.

Fitness: MASE = mean over voxels of |predicted − true| / applied strain, in %.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from menndl_py.config import _f
from menndl_py.errors import UserError
from menndl_py.genome import Choice, Genome, SearchSpace
from menndl_py.genome.conv import NORMS
from menndl_py.genome.convnet import POOL, ConvNet
from menndl_py.tasks import microstructure_data as data
from menndl_py.tasks.base import error_sums
from menndl_py.tasks.microstructure_data import SPLITS, as_input
from menndl_py.tasks.mks import MKSLocalization, check_volumes, mase


@dataclass(frozen=True)
class LocalizationOptions(data.MicrostructureOptions):
    size: int = _f(21, min=3)
    train_volumes: int = _f(120, min=1)
    val_volumes: int = _f(20, min=1)
    test_volumes: int = _f(20, min=1)
    window: int = _f(11, min=1)  # odd: the neighbourhood is window³ voxels
    train_voxels: Optional[int] = _f(256, min=1)  # voxels drawn per MVE (null: all)
    val_voxels: Optional[int] = _f(256, min=1)
    test_voxels: Optional[int] = _f(1024, min=1)


class LocalizationTask(data.MicrostructureTask):
    name = "localization"
    summary = "local strain ε11 of each voxel of 3-D two-phase microstructures from its 11³ neighbourhood, " \
              "fitness: validation MASE %"
    metric = "mase"
    metric_names = ("mase", "rmse_pct")
    unit = "%"
    higher_is_better = False
    Options = LocalizationOptions
    fields = True
    periodic = False

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        o = self.options
        if o.window % 2 == 0 or o.window > o.size:
            raise UserError(f"task.options.window: must be odd and <= size ({o.size}), got {o.window}")

    # -- samples -------------------------------------------------------------------------------------
    def voxels(self, split: str, mve: int) -> np.ndarray:
        """Flat indices of the voxels of MVE `mve` of `split` that are samples."""
        total = self.options.size ** 3
        k = getattr(self.options, f"{split}_voxels")
        if k is None or k >= total:
            return np.arange(total)
        rng = np.random.default_rng(np.random.SeedSequence(self.options.seed, spawn_key=(SPLITS.index(split), mve, 1)))
        return rng.choice(total, k, replace=False)

    def neighbourhoods(self, volume, voxels: np.ndarray) -> np.ndarray:
        """Network inputs (len(voxels), window, window, window) float32 of the given flat voxel indices."""
        volume = check_volumes(volume, "volume", (self.options.size,) * 3)[0]
        h = self.options.window // 2
        padded = np.pad(as_input(volume), h, mode="wrap")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (self.options.window,) * 3)
        return np.ascontiguousarray(windows[np.unravel_index(voxels, volume.shape)])

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        n = self.recipe()["counts"][split]
        picks = [self.voxels(split, v) for v in range(n)]
        per = len(picks[0])
        rows = np.arange(shard[0], n * per, shard[1])
        mves, at = np.divmod(rows, per)
        xs, ys = [], []
        for v in np.unique(mves):
            got = data.read(self.data_path, split, ("volumes", "strain"), int(v))
            chosen = picks[v][at[mves == v]]
            xs.append(self.neighbourhoods(got["volumes"], chosen))
            ys.append(got["strain"].ravel()[chosen])
        w = self.options.window
        if not xs:
            return np.zeros((0, w, w, w), np.float32), np.zeros(0, np.float32)
        return np.concatenate(xs), np.concatenate(ys).astype(np.float32)

    def predict_fields(self, model: torch.nn.Module, volumes, batch: int = 4096) -> np.ndarray:
        """Predicted ε11 / applied ε11 fields of volumes (N, n, n, n) of 0s and 1s, every voxel."""
        volumes = check_volumes(volumes, "volumes", (self.options.size,) * 3)
        everything = np.arange(volumes[0].size)
        model.eval()
        out = np.empty(volumes.shape, np.float32)
        with torch.no_grad():
            for i, volume in enumerate(volumes):
                flat = out[i].reshape(-1)
                for start in range(0, len(everything), batch):
                    x = torch.as_tensor(self.neighbourhoods(volume, everything[start:start + batch]))
                    flat[start:start + batch] = model(x).squeeze(-1).numpy()
        return out

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        w = self.options.window
        return SearchSpace(
            layer_genes={
                "filters": Choice((8, 16, 32, 48, 64, 96, 128)),
                "kernel": Choice((3, 5)),
                "convs": Choice((1, 2)),
                "norm": Choice(NORMS),
                "activation": Choice(("relu", "elu", "gelu", "silu", "leaky_relu")),
                "pool": Choice(POOL),
                "dropout": Choice((0.0, 0.1, 0.2)),
                "dense": Choice((0, 32, 64, 128, 256, 512)),
            },
            training_genes={
                "learning_rate": Choice((1e-4, 3e-4, 1e-3, 3e-3)),
                "batch_size": Choice((32, 64, 128, 256)),
                "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")),
                "weight_decay": Choice((0.0, 1e-5, 1e-4)),
            },
            depth=(1, 5), network=ConvNet(dims=2), input_shape=(w, w, w), max_params=4_000_000)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(prediction.squeeze(-1), target)

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return error_sums(prediction, target)

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = max(float(sums[2]), 1.0)
        return {"mase": 100.0 * float(sums[0]) / n, "rmse_pct": 100.0 * (float(sums[1]) / n) ** 0.5}

    # -- baselines -----------------------------------------------------------------------------------
    def baseline_genomes(self) -> dict[str, Genome]:
        """A hand-designed 2-D CNN in the manner of Yang et al. 2019 (two convolution blocks on the 11-channel
        image, pooling, then dense layers), scaled to a CPU budget."""
        conv = {"kernel": 3, "convs": 1, "norm": "batch", "activation": "relu", "dropout": 0.0}
        layers = [dict(conv, filters=32, pool="none", dense=0), dict(conv, filters=64, pool="max", dense=256),
                  dict(conv, filters=64, pool="none", dense=64)]
        training = {"learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0}
        return {"2-D CNN (hand-designed, after Yang et al. 2019)": Genome(layers, training)}

    def mks(self) -> MKSLocalization:
        """First-order MKS fitted on the training MVEs."""
        fit = data.read(self.data_path, "train", ("volumes", "strain"))
        return MKSLocalization().fit(fit["volumes"], fit["strain"])

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        """First-order MKS: MASE on the sampled voxels (as the networks are scored) and on whole fields, with the
        spread of the per-MVE MASE."""
        model, row = self.mks(), {}
        for split in evals:
            got = data.read(self.data_path, split, ("volumes", "strain"))
            predicted = model.predict(got["volumes"])
            per_mve = mase(predicted, got["strain"])
            picks = [self.voxels(split, v) for v in range(len(predicted))]
            sampled = np.concatenate([np.abs(p.ravel()[i] - t.ravel()[i]) for p, t, i in
                                      zip(predicted, got["strain"], picks)])
            row.update({f"{split}_mase": 100.0 * float(sampled.mean()), f"{split}_mase_full": float(per_mve.mean()),
                        f"{split}_mase_mve_std": float(per_mve.std()), f"{split}_mase_mve_max": float(per_mve.max())})
        return {"MKS first-order localization": row}
