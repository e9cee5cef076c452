"""benchmarks/gpu_check.py: 'no GPU' and exit 0 where torch sees none; its checks' code paths, on the CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def gpu_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/gpu_check.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)


def test_without_a_gpu_it_says_so_and_exits_0():
    done = gpu_check(env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # no GPU, even on a machine that has one
    assert done.returncode == 0 and done.stderr == "", done.stderr
    reason = f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None else \
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but finds no usable GPU or driver"
    assert done.stdout == f"no GPU: {reason}; nothing to check (--device cpu runs the checks on the CPU)\n"


@pytest.mark.mpi
def test_every_check_passes_on_the_cpu(elemnet_data_dir):
    done = gpu_check("--device", "cpu", "--data-dir", str(elemnet_data_dir))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdicts = [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP"))]
    assert verdicts == ["PASS  candidate trained, fp32 and bf16", "PASS  Trainer / plain PyTorch loop, samples/s",
                        "PASS  menndl predict / plain loop, images/s", "PASS  Horovod allreduce, 2 ranks"]
    assert "fp32: val MAE " in done.stdout and "bf16 (" in done.stdout and "network on cpu" in done.stdout
    assert "sum right on cpu, cpu; hvd.nccl_built() = " in done.stdout
    assert done.stdout.splitlines()[-1].startswith("all checks passed in ")
