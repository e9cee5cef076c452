"""Failures under real MPI end the job, never hang it: an error on one rank after the ranks part, one rank of a
group failing where its partner does not, a shard with no rows, a group gone silent (the watchdog), a worker rank
killed. Each job runs in a subprocess with a time-out, so a hang fails the test."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from launchers import MENNDL, MPIRUN, PYTHON, mpi_env, mpirun, results_of
from search_jobs import rows, write_config

HERE = Path(__file__).parent


def _synthetic_config(tmp_path: Path, evaluations: int = 6) -> Path:
    cfg = {"run": {"name": "job", "directory": str(tmp_path / "runs")},
           "task": {"name": "synthetic", "options": {"seconds": 0.2}},
           "search": {"population": 4, "max_evaluations": evaluations, "seed": 1},
           "cluster": {"ranks_per_candidate": 1}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("menndl: error:")]


@pytest.mark.parametrize("broken", ["not an object", "a directory"])
def test_an_error_on_rank_0_after_the_handshake_ends_every_rank(tmp_path, broken):
    """run.json is written by rank 0 after the setup handshake, while the workers set up: a UserError (it holds a
    list) or an OSError (it is a directory) there is one line, exit status 2, and no rank is left waiting."""
    config = _synthetic_config(tmp_path)
    run_json = tmp_path / "runs" / "job" / "run.json"
    run_json.parent.mkdir(parents=True)
    if broken == "a directory":
        run_json.mkdir()
    else:
        run_json.write_text("[]")
    start = time.monotonic()
    out = mpirun(3, MENNDL, "run", str(config), "--no-progress", timeout=90, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert time.monotonic() - start < 60
    expected = (f"menndl: error: {run_json}: expected a JSON object" if broken == "not an object" else
                f"menndl: error: {run_json}.tmp -> {run_json}: Is a directory")
    assert _our_lines(out.stderr) == [expected]
    assert "Traceback" not in out.stderr


def test_a_split_with_fewer_rows_than_ranks_per_candidate_is_refused(elemnet_data_dir, tmp_path):
    """val_size 1 with groups of 2 left one rank without validation rows (it failed alone, its partner waited in
    the allreduce for ever): refused at the evaluators' setup, exit status 2."""
    config = write_config(tmp_path, elemnet_data_dir, task={
        "name": "elemnet", "data_dir": str(elemnet_data_dir),
        "options": {"train_size": 200, "val_size": 1, "test_size": 50}})
    out = mpirun(3, MENNDL, "run", str(config), "--no-progress", timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert _our_lines(out.stderr) == [
        "menndl: error: task.options: the val split has 1 row for groups of 2 ranks (cluster.ranks_per_candidate), "
        "which leaves a rank without any; every rank needs at least one"]
    assert "Traceback" not in out.stderr
    assert not rows(tmp_path / "runs" / "job")


def test_one_rank_failing_in_any_phase_fails_its_whole_group_together(elemnet_data_dir, tmp_path):
    """A failure on one rank of a group (building, a training step, scoring), on the leader or its partner: both
    ranks report the same failure, and the group goes on to train the next candidate."""
    out = mpirun(2, PYTHON, str(HERE / "mpi_scripts.py"), "one_rank_fails", str(elemnet_data_dir),
                 timeout=240, cwd=tmp_path)
    seen = {r["case"]: [tuple(outcome) for outcome in r["outcomes"]] for r in results_of(out)}
    assert set(seen) == {"build on rank 1", "step 3 on rank 1", "step 5 on rank 0", "scoring on rank 1", "none"}
    for case, by_rank in seen.items():
        assert by_rank[0] == by_rank[1], case  # the same outcome on both ranks
    assert seen["build on rank 1"][0] == ("error", "rank 1 of the group: RuntimeError: injected: build")
    assert seen["step 3 on rank 1"][0] == ("oom", "rank 1 of the group: MemoryError: injected: step")
    assert seen["step 5 on rank 0"][0] == ("error", "RuntimeError: injected: step")
    assert seen["scoring on rank 1"][0] == ("error", "rank 1 of the group: RuntimeError: injected: scoring")
    assert seen["none"][0] == ("ok", "")


def _rank_pid(job_pid: int, rank: int, variable: str = "OMPI_COMM_WORLD_RANK") -> int:
    """The pid of the process of `rank` among `job_pid`'s descendants (by its launcher's rank variable)."""
    for pid in _descendants(job_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{variable}={rank}".encode() in environ and b"menndl" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError(f"no process of rank {rank} under {job_pid}")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _wait_for_rows(run_dir: Path, n: int, job: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and job.poll() is None:
        if (run_dir / "results.csv").exists() and len(rows(run_dir)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{n} results did not appear (job ended: {job.poll() is not None})")


def _launch(config: Path, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([MPIRUN, "--oversubscribe", "-np", "5", MENNDL, "run", str(config), "--no-progress"],
                            cwd=tmp_path, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _resume_and_check(run_dir: Path, before: list[dict], n: int, tmp_path: Path) -> list[dict]:
    """`menndl resume` finishes the run: earlier rows unchanged, ids 0..n-1 each once, no genome twice."""
    out = mpirun(5, MENNDL, "resume", str(run_dir), "--no-progress", timeout=420, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    after = rows(run_dir)
    assert after[: len(before)] == before
    assert sorted(int(r["id"]) for r in after) == list(range(n))
    assert len({r["genome_hash"] for r in after}) == n
    return after


def test_a_silent_group_is_lost_and_the_job_ends_resumable(elemnet_data_dir, tmp_path):
    """A rank stopped (SIGSTOP: hung) leaves its partner waiting in an allreduce and its group silent: past the
    candidate time-out plus the grace, the master stores the candidate as lost, stops the search and ends the job
    with status 3; the resume finishes the run and never sends the lost genome again."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 10},
                          cluster={"ranks_per_candidate": 2, "candidate_timeout": 8, "stop_grace": 0})
    run_dir = tmp_path / "runs" / "job"
    job = _launch(config, tmp_path)
    try:
        _wait_for_rows(run_dir, 2, job)
        hung = _rank_pid(job.pid, 2)  # group 0's second rank
        os.kill(hung, signal.SIGSTOP)
        stopped = time.monotonic()
        stdout, stderr = job.communicate(timeout=120)
        ended = time.monotonic() - stopped
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    assert job.returncode == 3, stderr[-3000:]
    assert ended < 60
    assert "stopped by the watchdog" in stdout
    before = rows(run_dir)
    lost = [r for r in before if r["status"] == "lost"]
    assert len(lost) == 1 and lost[0]["group"] == "0", before
    assert "silent for" in lost[0]["message"]
    after = _resume_and_check(run_dir, before, 10, tmp_path)
    assert [r["genome_hash"] for r in after].count(lost[0]["genome_hash"]) == 1


def test_a_killed_worker_rank_ends_the_job_and_resume_loses_nothing(elemnet_data_dir, tmp_path):
    """SIGKILL of one worker rank (as the OOM killer does) mid-run: mpirun ends the whole job within 60 s (with
    the status of the killed rank, 137), and the resume finishes the run with nothing lost or repeated."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 12}, training={"epochs": 3})
    run_dir = tmp_path / "runs" / "job"
    job = _launch(config, tmp_path)
    try:
        _wait_for_rows(run_dir, 3, job)
        os.kill(_rank_pid(job.pid, 4), signal.SIGKILL)  # group 1's second rank
        killed = time.monotonic()
        _, stderr = job.communicate(timeout=120)
        ended = time.monotonic() - killed
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    assert ended < 60
    assert job.returncode == 137, stderr[-3000:]  # mpirun kills the other ranks and exits with the signal's status
    before = rows(run_dir)
    assert 3 <= len(before) < 12
    _resume_and_check(run_dir, before, 12, tmp_path)
