"""Preemption on Slurm: SIGUSR1 to the batch shell (what `--signal=B:USR1@120` does before the time limit), the
ranks stop cleanly, the script requeues the job, and its second start finishes the run with nothing lost."""
import json
import subprocess
import time
import uuid

from launchers import slurm_env
from search_jobs import rows, write_config
from test_slurm import CPU_SCRIPT


def test_usr1_then_requeue_finishes_the_run_with_nothing_lost_or_repeated(slurm, elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 20}, training={"epochs": 4})
    run_dir = tmp_path / "runs" / "job"
    name = f"menndl-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / f"{name}.out"
    job = subprocess.Popen(["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={log}", "-n", "5",
                            "--overcommit", str(CPU_SCRIPT), str(config)], cwd=tmp_path, env=slurm_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job_id = job.stdout.readline().strip().split(";")[0]
        deadline = time.time() + 300
        while not ((run_dir / "results.csv").exists() and len(rows(run_dir)) >= 4):
            assert time.time() < deadline and job.poll() is None, "the search did not get going"
            time.sleep(0.5)
        stopped_at = len(rows(run_dir))
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)
        while job.poll() is None:  # a requeued job waits ~2 minutes (BeginTime) unless released
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                                   timeout=30).stdout.strip()
            if state == "PENDING":
                # Slurm revokes the job's credential at the requeue, to the second: a start in that same second
                # fails ("Job credential revoked"), which is why it holds requeued jobs. Release it a little later.
                time.sleep(3)
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], timeout=30)
                break
            assert time.time() < deadline + 300, f"job {job_id} was not requeued (state {state!r})"
            time.sleep(0.5)
        job.wait(timeout=600)
    finally:
        if job.poll() is None:
            subprocess.run(["scancel", "--full", f"--name={name}"], timeout=30)
            job.kill()
    text = log.read_text()
    assert job.returncode == 0, text[-3000:]
    assert "SIGUSR1" in text and "menndl exited with status 3" in text and "requeueing job" in text
    assert "(restart 1)" in text and "menndl exited with status 0" in text
    assert "stopped by SIGUSR1" in text
    after = rows(run_dir)
    assert stopped_at < 20
    assert sorted(int(r["id"]) for r in after) == list(range(20))  # nothing lost, nothing repeated
    assert len({r["genome_hash"] for r in after}) == 20
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["finished"] is True
    assert facts["scheduler"]["slurm_job_id"] == job_id and facts["scheduler"]["slurm_restart_count"] == "1"


def _stop_once(tmp_path, config, started, env=None) -> tuple[int, str]:
    """Submit CPU_SCRIPT, send USR1 to its batch shell once `started(run_dir)` holds; (exit status, log)."""
    run_dir = tmp_path / "runs" / "job"
    name = f"menndl-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / f"{name}.out"
    job = subprocess.Popen(["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={log}", "-n", "5",
                            "--overcommit", str(CPU_SCRIPT), str(config)], cwd=tmp_path,
                           env={**slurm_env(), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        job_id = job.stdout.readline().strip().split(";")[0]
        deadline = time.time() + 300
        while not started(run_dir):
            assert time.time() < deadline and job.poll() is None, "the search did not get going"
            time.sleep(0.2)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)
        job.wait(timeout=300)
    finally:
        if job.poll() is None:
            subprocess.run(["scancel", "--full", f"--name={name}"], timeout=30)
            job.kill()
    return job.returncode, log.read_text()


def test_a_launch_that_stores_no_row_is_not_requeued(slurm, elemnet_data_dir, tmp_path):
    """Stopped before its first result (candidates longer than the job, say): requeueing would repeat for ever."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 20}, training={"epochs": 200})
    status, text = _stop_once(tmp_path, config, lambda run_dir: (run_dir / "run.json").exists())
    assert status == 3, text[-3000:]
    assert "menndl exited with status 3" in text and "requeueing job" not in text
    assert "not requeueing: this launch stored no new rows (0 in" in text
    assert not list(tmp_path.glob(".menndl-launch.*"))  # the script's temporary file is removed


def test_requeues_stop_at_max_requeues(slurm, elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 100}, training={"epochs": 4})
    status, text = _stop_once(tmp_path, config, lambda run_dir: (run_dir / "results.csv").exists()
                              and len(rows(run_dir)) >= 2, env={"MENNDL_MAX_REQUEUES": "0"})
    assert status == 3, text[-3000:]
    assert "not requeueing: requeued 0 times already (MENNDL_MAX_REQUEUES=0)" in text
