"""Fixtures of the MPI tests: how to launch, and a small ElemNet data set."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MPIRUN = shutil.which("mpirun")
PYTHON = sys.executable
MENNDL = str(Path(sys.executable).with_name("menndl"))


def mpi_env() -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1")
    env.pop("CI", None)
    return env


def mpirun(n: int, *args: str, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    """Run `mpirun -np n ARGS` to completion; a hang past `timeout` fails the test (and kills the job)."""
    return subprocess.run([MPIRUN, "--oversubscribe", "-np", str(n), *args], cwd=cwd, env=mpi_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def elemnet_data(tmp_path_factory) -> Path:
    """A data directory holding elemnet.h5 made from the first 3,000 rows of each OQMD split."""
    from menndl_py.tasks.elemnet_data import make_dataset

    data_dir = tmp_path_factory.mktemp("elemnet-data")
    make_dataset(data_dir / "elemnet.h5", limit=3000)
    return data_dir
