"""menndl_py.rundir.lock: one `menndl run` or `resume` at a time on a run directory."""
import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from launchers import MENNDL, menndl, one_line_error
from search_jobs import rows, write_config

from menndl_py.errors import UserError
from menndl_py.rundir import RunLock


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path):
    run_dir = tmp_path / "runs" / "job"
    first = RunLock(run_dir / "run.lock")
    first.acquire()
    holder = json.loads((run_dir / "run.lock").read_text())
    assert (holder["host"], holder["pid"]) == (socket.gethostname(), first.me["pid"])
    with pytest.raises(UserError, match=f"{run_dir}: in use by another menndl"):
        RunLock(run_dir / "run.lock").acquire()
    first.release()
    assert not (run_dir / "run.lock").exists()
    second = RunLock(run_dir / "run.lock")
    second.acquire()
    second.release()
    assert not run_dir.exists()  # made for the lock and left empty: removed again


def test_a_stale_lock_on_this_host_is_taken_over_with_a_note(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "slurm_job_id": None}))
    notes = []
    taker = RunLock(lock, note=notes.append)
    taker.acquire()
    assert json.loads(lock.read_text())["pid"] == taker.me["pid"]
    assert len(notes) == 1 and "taken over from a process that is no longer running" in notes[0]
    taker.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_lock_of_another_host_says_how_to_clear_it(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"host": "node-17", "pid": 1234, "slurm_job_id": "991"}))
    with pytest.raises(UserError) as error:
        RunLock(lock).acquire()
    assert str(error.value) == (f"{tmp_path}: in use by a menndl on host node-17, pid 1234, Slurm job 991; if it is "
                                f"no longer running, remove {lock} and start again")


def test_an_earlier_launch_of_the_same_slurm_job_is_taken_over(tmp_path, monkeypatch):
    """A requeued job (after a node failure, on another node) finds the lock of its own first launch."""
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"host": "node-17", "pid": 1234, "slurm_job_id": "991", "slurm_restart": "0"}))
    notes = []
    RunLock(lock, note=notes.append).acquire()
    assert "an earlier launch of this Slurm job" in notes[0]


@pytest.mark.slow
def test_two_runs_on_one_run_directory(elemnet_data_dir, tmp_path):
    """The second `menndl run` (or `resume`) refuses while the first works; the first's lock is gone when it ends
    (stopped, exit 3), and when a launch ends with a user error."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 100}, training={"epochs": 20})
    run_dir = tmp_path / "runs" / "job"
    first = subprocess.Popen([MENNDL, "run", str(config), "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "run.lock").exists():
            assert time.time() < deadline and first.poll() is None, "the first run did not start"
            time.sleep(0.1)
        message = one_line_error(menndl("run", str(config), "--no-progress", cwd=tmp_path))
        assert message.startswith(f"{run_dir}: in use by another menndl (host {socket.gethostname()}, pid ")
        assert one_line_error(menndl("resume", str(run_dir), "--no-progress", cwd=tmp_path)).startswith(
            f"{run_dir}: in use by another menndl")
        assert first.poll() is None, "the first run ended before the second was refused"
        first.send_signal(signal.SIGUSR1)
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 3, stderr[-3000:]
    stored = [int(r["id"]) for r in rows(run_dir)]
    assert stored == sorted(set(stored))  # one run stored them: no id twice
    assert not (run_dir / "run.lock").exists()
    other = menndl("run", str(config), "--no-progress", "--set", "training.epochs=3", cwd=tmp_path)
    assert "another configuration" in one_line_error(other)
    assert not (run_dir / "run.lock").exists()


def test_a_lock_of_a_killed_but_unreaped_process_is_stale(tmp_path):
    """A rank 0 killed with its job may linger as a zombie (no init to reap it in a container): it holds nothing."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, not yet waited for: a zombie
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": child.pid, "slurm_job_id": None}))
    notes = []
    RunLock(lock, note=notes.append).acquire()
    child.wait()
    assert len(notes) == 1
