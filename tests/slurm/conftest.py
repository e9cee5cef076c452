"""Fixtures of the Slurm tests: a one-node Slurm cluster on this machine (launch/local-slurm.sh, which installs
slurm-wlm, munge and PMIx from apt on first use), and how to submit to it with a time-out."""
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from launchers import slurm_env

REPO = Path(__file__).resolve().parents[2]
LOCAL_SLURM = REPO / "launch" / "local-slurm.sh"


class Job:
    def __init__(self, returncode: int, log: str, job_id: str, stderr: str):
        self.returncode, self.log, self.job_id, self.stderr = returncode, log, job_id, stderr

    def error_lines(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith("menndl: error:")]


class Slurm:
    """Submit to the local cluster; a job that outlives its time-out is cancelled and fails the test."""

    def __init__(self, hostname: str):
        self.hostname = hostname

    def sbatch(self, script: Path, *options: str, args: tuple = (), cwd: Path, timeout: float,
               env: dict | None = None) -> Job:
        """`sbatch --wait OPTIONS SCRIPT ARGS`: the job's exit status and its log (stdout and stderr)."""
        name = f"menndl-test-{uuid.uuid4().hex[:8]}"
        log = cwd / f"{name}.out"
        command = ["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={log}", *options,
                   str(script), *map(str, args)]
        try:
            out = subprocess.run(command, cwd=cwd, env={**slurm_env(), **(env or {})}, capture_output=True,
                                 text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", "--full", f"--name={name}"], timeout=30)
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"job {name} did not end in {timeout} s; its log ends:\n{tail}")
        job_id = out.stdout.strip().splitlines()[0].split(";")[0] if out.stdout.strip() else ""
        return Job(out.returncode, log.read_text() if log.exists() else "", job_id, out.stderr)

    def srun(self, *args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        name = f"menndl-test-{uuid.uuid4().hex[:8]}"
        try:
            return subprocess.run(["srun", f"--job-name={name}", *args], cwd=cwd, env=slurm_env(),
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", "--full", f"--name={name}"], timeout=30)
            raise AssertionError(f"srun {' '.join(args)} did not end in {timeout} s")


def _local_slurm(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL_SLURM), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm():
    """A running one-node cluster (started here, and stopped at the end unless it was already running)."""
    if os.geteuid() != 0 and not shutil.which("sudo"):
        pytest.skip("the local Slurm cluster needs root (or sudo)")
    was_running = shutil.which("sinfo") is not None and _local_slurm("status", 30).returncode == 0
    started = _local_slurm("start", 1200)  # installs slurm-wlm, munge, libpmix-dev on first use
    assert started.returncode == 0, f"launch/local-slurm.sh start failed:\n{started.stdout}\n{started.stderr}"
    try:
        yield Slurm(subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip())
    finally:
        if not was_running:
            stopped = _local_slurm("stop", 180)
            assert stopped.returncode == 0, f"launch/local-slurm.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}"
