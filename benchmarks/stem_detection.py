#!/usr/bin/env python
"""Defect F1 of a STEM network read by argmax components against per-class thresholds calibrated on training images.

The network is the one `menndl predict` would use (RUN/final/ after `menndl retrain`, else RUN/best/). Its
softmax outputs on the validation and test images are read twice: by argmax components of at least
`task.options.min_pixels` pixels (how networks were scored before calibration), and by the peak rule the task
calibrates on its calibration images (whole: the multislice training images when the config has any, else the
first 40 simulated ones), as a search candidate's is (`StemDefectsTask.calibrate`).
Per split and detection: precision, recall and F1 per defect class and the mean F1 (the task's fitness). One torch
thread. The script reports; it does not assert.

    python benchmarks/stem_detection.py                       # runs/stem_defects, about 1 min on one core
    python benchmarks/stem_detection.py --quick --run DIR     # the first 20 test images
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=str(REPO / "runs" / "stem_defects"), help="a stem_defects run directory")
    p.add_argument("--quick", action="store_true", help="the first 20 test images only")
    args = p.parse_args(argv)

    import h5py
    import numpy as np
    import torch

    from menndl_py.commands.predict import load_best
    from menndl_py.physics import stem_analysis
    from menndl_py.rundir import RunDir
    from menndl_py.tasks.stem.task import standardize, true_defects
    from menndl_py.train.group import LocalGroup

    torch.set_num_threads(1)
    start = time.perf_counter()
    run = Path(args.run)
    task, genome, model = load_best(run, quiet=True)
    print(f"stem_detection: {RunDir(run).network_to_use()}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"one torch thread\n  {code_version()}")
    names = task.class_names[1:]

    def describe(rule) -> str:
        if rule is None:
            return "none"
        return ", ".join(f"{n} p >= {t:g}" for n, t in zip(names, rule.thresholds)) + f", σ {rule.smoothing:g} px"

    print(f"\nrule recorded with the network: {describe(task.rule)}")
    rule = task.calibrate(model, LocalGroup(), torch.device("cpu"), 8)
    print(f"rule calibrated now on the task's calibration images: {describe(rule)}")

    def probabilities(x: torch.Tensor) -> np.ndarray:
        """Softmax outputs of one standardized image (1×H×W) of any size, as `menndl predict` computes them."""
        with torch.no_grad():
            return torch.softmax(task.outputs(model, genome, x[None]), 1)[0].numpy()

    detections = {"argmax": lambda q: stem_analysis.extract_defects(q, task.options.min_pixels),
                  "calibrated": lambda q: stem_analysis.threshold_defects(q, rule)}
    x, truth, radii = task.calibration_set((0, 1))  # the calibration images: any sizes, each its match radius
    sets = {"train (calibration images)": ([torch.from_numpy(np.asarray(i)) for i in x], truth, radii)}
    for split, n in (("val", task.options.val_images), ("test", 20 if args.quick else task.options.test_images)):
        with h5py.File(task.data_path, "r") as f:
            images, labels = f[split]["images"][:n], f[split]["labels"][:n]
        sets[split] = ([torch.from_numpy(standardize(i)[None]) for i in images], [true_defects(t) for t in labels],
                       [task.radius_px] * len(images))
    rows = []
    for label, (images, truth, radii) in sets.items():
        prob = [probabilities(i) for i in images]
        for detection, detect in detections.items():
            counts = sum(stem_analysis.match_counts(detect(q), t, r, len(task.class_names))
                         for q, t, r in zip(prob, truth, radii))
            s = stem_analysis.f1_scores(counts, names)
            rows.append([f"{label}, {len(images)} images", detection, f"{s['defect_f1']:.3f}",
                         *(f"{s[f'precision_{n}']:.2f}/{s[f'recall_{n}']:.2f}/{s[f'f1_{n}']:.3f}" for n in names)])
    print()
    print(table(["split", "detection", "defect F1", *(f"{n} P/R/F1" for n in names)], rows,
                "object-level detection (match radius "
                f"{task.options.match_radius:g} Å = {task.radius_px:.2f} px)"))
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
