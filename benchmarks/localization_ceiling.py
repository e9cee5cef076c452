#!/usr/bin/env python
"""What limits the localization networks on our MVEs: the information in the 11³ window.

1. Linear models. The best linear map from a voxel's w³ neighbourhood (phases as −1/+1, plus a constant) to its
   ε11, fitted by exact least squares over every voxel of every training MVE (the normal equations are periodic
   auto- and cross-correlations, summed over the MVEs by FFT), against first-order MKS: the same linear model with
   the whole periodic MVE as its window.
2. CNNs. The task's hand-designed CNN trained by the search's Trainer for the same time on the 11³ window and on
   the whole 21³ MVE (window 21: each voxel's network sees the entire periodic volume, centred on it), side by side,
   one process and one thread each, the learning rate decayed to 0 along the budget (cosine).
Test MASE (%) overall and per microstructure family (isotropic; elongated along or across the loading axis x1;
plates containing x1 or normal to it): what cutting the neighbourhood to the window costs on this data.

The script reports; it does not assert.

    python benchmarks/localization_ceiling.py           # about 35 min (per contrast, 2 x 900 s side by side)
    python benchmarks/localization_ceiling.py --quick   # 60 training MVEs in a temporary directory, about 1 min
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)

QUICK = {"train": 60, "val": 4, "test": 24}  # MVEs of --quick (its own data file, in a temporary directory)
FAMILIES = [("isotropic", -1, "isotropic"), ("elongated", 0, "elongated along x1"),
            ("elongated", 1, "elongated across x1 (x2)"), ("elongated", 2, "elongated across x1 (x3)"),
            ("plate", 0, "plates normal to x1"), ("plate", 1, "plates containing x1 (normal x2)"),
            ("plate", 2, "plates containing x1 (normal x3)")]


def load_task(contrast: float, data_dir: str, window: int = 11, overrides: tuple = ()):
    """The localization task of configs/localization.yaml at this contrast and window (and `overrides`, KEY=VALUE
    config settings), its data made if missing."""
    from menndl_py.cli import load_config
    from menndl_py.commands.common import ensure_data
    from menndl_py.tasks import make_task

    settings = [f"task.options.contrast={contrast:g}", f"task.data_dir={data_dir}", f"task.options.window={window}"]
    if data_dir != "data":
        settings += [f"task.options.{split}_volumes={n}" for split, n in QUICK.items()]
    settings += list(overrides)
    config = load_config(str(REPO / "configs" / "localization.yaml"), settings, "localization-ceiling")
    task = make_task(config.task.name, config.task.options, str(REPO / config.task.data_dir))
    ensure_data(task)
    return task


class WindowLinear:
    """ε(s) = c + Σ_{r in window} α_r u(s + r), u = 2m − 1: least squares over every voxel of the training MVEs."""

    def __init__(self, window: int):
        self.window = window

    def fit(self, volumes, strains, ridge: float = 1e-6) -> "WindowLinear":
        import numpy as np
        import scipy.fft as sfft

        n = volumes.shape[1:]
        u = 2.0 * volumes - 1.0
        spectrum = sfft.rfftn(u, axes=(1, 2, 3), workers=1)
        auto = sfft.irfftn((spectrum.conj() * spectrum).sum(0), s=n, workers=1)  # A(d) = Σ u(t) u(t + d)
        cross = sfft.irfftn((spectrum.conj() * sfft.rfftn(strains, axes=(1, 2, 3), workers=1)).sum(0), s=n,
                            workers=1)  # C(d) = Σ u(t) ε(t + d)
        h = self.window // 2
        offsets = np.array(list(itertools.product(range(-h, h + 1), repeat=3)))
        d = (offsets[None, :, :] - offsets[:, None, :]) % np.array(n)
        gram = np.empty((len(offsets) + 1,) * 2)
        gram[:-1, :-1] = auto[d[..., 0], d[..., 1], d[..., 2]]  # Σ_s u(s + r) u(s + r') = A(r' − r)
        gram[:-1, -1] = gram[-1, :-1] = u.sum()
        gram[-1, -1] = strains.size
        rhs = np.append(cross[tuple((-offsets % np.array(n)).T)], strains.sum())  # Σ_s u(s + r) ε(s) = C(−r)
        gram[np.diag_indices_from(gram)] += ridge * np.trace(gram) / len(gram)
        coefficients = np.linalg.solve(gram, rhs)
        self.kernel = np.zeros(n)
        self.kernel[tuple((offsets % np.array(n)).T)] = coefficients[:-1]
        self.constant = coefficients[-1]
        return self

    def predict(self, volumes):
        import scipy.fft as sfft

        u = 2.0 * volumes - 1.0
        n = volumes.shape[1:]
        kernel = sfft.rfftn(self.kernel, workers=1)
        return self.constant + sfft.irfftn(kernel.conj() * sfft.rfftn(u, axes=(1, 2, 3), workers=1), s=n,
                                           axes=(1, 2, 3), workers=1)


def per_family_table(task, errors: dict, title: str) -> str:
    """Mean test MASE per family and over all test MVEs, one column per model (`errors`: name → MASE per MVE)."""
    import numpy as np

    from menndl_py.tasks.microstructure import data

    test = data.read(task.data_path, "test", ("kind", "axis"))
    kinds = np.array([k.decode() if isinstance(k, bytes) else str(k) for k in test["kind"]])
    rows = []
    for kind, axis, label in FAMILIES:
        chosen = (kinds == kind) & (test["axis"] == axis)
        if chosen.any():
            rows.append([f"{label} ({chosen.sum()})"] + [f"{e[chosen].mean():.2f}" for e in errors.values()])
    rows.append([f"all test MVEs ({len(kinds)})"] + [f"{e.mean():.2f}" for e in errors.values()])
    return table(["family (MVEs)"] + list(errors), rows, title)


def linear_windows(task, windows) -> None:
    import numpy as np

    from menndl_py.physics.mks import MKSLocalization, mase
    from menndl_py.tasks.microstructure import data

    started = time.perf_counter()
    train = data.read(task.data_path, "train", ("volumes", "strain"))
    test = data.read(task.data_path, "test", ("volumes", "strain"))
    volumes, strains = (train[k].astype(np.float64) for k in ("volumes", "strain"))
    errors = {f"linear, {w}³ window": mase(WindowLinear(w).fit(volumes, strains).predict(
        test["volumes"].astype(np.float64)), test["strain"]) for w in windows}
    mks = MKSLocalization().fit(train["volumes"], train["strain"])  # what task.mks() fits, without reading again
    errors[f"first-order MKS (whole {task.options.size}³ period)"] = mase(mks.predict(test["volumes"]), test["strain"])
    print(per_family_table(task, errors, f"\ncontrast {task.options.contrast:g}: test MASE (%) of linear models "
                                         f"({len(volumes)} training MVEs, {time.perf_counter() - started:.0f} s)"))


def train_on_window(contrast: float, data_dir: str, window: int, seconds: float, overrides: tuple) -> dict:
    """The task's hand-designed CNN trained by the search's Trainer for `seconds` on one thread with the window³
    input (learning rate decayed to 0 along the budget, cosine): its test MASE per MVE and the epochs it completed."""
    import torch

    from menndl_py.physics.mks import mase
    from menndl_py.tasks.microstructure import data as microstructure_data
    from menndl_py.train.group import LocalGroup
    from menndl_py.train.trainer import Budget, Trainer

    torch.set_num_threads(1)
    task = load_task(contrast, data_dir, window, overrides)
    data = {split: tuple(torch.as_tensor(a) for a in task.load(split)) for split in ("train", "val")}
    budget = Budget(epochs=10**6, time_budget=seconds, timeout=2 * seconds + 600, eval_batch_size=256,
                    lr_schedule="cosine")
    outcome = Trainer(task, task.space(), LocalGroup(), data, budget, device=torch.device("cpu")).evaluate(
        *task.baseline_genomes().values())
    if outcome.status != "ok":
        raise RuntimeError(f"window {window}: training ended {outcome.status}: {outcome.message}")
    del data
    test = microstructure_data.read(task.data_path, "test", ("volumes", "strain"))
    return {"per_mve": mase(task.predict_fields(outcome.model, test["volumes"]), test["strain"]),
            "epochs": outcome.epochs}


def cnn_windows(task, data_dir: str, windows, seconds: float, overrides: tuple) -> None:
    """`train_on_window` for every window at once, one process (one thread) each, so they share the machine alike."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(windows), mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [pool.submit(train_on_window, task.options.contrast, data_dir, w, seconds, overrides) for w in windows]
        results = {w: r.result() for w, r in zip(windows, runs)}
    errors = {f"{w}³ window (epochs done: {results[w]['epochs']})": results[w]["per_mve"] for w in windows}
    print(per_family_table(task, errors, f"\ncontrast {task.options.contrast:g}: test MASE (%) of the hand-designed "
                                         f"CNN on two windows, {seconds:g} s of training each, one thread each, side "
                                         f"by side"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contrasts", default="50,10", help="comma-separated contrasts (each its own data file)")
    parser.add_argument("--windows", default="11,15", help="comma-separated odd windows of the linear models")
    parser.add_argument("--cnn-windows", default="11,21", help="comma-separated odd windows of the CNNs")
    parser.add_argument("--seconds", type=float, default=900.0, help="training time of each CNN (s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config setting for the data, e.g. task.options.length_max=2 (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60 training MVEs in a temporary "
                                                             "directory, contrast 50, 20 s of training")
    args = parser.parse_args()
    print(code_version())
    scratch = tempfile.TemporaryDirectory() if args.quick else None
    if args.quick:
        args.contrasts, args.seconds = "50", 20.0
    data_dir = scratch.name if scratch else "data"
    contrasts = [float(c) for c in args.contrasts.split(",")]
    overrides = tuple(args.overrides)
    tasks = {c: load_task(c, data_dir, overrides=overrides) for c in contrasts}
    for c in contrasts:
        linear_windows(tasks[c], [int(w) for w in args.windows.split(",")])
    for c in contrasts:
        cnn_windows(tasks[c], data_dir, [int(w) for w in args.cnn_windows.split(",")], args.seconds, overrides)


if __name__ == "__main__":
    main()
