#!/usr/bin/env python
"""Batch defect identification speed: `menndl predict` against a plain PyTorch inference loop, same model, same
images, same process.

The images: N simulated 256×256 HAADF images in one HDF5 stack, made with the run's own simulator settings. The
model: the best network of `--run` (default runs/stem_defects if it has one), or else the task's hand-designed U-Net
with seeded random weights. menndl's side is the whole command as users run it (``predict(run_dir, [stack.h5],
out.h5)``: read each image, check it, standardise, batch, infer, find the defects, write class maps, defect table
and CSV). The plain side is the network alone on the same standardised images already in memory::

    with torch.no_grad(): for batch in images: model(batch)

Both use one rank and one torch thread, batch 8, and run in turn (plain, menndl, plain, menndl); images/s per rank
and the ratio menndl / plain (median over the pairs) are printed against the target (>= 0.9). With `--ranks R`
it also runs ``mpirun -np R menndl predict`` on the same stack and prints images/s per rank.

    python benchmarks/predict_throughput.py              # 1,000 images, 2 pairs
    python benchmarks/predict_throughput.py --quick      # 48 images, 1 pair
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import REPO, code_version  # noqa: E402 (puts this checkout first on sys.path)

TARGET = 0.9


def make_images(path: Path, n: int, settings) -> None:
    import h5py
    import numpy as np

    from menndl_py.physics import stem_sim

    with h5py.File(path, "w") as f:
        stack = f.create_dataset("images", (n, settings.image_size, settings.image_size), np.float32,
                                 chunks=(1, settings.image_size, settings.image_size))
        for i in range(n):
            stack[i] = stem_sim.simulate(settings, np.random.default_rng((7, i))).image


def untrained_run(root: Path) -> Path:
    """A run directory holding the hand-designed U-Net with seeded random weights."""
    import torch

    from menndl_py import config
    from menndl_py.rundir import RunDir
    from menndl_py.rundir.networks import save_network
    from menndl_py.tasks import make_task

    cfg = config.from_dict({"run": {"name": "unet", "directory": str(root / "runs")},
                            "task": {"name": "stem_defects", "data_dir": str(root / "data")}})
    task = make_task("stem_defects", {}, root / "data")
    genome = task.baseline_genomes()["U-Net (hand-designed)"]
    run = RunDir(cfg.run_dir)
    run.path.mkdir(parents=True)
    config.save(cfg, run.config)
    torch.manual_seed(0)
    save_network(run.best, genome, task.space().build(genome).state_dict(), {})
    return run.path


def plain_loop(model, images, batch: int) -> float:
    """Images/s of the network alone (on the images' device)."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(images[i:i + batch])
    if images.is_cuda:
        torch.cuda.synchronize(images.device)
    return len(images) / (time.perf_counter() - start)


def menndl_predict(run_dir: Path, stack: Path, out: Path, batch: int) -> float:
    from menndl_py.commands.predict import predict

    start = time.perf_counter()
    predict(str(run_dir), [str(stack)], str(out), batch_size=batch, overwrite=True, progress=False)
    with __import__("h5py").File(out, "r") as f:
        n = len(f["maps"])
    return n / (time.perf_counter() - start)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--images", type=int)
    p.add_argument("--pairs", type=int)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--run", help="a run directory whose best network to use (default: runs/stem_defects)")
    p.add_argument("--ranks", type=int, default=0, help="also time mpirun -np RANKS menndl predict")
    args = p.parse_args(argv)
    n = args.images or (48 if args.quick else 1000)
    pairs = args.pairs or (1 if args.quick else 2)

    import torch

    torch.set_num_threads(1)
    from menndl_py.commands.predict import load_best
    from menndl_py.rundir import RunDir
    from menndl_py.tasks.stem.task import standardize

    print(code_version())
    scratch = Path(tempfile.mkdtemp(prefix="menndl-predict-bench-"))
    try:
        default = REPO / "runs" / "stem_defects"
        run_dir = Path(args.run) if args.run else default if RunDir(default).has_trained_network() else None
        label = str(run_dir) if run_dir else "hand-designed U-Net, random weights"
        run_dir = run_dir or untrained_run(scratch)
        task, genome, model = load_best(run_dir)
        stack = scratch / "stack.h5"
        start = time.perf_counter()
        make_images(stack, n, task.settings)
        print(f"{n} images of {task.settings.image_size}² ({task.settings.material}, {task.settings.pixel_size} Å "
              f"pixels, {task.settings.dose:g} e/Å²) simulated in {time.perf_counter() - start:.1f} s")
        import h5py

        with h5py.File(stack, "r") as f:
            images = torch.from_numpy(standardize(f["images"][()])[:, None])
        plain, ours = [], []
        for _ in range(pairs):
            plain.append(plain_loop(model, images, args.batch))
            ours.append(menndl_predict(run_dir, stack, scratch / "out.h5", args.batch))
        ratios = [o / q for o, q in zip(ours, plain)]
        ratio = statistics.median(ratios)
        with h5py.File(scratch / "out.h5", "r") as f:
            defects = len(f["defects"])
        print(f"model: {label}; genome depth {genome.depth}, {sum(p.numel() for p in model.parameters()):,} "
              f"parameters; batch {args.batch}; 1 torch thread; {defects:,} defects found in the last pass")
        print(f"plain PyTorch loop   : {statistics.median(plain):8.2f} images/s per rank  (passes: "
              f"{', '.join(f'{v:.2f}' for v in plain)})")
        print(f"menndl predict       : {statistics.median(ours):8.2f} images/s per rank  (passes: "
              f"{', '.join(f'{v:.2f}' for v in ours)})")
        print(f"menndl / plain       : {ratio:8.3f}  (target >= {TARGET}: {'met' if ratio >= TARGET else 'MISSED'})")
        figures = {"images": n, "model": label, "plain_images_per_s": statistics.median(plain),
                   "menndl_images_per_s": statistics.median(ours), "ratio": ratio, "target": TARGET}
        if args.ranks > 1:
            env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                       PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
            start = time.perf_counter()
            subprocess.run([shutil.which("mpirun"), "--oversubscribe", "-np", str(args.ranks), "menndl", "predict",
                            str(run_dir), str(stack), "--output", str(scratch / "mpi.h5"), "--no-progress"],
                           env=env, check=True, capture_output=True, timeout=3600)
            rate = n / (time.perf_counter() - start)
            print(f"mpirun -np {args.ranks}       : {rate:8.2f} images/s in all, {rate / args.ranks:.2f} per rank "
                  f"(including start-up; {os.cpu_count()} cores)")
            figures["mpi"] = {"ranks": args.ranks, "images_per_s": rate}
        return figures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
