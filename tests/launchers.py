"""How the tests launch jobs: `menndl` and mpirun in a subprocess with a time-out, and the environment for Slurm
jobs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MPIRUN = shutil.which("mpirun")
PYTHON = sys.executable
MENNDL = str(Path(sys.executable).with_name("menndl"))


def menndl(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `menndl` command in one process; a hang past `timeout` fails the test."""
    return subprocess.run([MENNDL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The message of a user error: exit status 2 and one line on stderr, checked."""
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("menndl: error: "), out.stderr
    return lines[0][len("menndl: error: "):]


def mpi_env() -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1")
    env.pop("CI", None)
    return env


def mpirun(n: int, *args: str, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    """Run `mpirun -np n ARGS` to completion; a hang past `timeout` fails the test (and kills the job)."""
    return subprocess.run([MPIRUN, "--oversubscribe", "-np", str(n), *args], cwd=cwd, env=mpi_env(),
                          capture_output=True, text=True, timeout=timeout)
def results_of(out: subprocess.CompletedProcess) -> list[dict]:
    """The JSON of each `RESULT {...}` line a job printed (tests/mpi/mpi_scripts.py), after checking it ended well."""
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]


def make_data_on_two_ranks(data_module: str, settings, path: Path, counts: dict, seed: int, timeout: float) -> list:
    """Every rank's return of `data_module`'s make_dataset(path, settings, counts, seed) on 2 MPI ranks."""
    script = (f"import dataclasses, json, sys\nfrom mpi4py import MPI\nfrom menndl_py.engine.transport import mpi\n"
              f"from {type(settings).__module__} import {type(settings).__name__} as Settings\n"
              f"from {data_module} import make_dataset\n"
              f"result = make_dataset(sys.argv[1], Settings(**json.loads(sys.argv[2])), json.loads(sys.argv[3]), "
              f"{seed}, share=mpi.share())\n"
              f"everyone = MPI.COMM_WORLD.gather(result, root=0)\n"
              f"if MPI.COMM_WORLD.rank == 0:\n    print('RESULT ' + json.dumps(everyone))\n")
    out = mpirun(2, PYTHON, "-c", script, str(path), json.dumps(settings.__dict__), json.dumps(counts),
                 timeout=timeout, cwd=path.parent)
    return results_of(out)


VENV_BIN = str(Path(sys.executable).parent)


def slurm_env() -> dict:
    """This environment with the venv's `menndl` first on PATH, and nothing of an enclosing MPI launch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_", "SLURM_")) and k != "CI"}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", PYTHONUNBUFFERED="1")
    return env
