"""launch/install.sh --dry-run: the torch build and Horovod collectives it chooses for the NVIDIA driver that a
stand-in nvidia-smi reports (or for none), printed without installing anything."""
import os
import re
import subprocess
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[2] / "launch" / "install.sh"
NVIDIA_SMI = """#!/bin/sh
cat <<'END'
Thu Dec  4 10:12:44 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: {cuda}     |
+-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  NVIDIA A100-SXM4-40GB          On  |   00000000:07:00.0 Off |                    0 |
| N/A   31C    P0             52W /  400W |       1MiB /  40960MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
END
"""
BROKEN_SMI = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
"""


def dry_run(tmp_path: Path, nvidia_smi: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """install.sh --dry-run with `nvidia-smi` (a script's text) first on PATH, or no nvidia-smi on PATH at all; the
    virtual environment and the wheel cache it is given must not appear."""
    path = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "nvidia-smi").exists()]
    if nvidia_smi is not None:
        stand_in = tmp_path / "bin" / "nvidia-smi"
        stand_in.parent.mkdir()
        stand_in.write_text(nvidia_smi)
        stand_in.chmod(0o755)
        path.insert(0, str(stand_in.parent))
    venv, wheels = tmp_path / "venv", tmp_path / "wheels"
    environment = {k: v for k, v in os.environ.items() if k not in ("MENNDL_TORCH_BUILD", "CUDA_HOME")}
    environment.update(PATH=os.pathsep.join(path), MENNDL_VENV=str(venv), MENNDL_WHEELS=str(wheels), **env)
    done = subprocess.run(["bash", str(INSTALL), "--dry-run"], env=environment, capture_output=True, text=True,
                          timeout=120)
    assert not venv.exists() and not wheels.exists()
    return done


@pytest.mark.parametrize("cuda, build", [("12.6", "cu126"), ("12.8", "cu126"), ("13.0", "cu130"), ("13.1", "cu130"),
                                         ("13.2", "cu132"), ("13.4", "cu132")])
def test_a_driver_gets_the_newest_cuda_build_it_runs_and_horovod_with_nccl(tmp_path, cuda, build):
    done = dry_run(tmp_path, NVIDIA_SMI.format(cuda=cuda))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    assert f"[install] NVIDIA driver for CUDA {cuda} (nvidia-smi)\n" in out
    index = f"https://download.pytorch.org/whl/{build}"
    assert f"[install] torch build: {build} (torch==2.13.0+{build} from {index})\n" in out
    assert f"pip install -q torch==2.13.0+{build} --index-url {index} (skipped when the venv's torch is built" in out
    assert "[install] Horovod 0.28.1 collectives to build: NCCL (GPU) + MPI (CPU)\n" in out
    horovod = next(line for line in out.splitlines() if line.startswith("[install] 5. Horovod: "))
    assert "HOROVOD_WITH_MPI=1" in horovod and "HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED" in horovod
    nccl = re.escape(str(tmp_path / "venv" / "lib")) + r"/python3\.\d+/site-packages/nvidia/nccl"
    assert re.search(f" HOROVOD_NCCL_INCLUDE={nccl}/include ", horovod), horovod
    assert horovod.endswith(f"cached in {tmp_path}/wheels/horovod-0.28.1-torch2.13.0_{build}-nccl "
                            "(skipped when the venv's Horovod is built with NCCL)")
    assert "[install] dry run: nothing is installed; a real run would do the following\n" in out


def test_a_driver_older_than_every_cuda_build_stops_the_install_in_one_line(tmp_path):
    done = dry_run(tmp_path, NVIDIA_SMI.format(cuda="12.4"))
    assert done.returncode == 2 and "dry run" not in done.stdout
    assert done.stderr == ("[install] the NVIDIA driver supports CUDA 12.4, older than torch 2.13.0's oldest CUDA "
                           "build (12.6): update the driver, or set MENNDL_TORCH_BUILD=cpu (or cu126)\n")


def test_a_build_chosen_by_hand_overrides_the_driver(tmp_path):
    (tmp_path / "cpu").mkdir()
    done = dry_run(tmp_path / "cpu", NVIDIA_SMI.format(cuda="12.4"), MENNDL_TORCH_BUILD="cpu")
    assert done.returncode == 0 and "[install] Horovod 0.28.1 collectives to build: MPI (CPU)\n" in done.stdout
    (tmp_path / "old").mkdir()
    done = dry_run(tmp_path / "old", NVIDIA_SMI.format(cuda="13.0"), MENNDL_TORCH_BUILD="cu118")
    assert done.returncode == 2
    assert done.stderr == "[install] MENNDL_TORCH_BUILD: must be cpu or one of cu126 cu130 cu132, got 'cu118'\n"


@pytest.mark.parametrize("nvidia_smi, said", [
    (None, "[install] no NVIDIA driver (no nvidia-smi on PATH)\n"),
    (BROKEN_SMI, "[install] nvidia-smi reports no CUDA version ('NVIDIA-SMI has failed because it couldn't "
                 "communicate with the NVIDIA driver.'): no usable NVIDIA driver\n")])
def test_without_a_driver_torch_is_what_pip_finds_and_horovod_has_mpi_only(tmp_path, nvidia_smi, said):
    done = dry_run(tmp_path, nvidia_smi)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    assert said in out
    assert "[install] torch build: as pip finds torch==2.13.0 (the CPU file on this disk where it lies there)\n" in out
    assert "pip install -q torch==2.13.0 (skipped when the venv has a torch)\n" in out
    assert "[install] Horovod 0.28.1 collectives to build: MPI (CPU)\n" in out
    assert "NCCL" not in out and "download.pytorch.org" not in out
    assert f"cached in {tmp_path}/wheels/horovod-0.28.1-torch<torch version> (skipped" in out


def test_an_unknown_argument_is_refused_in_one_line():
    done = subprocess.run(["bash", str(INSTALL), "--dryrun"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "[install] unknown argument '--dryrun' (usage: bash launch/install.sh [--dry-run])\n"
