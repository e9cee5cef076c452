"""The engine under real MPI: Horovod groups, failures, a killed job resumed, launch errors. Each job runs in a
subprocess with a timeout, so a hang fails the test."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from launchers import MENNDL, MPIRUN, PYTHON, mpi_env, mpirun
from search_jobs import rows, write_config

HERE = Path(__file__).parent


def test_both_ranks_of_a_group_hold_identical_weights(elemnet_data_dir, tmp_path):
    out = mpirun(5, PYTHON, str(HERE / "mpi_scripts.py"), "identical_weights", str(elemnet_data_dir),
                 timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(r["group"] for r in results) == [0, 1]
    for r in results:
        assert r["status"] == "ok"
        assert r["n_weights"] > 5000
        assert r["max_abs_diff"] == 0.0  # bit for bit: the same averaged gradients on both ranks
        assert not r["same_shard"]  # ...computed from different shards of the data
        assert r["fitness"][0] == r["fitness"][1]  # the validation metric is reduced over the group


def test_a_group_trains_a_channels_last_conv_net_as_it_trains_nchw(tmp_path):
    out = mpirun(2, PYTHON, str(HERE / "mpi_scripts.py"), "channels_last_group", timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert result["nhwc_is_channels_last"]
    assert result["ranks"] == 0.0  # the broadcast and the averaged gradients reach both ranks' NHWC weights
    assert result["layouts"] < 1e-4  # the same training as in NCHW, to rounding
    assert result["moved"] > 1e-3  # ...and it did train


def test_search_with_injected_failures_finishes(elemnet_data_dir, tmp_path):
    # Faults are drawn per evaluation id: with seed 1, ids 0-15 hold 4 exceptions, 3 NaNs and 1 time-out.
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 16, "seed": 1},
                          cluster={"ranks_per_candidate": 2, "candidate_timeout": 6},
                          debug={"inject_faults": {"exception": 0.2, "nonfinite": 0.2, "timeout": 0.12}})
    out = mpirun(5, MENNDL, "run", str(config), "--no-progress", timeout=420, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    stored = rows(tmp_path / "runs" / "job")
    assert len(stored) == 16
    statuses = [r["status"] for r in stored]
    assert {s: statuses.count(s) for s in set(statuses)} == {"ok": 8, "error": 4, "nonfinite": 3, "timeout": 1}
    for r in stored:
        if r["status"] == "error":
            assert "injected fault" in r["message"]
        if r["status"] == "timeout":
            assert "time-out" in r["message"]
            assert float(r["end_time"]) - float(r["start_time"]) < 6 + 6
    assert {r["ranks"] for r in stored} == {"2"}
    assert {r["group"] for r in stored} == {"0", "1"}
    assert json.loads((tmp_path / "runs" / "job" / "run.json").read_text())["finished"] is True
    assert (tmp_path / "runs" / "job" / "best" / "model.pt").exists()


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


def test_sigkill_of_the_whole_job_then_resume_loses_and_repeats_nothing(elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 24}, training={"epochs": 3})
    run_dir = tmp_path / "runs" / "job"
    job = subprocess.Popen([MPIRUN, "--oversubscribe", "-np", "5", MENNDL, "run", str(config), "--no-progress"],
                           cwd=tmp_path, env=mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and job.poll() is None:
            if (run_dir / "results.csv").exists() and len(rows(run_dir)) >= 5:
                break
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before it could be killed"
        for pid in _descendants(job.pid):
            os.kill(pid, signal.SIGKILL)
    finally:
        job.kill()
        job.wait(timeout=30)
    before = rows(run_dir)
    assert 5 <= len(before) < 24
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["finished"] is False

    out = mpirun(5, MENNDL, "resume", str(run_dir), "--no-progress", timeout=420, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    after = rows(run_dir)
    assert after[: len(before)] == before  # nothing stored was lost or changed
    assert sorted(int(r["id"]) for r in after) == list(range(24))  # nothing repeated, nothing skipped
    assert len({r["genome_hash"] for r in after}) == 24
    assert json.loads((run_dir / "checkpoint.json").read_text())["finished"] is True


def test_a_world_that_cannot_form_groups_is_a_one_line_error(elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, cluster={"ranks_per_candidate": 2})
    out = mpirun(4, MENNDL, "run", str(config), "--no-progress", timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    ours = [line for line in out.stderr.splitlines() if line.startswith("menndl: error:")]
    assert ours == ["menndl: error: cluster.ranks_per_candidate: 4 ranks = 1 master + 3 workers, which cannot "
                    "form groups of 2; launch 1 + a multiple of 2 ranks"]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "job" / "results.csv").exists()


def _wait_for_rows(run_dir: Path, n: int, job: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and job.poll() is None:
        if (run_dir / "results.csv").exists() and len(rows(run_dir)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{n} results did not appear (job ended: {job.poll() is not None})")


def test_usr1_stops_every_rank_cleanly_and_the_same_command_resumes(elemnet_data_dir, tmp_path):
    """Slurm's `--signal=USR1@120`: stop handing out work, keep what is in flight, exit 3; `menndl run` again
    (a requeued job runs the same command) continues the run."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 20}, training={"epochs": 4})
    run_dir = tmp_path / "runs" / "job"
    command = [MPIRUN, "--oversubscribe", "-np", "5", MENNDL, "run", str(config), "--no-progress"]
    job = subprocess.Popen(command, cwd=tmp_path, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        _wait_for_rows(run_dir, 4, job)
        job.send_signal(signal.SIGUSR1)  # mpirun forwards it to every rank
        signalled = time.time()
        stdout, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 3, stderr[-3000:]
    assert time.time() - signalled < 60
    assert "stopped by SIGUSR1" in stdout
    before = rows(run_dir)
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["finished"] is False and len(before) < 20
    assert {w["id"] for w in checkpoint["in_flight"]}.isdisjoint(int(r["id"]) for r in before)

    out = subprocess.run(command, cwd=tmp_path, env=mpi_env(), capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    after = rows(run_dir)
    assert after[: len(before)] == before
    assert sorted(int(r["id"]) for r in after) == list(range(20))
    assert len({r["genome_hash"] for r in after}) == 20
