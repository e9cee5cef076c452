#!/usr/bin/env python
"""Whether menndl_py is ready on this machine's GPUs: four checks in under 5 minutes, each PASS or FAIL with its figure.

1. A candidate trained on the GPU in fp32 and in bf16 (the ElemNet-sized genome of trainer_overhead.py, the
   Trainer on one rank): its validation MAE and training samples/s; it passes when training ends OK with a finite
   fitness and the network on the GPU. bf16 is `training.precision` where this version of the Trainer has it (a
   `precision` field of its Budget), else torch.autocast(bfloat16) around the whole evaluation.
2. The Trainer against a plain PyTorch loop on the GPU, same genome, seed and data (trainer_overhead.py's two
   loops, interleaved pairs): the median ratio of samples/s, against trainer_overhead's target (>= 0.95).
3. `menndl predict` against the network alone in a plain loop on the GPU (predict_throughput.py's two sides:
   the hand-designed U-Net with seeded weights, simulated 256x256 images): the median ratio of images/s, against
   predict_throughput's target (>= 0.9); it also checks that predict put its work on the GPU.
4. With two GPUs or more: `mpirun -np 2` ranks, each on the GPU of its node-local rank, sum a CUDA tensor with
   menndl's HorovodGroup (NCCL when Horovod was built with it; `hvd.nccl_built()` is printed).

The exit status is 1 if any check fails, else 0. Without a GPU it prints "no GPU" and why, and exits 0.
`--device cpu` (for developers, and the tests) runs the same checks on the CPU, small, with the GPUs hidden: it
exercises the code paths; the two ratios are printed but not judged there (CPU timings are trainer_overhead.py's
and predict_throughput.py's business).

    python benchmarks/gpu_check.py                 # on a GPU machine: about 1-2 minutes
    python benchmarks/gpu_check.py --device cpu    # the code paths on the CPU, small: about 30 s
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, code_version  # noqa: E402 (puts this checkout first on sys.path)
from predict_throughput import make_images, menndl_predict, plain_loop, untrained_run
from trainer_overhead import find_data, make_genome, menndl_trainer, plain_pytorch

TRAINER_TARGET = 0.95  # trainer_overhead.py's
PREDICT_TARGET = 0.9  # predict_throughput.py's
SIZES = {  # training rows, epochs, batch, pairs of trainings; images, pairs of predictions
    "cuda": {"rows": 20000, "epochs": 10, "batch": 256, "pairs": 5, "images": 200, "predict_pairs": 2},
    "cpu": {"rows": 2000, "epochs": 1, "batch": 128, "pairs": 1, "images": 4, "predict_pairs": 1},
}

ALLREDUCE = """
import json, sys
import torch
from mpi4py import MPI
from menndl_py.train.device import pick_device
from menndl_py.train.group import HorovodGroup

comm = MPI.COMM_WORLD
device = pick_device(comm.Split_type(MPI.COMM_TYPE_SHARED).rank)
group = HorovodGroup(comm)
total = group.sum(torch.full((1 << 20,), float(group.rank + 1), device=device))
with open(f"{sys.argv[1]}.{group.rank}", "w") as f:  # a file each: the ranks' stdout lines may interleave
    json.dump({"device": str(total.device), "right": bool((total == 3).all()), "nccl": group.hvd.nccl_built(),
               "mpi": bool(group.hvd.mpi_built())}, f)
"""


def no_gpu_reason(torch) -> str | None:
    """Why torch sees no GPU here, or None when it sees one."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but finds no usable GPU or driver"
    return None


class Checks:
    """Runs each check, prints PASS or FAIL with its figure (an exception is a FAIL, in one line)."""

    def __init__(self):
        self.failed = 0

    def run(self, name: str, check) -> None:
        try:
            passed, figure = check()
        except Exception as exc:  # noqa: BLE001 - a check that raises has failed; the others still run
            passed, figure = False, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        self.failed += not passed
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {figure}", flush=True)


def train_candidate(trainer, genome, epochs: int, bf16: bool) -> tuple[dict, str]:
    """trainer_overhead's figures of one training in fp32 or bf16, and how bf16 was had."""
    import torch

    from menndl_py.train.trainer import Budget, Trainer

    if not bf16:
        return menndl_trainer(trainer, genome, epochs), "fp32"
    if "precision" in {f.name for f in dataclasses.fields(Budget)}:
        bf16_trainer = Trainer(trainer.objective, trainer.space, trainer.group, trainer.data,
                               dataclasses.replace(trainer.budget, precision="bf16"), device=trainer.device,
                               seed=trainer.seed)
        return menndl_trainer(bf16_trainer, genome, epochs), "bf16 (training.precision)"
    with torch.autocast(trainer.device.type, dtype=torch.bfloat16):
        return menndl_trainer(trainer, genome, epochs), "bf16 (torch.autocast around the Trainer: no " \
                                                        "training.precision in this version)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: the same checks on the CPU, small, GPUs hidden (for developers and tests)")
    p.add_argument("--data-dir", help="directory with elemnet.h5 (default: as trainer_overhead.py finds or makes it)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # this process and its mpirun ranks compute on the CPU

    import torch

    if args.device == "cuda" and no_gpu_reason(torch):
        print(f"no GPU: {no_gpu_reason(torch)}; nothing to check (--device cpu runs the checks on the CPU)")
        return 0
    start = time.monotonic()
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    size = SIZES[args.device]
    if args.device == "cpu":
        torch.set_num_threads(1)  # polite on a shared machine; these are code paths, not timings
    print(f"gpu_check: torch {torch.__version__}, {code_version()}")
    if gpus:
        torch.cuda.set_device(device)
        print(f"  CUDA {torch.version.cuda}, {gpus} GPU{'s' * (gpus > 1)}: "
              + ", ".join(torch.cuda.get_device_name(i) for i in range(gpus)))
    else:
        print("  --device cpu: the checks on the CPU, GPUs hidden; ratios are printed, not judged")
    scratch = Path(tempfile.mkdtemp(prefix="menndl-gpu-check-"))
    checks = Checks()
    try:
        trainer, space, genome, data = trainer_setup(args, size, device, scratch)
        checks.run("candidate trained, fp32 and bf16", lambda: check_candidate(trainer, genome, size, device))
        checks.run("Trainer / plain PyTorch loop, samples/s",
                   lambda: check_trainer_ratio(trainer, space, genome, data, size, args.seed, device))
        checks.run("menndl predict / plain loop, images/s", lambda: check_predict(size, device, scratch))
        if args.device == "cpu" or gpus >= 2:
            checks.run("Horovod allreduce, 2 ranks", lambda: check_allreduce(args.device, scratch))
        else:
            print(f"SKIP  Horovod allreduce, 2 ranks: {gpus} GPU (two are needed)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'all checks passed' if not checks.failed else f'{checks.failed} check(s) FAILED'} in "
          f"{time.monotonic() - start:.0f} s (limit 300 s)")
    return 1 if checks.failed else 0


def trainer_setup(args, size: dict, device, scratch: Path):
    """(Trainer on `device`, space, genome, data on `device`) for trainer_overhead's genome on ElemNet rows."""
    import torch

    from menndl_py.tasks.elemnet.task import ElemNetTask
    from menndl_py.train.group import LocalGroup
    from menndl_py.train.trainer import Budget, Trainer

    task = ElemNetTask({"train_size": size["rows"], "val_size": size["rows"] // 2},
                       data_dir=find_data(args.data_dir, scratch))
    data = {split: tuple(torch.as_tensor(a).to(device) for a in task.load(split)) for split in ("train", "val")}
    genome = make_genome(256, 4, size["batch"])
    trainer = Trainer(task, task.space(), LocalGroup(), data, Budget(size["epochs"], None, 1e9, 4096),
                      device=device, seed=args.seed)
    print(f"  ElemNet: {len(data['train'][0]):,} training rows, {len(data['val'][0]):,} validation rows on {device}; "
          f"genome 4 x dense 256, batch {size['batch']}, {size['epochs']} epoch(s)", flush=True)
    return trainer, task.space(), genome, data


def check_candidate(trainer, genome, size: dict, device) -> tuple[bool, str]:
    figures, passed = [], True
    for bf16 in (False, True):
        out, how = train_candidate(trainer, genome, size["epochs"], bf16)
        where = {p.device.type for p in out["model"].parameters()}
        passed &= math.isfinite(out["val_mae"]) and where == {device.type}
        figures.append(f"{how}: val MAE {out['val_mae']:.4f}, {out['samples'] / out['seconds']:,.0f} samples/s, "
                       f"network on {'/'.join(sorted(where))}")
    return passed, "; ".join(figures)


def check_trainer_ratio(trainer, space, genome, data, size: dict, seed: int, device) -> tuple[bool, str]:

    menndl_trainer(trainer, genome, 1)  # warm-up (kernels, allocator), not counted
    plain_pytorch(space, genome, data, 1, seed)
    ratios, rates = [], {"menndl": [], "plain": []}
    for r in range(size["pairs"]):
        pair = {}
        for who in (("menndl", "plain") if r % 2 == 0 else ("plain", "menndl")):
            out = menndl_trainer(trainer, genome, size["epochs"]) if who == "menndl" else \
                plain_pytorch(space, genome, data, size["epochs"], seed)
            pair[who] = out["samples"] / out["seconds"]
            rates[who].append(pair[who])
        ratios.append(pair["menndl"] / pair["plain"])
    ratio = statistics.median(ratios)
    figure = (f"Trainer {statistics.median(rates['menndl']):,.0f}, plain {statistics.median(rates['plain']):,.0f} "
              f"samples/s, ratio {ratio:.3f}")
    return judged(ratio, TRAINER_TARGET, device, figure)


def check_predict(size: dict, device, scratch: Path) -> tuple[bool, str]:
    import h5py
    import torch

    from menndl_py.commands.predict import load_best
    from menndl_py.tasks.stem.task import standardize

    run_dir = untrained_run(scratch / "unet")
    task, genome, model = load_best(run_dir, quiet=True)
    stack = scratch / "stack.h5"
    make_images(stack, size["images"], task.settings)
    with h5py.File(stack, "r") as f:
        images = torch.from_numpy(standardize(f["images"][()])[:, None]).to(device)
    model.to(device)
    plain_loop(model, images[:8], 8)  # warm-up, not counted
    plain, ours, on_gpu = [], [], True
    for _ in range(size["predict_pairs"]):
        plain.append(plain_loop(model, images, 8))
        if device.type == "cuda":  # predict loads its own copy of the network: the GPU's peak must rise
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        ours.append(menndl_predict(run_dir, stack, scratch / "out.h5", 8))
        if device.type == "cuda":
            on_gpu &= torch.cuda.max_memory_allocated(device) > before
    with h5py.File(scratch / "out.h5", "r") as f:
        complete = len(f["maps"]) == size["images"]
    ratio = statistics.median(o / q for o, q in zip(ours, plain))
    figure = (f"predict {statistics.median(ours):,.1f}, plain {statistics.median(plain):,.1f} images/s "
              f"({size['images']} images, batch 8), ratio {ratio:.3f}")
    if not complete:
        return False, f"{figure}; predict wrote fewer maps than images"
    if not on_gpu:
        return False, f"{figure}; predict allocated nothing on {device}"
    return judged(ratio, PREDICT_TARGET, device, figure)


def check_allreduce(device: str, scratch: Path) -> tuple[bool, str]:
    script = scratch / "allreduce.py"
    script.write_text(ALLREDUCE)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([shutil.which("mpirun") or "mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2",
                           sys.executable, str(script), str(scratch / "rank")], env=env, capture_output=True,
                          text=True, timeout=180)
    ranks = [json.loads(p.read_text()) for p in sorted(scratch.glob("rank.*"))]
    if done.returncode != 0 or len(ranks) != 2:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"mpirun exited {done.returncode}: {last}"
    devices = sorted(r["device"] for r in ranks)
    right = all(r["right"] for r in ranks)
    apart = device == "cpu" or len(set(devices)) == 2  # each rank on its own GPU
    return right and apart, (f"sum {'right' if right else 'WRONG'} on {', '.join(devices)}; "
                             f"hvd.nccl_built() = {ranks[0]['nccl']}, mpi_built() = {ranks[0]['mpi']}")


def judged(ratio: float, target: float, device, figure: str) -> tuple[bool, str]:
    """A ratio against its target on the GPU; on the CPU (--device cpu) printed, not judged."""
    if device.type != "cuda":
        return math.isfinite(ratio) and ratio > 0, f"{figure} (target >= {target} judged on a GPU only)"
    return ratio >= target, f"{figure} (target >= {target})"


if __name__ == "__main__":
    sys.exit(main())
