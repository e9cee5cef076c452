"""Rank 0 opens and checks the run directory's store before the other ranks start work: a corrupt results.csv is
a one-line error and exit status 2 on every rank under mpirun, never workers waiting for ever."""
import signal
import subprocess
import time

import pytest
from launchers import MENNDL, mpirun
from search_jobs import rows, write_config


@pytest.fixture(scope="module")
def stopped_run(elemnet_data_dir, tmp_path_factory):
    """A run directory left by a real search in one process, stopped by SIGUSR1 after two results (so that the
    next `menndl run` continues it): (config, results.csv's bytes)."""
    tmp = tmp_path_factory.mktemp("store")
    config = write_config(tmp, elemnet_data_dir, search={"max_evaluations": 100}, training={"epochs": 1})
    results = tmp / "runs" / "job" / "results.csv"
    job = subprocess.Popen([MENNDL, "run", str(config), "--no-progress"], cwd=tmp, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (results.exists() and len(rows(results.parent)) >= 2):
            assert time.time() < deadline and job.poll() is None, "the search did not get going"
            time.sleep(0.2)
        job.send_signal(signal.SIGUSR1)
        _, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 3, stderr[-3000:]
    return config, results.read_bytes()


@pytest.mark.parametrize("damage, message", [
    ("row", "has 2 fields, expected 27: a corrupt row"),
    ("columns", "results.csv: columns do not match this task's"),
])
def test_a_corrupt_results_table_ends_every_rank_with_one_line(stopped_run, damage, message):
    config, good = stopped_run
    results = config.parent / "runs" / "job" / "results.csv"
    results.write_bytes(good + b"3,abc\n" if damage == "row" else b"id,abc\n" + good.split(b"\n", 1)[1])
    try:
        started = time.time()
        out = mpirun(5, MENNDL, "run", str(config), "--no-progress", timeout=120, cwd=config.parent)
        assert time.time() - started < 120
        assert out.returncode == 2, out.stderr[-3000:]
        errors = [line for line in out.stderr.splitlines() if line.startswith("menndl: error:")]
        assert len(errors) == 1 and message in errors[0] and str(results) in errors[0], out.stderr[-3000:]
        assert "Traceback" not in out.stderr
        assert not (config.parent / "runs" / "job" / "run.lock").exists()
    finally:
        results.write_bytes(good)
