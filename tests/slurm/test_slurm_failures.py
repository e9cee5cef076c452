"""Failures in jobs of slurm/menndl-cpu.sbatch on the local Slurm cluster end the job instead of holding its nodes:
an error on one rank after the ranks have parted (MPI_Abort: srun and the script exit with menndl's status), and
a worker rank that dies (SIGKILL, as the OOM killer does; srun's PMIx plugin cancels the step: status 137), after
which the same script submitted again continues the run with nothing lost or repeated."""
import subprocess
import time
import uuid
from pathlib import Path

import yaml
from launchers import slurm_env
from search_jobs import rows, write_config

REPO = Path(__file__).resolve().parents[2]
CPU_SCRIPT = REPO / "slurm" / "menndl-cpu.sbatch"


def _rank_pid(job_name: str, rank: int) -> int | None:
    """The pid of the menndl process of `rank` in the job named `job_name`, if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (f"SLURM_JOB_NAME={job_name}".encode() in environ and f"SLURM_PROCID={rank}".encode() in environ
                and b"menndl" in command and b"srun" not in command):
            return int(entry.name)
    return None


def _submit(config: Path, name: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={cwd}/{name}.out",
                             "-n", "5", "--overcommit", str(CPU_SCRIPT), str(config)],
                            cwd=cwd, env=slurm_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cancel(name: str) -> None:
    subprocess.run(["scancel", "--full", f"--name={name}"], timeout=30)


def test_an_error_on_rank_0_after_the_handshake_ends_the_job_with_status_2(slurm, tmp_path):
    """run.json holds a list: rank 0 meets it after the handshake, while the workers set up; it prints one line and
    aborts the world with status 2, which srun and the script pass on."""
    cfg = {"run": {"name": "job", "directory": str(tmp_path / "runs")},
           "task": {"name": "synthetic", "options": {"seconds": 0.2}},
           "search": {"population": 4, "max_evaluations": 6}, "cluster": {"ranks_per_candidate": 1}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_json = tmp_path / "runs" / "job" / "run.json"
    run_json.parent.mkdir(parents=True)
    run_json.write_text("[]")
    job = slurm.sbatch(CPU_SCRIPT, "-n", "3", "--overcommit", args=(config,), cwd=tmp_path, timeout=180)
    assert job.returncode == 2, job.log[-3000:]
    assert "[menndl-cpu] menndl exited with status 2" in job.log
    assert job.error_lines() == [f"menndl: error: {run_json}: expected a JSON object"]
    assert "Traceback" not in job.log


def test_a_killed_worker_rank_ends_the_job_and_a_resubmission_loses_nothing(slurm, elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 10},
                          cluster={"ranks_per_candidate": 2, "candidate_timeout": 15, "stop_grace": 0})
    run_dir = tmp_path / "runs" / "job"
    name = f"menndl-test-{uuid.uuid4().hex[:8]}"
    job = _submit(config, name, tmp_path)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and job.poll() is None:
            if (run_dir / "results.csv").exists() and len(rows(run_dir)) >= 2:
                break
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before a rank could be killed"
        victim = _rank_pid(name, 2)  # group 0's second rank
        assert victim is not None
        subprocess.run(["kill", "-KILL", str(victim)], check=True)
        killed = time.monotonic()
        job.communicate(timeout=120)
        ended = time.monotonic() - killed
    finally:
        if job.poll() is None:
            _cancel(name)
            job.kill()
    log = (tmp_path / f"{name}.out").read_text()
    assert ended < 60, log[-3000:]
    assert job.returncode == 137, log[-3000:]  # srun's PMIx plugin cancels the step; the others are killed too
    before = rows(run_dir)
    assert 2 <= len(before) < 10

    again = f"menndl-test-{uuid.uuid4().hex[:8]}"
    resumed = _submit(config, again, tmp_path)
    try:
        resumed.communicate(timeout=420)
    finally:
        if resumed.poll() is None:
            _cancel(again)
            resumed.kill()
    assert resumed.returncode == 0, (tmp_path / f"{again}.out").read_text()[-3000:]
    after = rows(run_dir)
    assert after[: len(before)] == before
    assert sorted(int(r["id"]) for r in after) == list(range(10))
    assert len({r["genome_hash"] for r in after}) == 10
