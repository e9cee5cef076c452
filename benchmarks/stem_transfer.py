#!/usr/bin/env python
"""STEM defects on other microscopes: a run's network against Fourier filtering, per defect kind and mean F1.

The image sets (each scored by both methods, same images, same matching radius):
  - the fast simulator at the task's own settings (its "own" test split: `stem_sim`, no randomization),
  - multislice, the validation microscope (A), without and with scan-row jitter, and each further validation
    microscope (`multislice.more_val`) as the validation split holds it,
  - multislice, the test microscope (B: settings no training or validation image had), without and with jitter.
Sets the data file holds are read from it; the others are made here by `multislice_data.make_dataset` (over the
ranks of an mpirun, kept beside the data file, named by recipe: a second run reuses them). The same seed and
split as the data file's give the same specimens and noise, so a jittered set differs from its steady twin only
by the jitter.

The network runs with the detection thresholds the task tuned on training images, and with thresholds tuned here
on the steady multislice validation images (the images the search selected its network on; the test microscope's
images stay unseen). Fourier filtering runs three ways: as `menndl baseline` tuned it (RUN/baselines/fourier.json:
on the task's calibration images, the multislice training images when the config has any), tuned here on the
first 40 fast-simulator training images (as the task tunes it without multislice training images), and tuned on
the steady validation images; its best of the three is the baseline to beat. For each steady multislice set it
also prints where the network put each true defect (the kind it was detected as, or missed) and its false alarms.
The script reports; it does not assert.

    mpirun -np 2 python benchmarks/stem_transfer.py runs/stem_transfer --network final --jitter 0.3
    mpirun -np 2 python benchmarks/stem_transfer.py runs/stem_transfer --network ensemble
    mpirun -np 2 python benchmarks/stem_transfer.py runs/stem_transfer --network final_ensemble
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import code_version, table  # noqa: E402 (puts this checkout first on sys.path)

from menndl_py.commands.predict import load_best, load_ensemble  # noqa: E402
from menndl_py.engine.transport import mpi  # noqa: E402
from menndl_py.physics import stem_analysis, stem_sim  # noqa: E402
from menndl_py.tasks.making import item_rng  # noqa: E402
from menndl_py.tasks.stem import data as stem_data  # noqa: E402
from menndl_py.tasks.stem import multislice_data  # noqa: E402
from menndl_py.tasks.stem.fourier import FourierMethod  # noqa: E402
from menndl_py.tasks.stem.task import CALIBRATION_IMAGES, standardize, true_defects  # noqa: E402


def image_sets(task, jitter: float, fast_images: int, share) -> dict[str, tuple[list, list, tuple]]:
    """{name: (images, label maps, (split, settings, microscope) of a multislice set, () of the other)} of every
    set; the multislice ones made (over `share`) where missing."""
    sets = {}
    if share.rank == 0:
        samples = [stem_sim.simulate(task.settings, item_rng(task.options.seed, "test", i)) for i in
                   range(fast_images)]
        sets[f"fast simulator, task settings (jitter {task.settings.jitter:g} Å)"] = (
            [s.image for s in samples], [s.labels for s in samples], ())
    for split, name in (("val", "A (validation)"), ("test", "B (test, unseen)")):
        settings, microscope = task.multislice[split]
        count = getattr(task.options, f"{split}_images")  # the split's first images: its own microscope's
        for j in (0.0, jitter):
            path = task.data_dir / f"stem_transfer-{split}-jitter{j:g}-{task.multislice_path(split).stem}.h5"
            own = dataclasses.replace(settings, jitter=j)
            if own == settings:
                path = task.data_path  # the data file holds this set
            elif not path.exists():
                multislice_data.make_dataset(path, own, microscope, split, count, task.options.seed, share)
            if share.rank == 0:
                with h5py.File(path, "r") as f:
                    sets[f"multislice {name}, jitter {j:g} Å"] = (list(f[split]["images"][:count]),
                                                                   list(f[split]["labels"][:count]),
                                                                   (split, own, microscope))
        if split == "val" and share.rank == 0:
            start = count
            with h5py.File(task.data_path, "r") as f:
                for k, (own, microscope, n) in enumerate(task.multislice_lists["val"]):
                    sets[f"multislice more_val[{k}] (validation), jitter {own.jitter:g} Å"] = (
                        list(f["val"]["images"][start:start + n]), list(f["val"]["labels"][start:start + n]),
                        ("val", own, microscope))
                    start += n
    return sets


def fourier_on_fast_images(task, disk_radius: float) -> stem_analysis.FourierFilterBaseline:
    """Fourier filtering tuned on the first 40 fast-simulator training images of the task's data file (as the
    task tunes it without multislice training images): its best tuning for the multislice sets."""
    with h5py.File(task.data_path, "r") as f:
        images, labels = stem_data.read(f["train"], np.arange(min(CALIBRATION_IMAGES, task.options.train_images)))
    fourier = stem_analysis.FourierFilterBaseline(disk_radius)
    fourier.fit(list(images), [true_defects(t) for t in labels], task.radius_px)
    return fourier


@torch.no_grad()
def probabilities(outputs, image: np.ndarray) -> np.ndarray:
    """The softmax outputs (C×H×W) for one image of `outputs` (a batch's logits: a network's or an ensemble's)."""
    x = torch.from_numpy(standardize(image)[None, None])
    return torch.softmax(outputs(x).float(), 1)[0].numpy()


def rule_tuned_on(task, outputs, images: list, labels: list) -> stem_analysis.DetectionRule:
    """The network's detection thresholds tuned on these images, as the task tunes them on training images."""
    counts = sum(stem_analysis.threshold_counts(probabilities(outputs, image), true_defects(t), task.radius_px,
                                                task.smoothing_px) for image, t in zip(images, labels))
    return stem_analysis.calibrate(counts, task.smoothing_px)


def scores(task, find, images: list, labels: list) -> tuple[dict[str, float], float]:
    """({f1_<kind>: F1, defect_f1: mean}, CPU ms per image) of a detector `find` (image -> defect table)."""
    n = len(task.class_names)
    counts = np.zeros((n - 1, 3), np.int64)
    start = time.process_time()
    for image, t in zip(images, labels):
        counts += stem_analysis.match_counts(find(image), true_defects(t), task.radius_px, n)
    ms = 1000 * (time.process_time() - start) / len(images)
    f1 = stem_analysis.f1_scores(counts.ravel(), task.class_names[1:])
    return {k: v for k, v in f1.items() if k.startswith("f1_") or k == "defect_f1"}, ms


def confusion(task, find, images: list, labels: list) -> np.ndarray:
    """Where each true defect went: a (kinds + 1)×(kinds + 1) count table, row a true kind, column the kind of the
    most confident detection within match_radius of it (the last column: none, missed); the last row counts the
    detections of each kind with no true defect of any kind within match_radius (false alarms)."""
    n = len(task.class_names) - 1
    counts = np.zeros((n + 1, n + 1), np.int64)
    for image, t in zip(images, labels):
        found, true = find(image), true_defects(t)
        dist = np.hypot(*(found[:, None, :2] - true[None, :, :2]).transpose(2, 0, 1))
        near = dist <= task.radius_px
        for j, kind in enumerate(true[:, 2].astype(int)):
            hits = np.flatnonzero(near[:, j])
            counts[kind - 1, int(found[hits[found[hits, 3].argmax()], 2]) - 1 if len(hits) else n] += 1
        for kind in found[~near.any(1), 2].astype(int):
            counts[n, kind - 1] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--network", help="best, final, ensemble, final_ensemble or a kept network's id (default: "
                                          "as predict)")
    parser.add_argument("--jitter", type=float, default=0.3, help="Å of scan-row jitter of the jittered sets")
    parser.add_argument("--fast-images", type=int, default=36, help="fast-simulator images at the task settings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    share = mpi.share()
    if args.network in ("ensemble", "final_ensemble"):
        task, _, model = load_ensemble(args.run_dir, quiet=share.rank != 0, retrained=args.network != "ensemble")
        outputs, genomes = model.outputs, model.genomes
    else:
        task, genome, model = load_best(args.run_dir, quiet=share.rank != 0, network=args.network)
        outputs, genomes = (lambda x: task.outputs(model, genome, x)), [genome]
    sets = image_sets(task, args.jitter, args.fast_images, share)
    if share.rank != 0:
        return
    print(f"stem_transfer: {code_version()}\n  network: {args.run_dir} ({args.network or 'default'}), "
          f"genome{'s' * (len(genomes) > 1)} {', '.join(g.key for g in genomes)}")
    trained = FourierMethod(args.run_dir)
    steady_val = sets["multislice A (validation), jitter 0 Å"][:2]
    tuned = stem_analysis.FourierFilterBaseline(trained.fourier.disk_radius)
    tuned.fit(steady_val[0], [true_defects(t) for t in steady_val[1]], task.radius_px)
    on_fast = fourier_on_fast_images(task, trained.fourier.disk_radius)
    val_rule = rule_tuned_on(task, outputs, *steady_val)
    methods = {"network": lambda image: task.detect(probabilities(outputs, image)),
               "network (tuned on val)": lambda image: stem_analysis.threshold_defects(
                   probabilities(outputs, image), val_rule),
               "Fourier (menndl baseline)": lambda image: trained.fourier.predict(image.astype(np.float64)),
               "Fourier (tuned on fast sim)": lambda image: on_fast.predict(image.astype(np.float64)),
               "Fourier (tuned on val)": lambda image: tuned.predict(image.astype(np.float64))}
    kinds = [f"f1_{c}" for c in task.class_names[1:]]
    rows, speed = [], {}
    for name, (images, labels, _) in sets.items():
        for method, find in methods.items():
            f1, ms = scores(task, find, images, labels)
            speed.setdefault(method, []).append(ms)
            rows.append([name if method == "network" else "", method, len(images),
                         *(f"{f1[k]:.3f}" for k in kinds), f"{f1['defect_f1']:.3f}"])
    print(table(["images", "method", "n", *(k[3:] for k in kinds), "mean F1"], rows,
                "\nF1 per defect kind (a detection within match_radius of a true defect of its kind)"))
    names = [c.replace("_", " ") for c in task.class_names[1:]]
    for name, (images, labels, recipe) in sets.items():
        if recipe and recipe[1].jitter == 0:
            print(table(["true kind", *names, "missed"],
                        [[kind, *row] for kind, row in zip([*names, "(none: false alarms)"],
                                                            confusion(task, methods["network"], images, labels))],
                        f"\nnetwork on {name}: each true defect by the kind of the most confident detection near it"))
    print("\nCPU ms per image (this process, one thread): " + ", ".join(
        f"{m} {np.mean(v):.1f}" for m, v in speed.items()))
    print("microscopes: " + json.dumps({split: task.data_sources()[split] for split in ("val", "test")}, indent=1))


if __name__ == "__main__":
    main()
