"""What the master stores survives what can go wrong: a failed write, repeated crashes, a damaged checkpoint, a
changed config; a finished run can be extended; a stopping job skips the test scoring. In process (serial
transport), except where the `menndl` command itself is the point."""
import errno
import json
import os
import signal
import subprocess
import time

import pytest
from launchers import MENNDL, menndl
from search_jobs import write_config
from test_master import N, interrupt, read_rows, run

from menndl_py.commands.run import make_master, prepare_run_dir
from menndl_py.engine import master as master_module
from menndl_py.engine.transport.serial import run_serial
from menndl_py.errors import UserError
from menndl_py.rundir import read_checkpoint


def ids(run_dir) -> list[int]:
    return sorted(int(r["id"]) for r in read_rows(run_dir))


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_result_that_could_not_be_stored_is_sent_again(setup, failure):
    """A full disk (or Ctrl-C) on the 5th append: the launch ends, and its resume evaluates id 4 again."""
    cfg, task, evaluator = setup()
    master = make_master(cfg, task, 1, progress=False)
    write_line, appends = master.store._write_line, []

    def fifth_fails(cells):
        appends.append(cells[0])
        if len(appends) == 5:
            raise failure
        write_line(cells)

    master.store._write_line = fifth_fails
    with pytest.raises(type(failure)):
        try:
            run_serial(master, evaluator)
        finally:
            master.close()
    assert ids(cfg.run_dir) == [0, 1, 2, 3]
    assert 4 in {w["id"] for w in read_checkpoint(cfg.run_dir / "checkpoint.json")["in_flight"]}
    resumed = run(cfg, task, evaluator)
    assert ids(cfg.run_dir) == list(range(N)) and len({r["genome_hash"] for r in resumed.store.rows}) == N


def test_a_genome_in_flight_at_two_crashes_is_stored_as_crashed_and_never_sent_again(setup):
    cfg, task, evaluator = setup()
    _, in_flight = interrupt(cfg, task, evaluator, 3)  # crash 1 with id 3 in flight
    second = make_master(cfg, task, 1, progress=False)
    assert second.next_work(group=0).id == 3  # sent again: crash 2
    third = make_master(cfg, task, 1, progress=False)
    crashed = [r for r in third.store.rows if r["status"] == "crashed"]
    assert [r["id"] for r in crashed] == [3] and json.loads(crashed[0]["genome"]) == in_flight.genome
    assert "in flight at 2 crashes" in crashed[0]["message"] and crashed[0]["fitness"] is None
    sent = []
    while (work := third.next_work(group=0)) is not None:
        sent.append(work.id)
        third.on_result(evaluator.evaluate(work))
    third.close()
    assert 3 not in sent
    rows = read_rows(cfg.run_dir)
    assert sorted(int(r["id"]) for r in rows) == list(range(N))
    assert [r["status"] for r in rows].count("crashed") == 1


def test_a_clean_stop_does_not_count_as_a_crash(setup):
    cfg, task, evaluator = setup()
    first, in_flight = interrupt(cfg, task, evaluator, 2)
    first.stop("SIGUSR1")  # its group abandons id 2 (INTERRUPTED), the launch ends cleanly
    first.close()
    second = make_master(cfg, task, 1, progress=False)
    assert second.next_work(group=0).id == 2  # then a crash
    third = make_master(cfg, task, 1, progress=False)
    assert [w.id for w in third.resend] == [2] and not any(r["status"] == "crashed" for r in third.store.rows)
    third.close()


def test_a_new_run_directory_belongs_to_its_config_from_the_start(setup, make_config):
    """Killed while the workers load their data: results.csv exists, no genome was sent. Another config is
    refused all the same."""
    cfg, task, _ = setup()
    os.rmdir(cfg.run_dir)
    prepare_run_dir(cfg, resume=False)
    make_master(cfg, task, 1, progress=False)  # opens results.csv; killed before the first genome
    other = make_config({**json.loads(json.dumps(cfg.to_dict())), "training": {"epochs": 3}})
    with pytest.raises(UserError, match="holds a run of another configuration"):
        prepare_run_dir(other, resume=False)
    assert prepare_run_dir(cfg, resume=False) == "resume"


@pytest.mark.parametrize("damage", ["empty", "garbage", "missing"])
def test_a_damaged_checkpoint_is_rebuilt_with_a_warning(setup, make_config, capsys, damage):
    cfg, task, evaluator = setup()
    prepare_run_dir(cfg, resume=False)
    interrupt(cfg, task, evaluator, 5)  # killed: id 5 in flight, listed in the journal
    checkpoint = cfg.run_dir / "checkpoint.json"
    if damage == "missing":
        checkpoint.unlink()
    else:
        checkpoint.write_text("" if damage == "empty" else "\0\0\0\0")  # a node crash before the data reached disk
    other = make_config({**json.loads(json.dumps(cfg.to_dict())), "training": {"epochs": 3}})
    with pytest.raises(UserError, match="holds a run of another configuration"):  # checked against config.yaml
        prepare_run_dir(other, resume=False)
    capsys.readouterr()
    assert prepare_run_dir(cfg, resume=True) == "resume"
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"menndl: warning: {checkpoint}: ")
    resumed = run(cfg, task, evaluator)
    assert ids(cfg.run_dir) == list(range(N))  # id 5 was in the journal: sent again
    assert len({r["genome_hash"] for r in resumed.store.rows}) == N


def test_results_and_journal_are_forced_to_disk_every_few_seconds(setup, monkeypatch):
    cfg, task, evaluator = setup()
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    master = make_master(cfg, task, 1, progress=False)
    synced.clear()
    work = master.next_work(group=0)
    assert synced == [str(cfg.run_dir / "checkpoint.json.tmp"), str(cfg.run_dir)]  # the snapshot: file, directory
    master.on_result(evaluator.evaluate(work))
    master.next_work(group=0)
    synced.clear()
    assert not master.catch_up() or not synced  # not yet due
    monkeypatch.setattr(master_module, "SYNC_SECONDS", 0.0)
    while master.catch_up():
        pass
    assert sorted(synced) == [str(cfg.run_dir / "checkpoint.journal"), str(cfg.run_dir / "results.csv")]
    master.close()


def test_a_finished_run_is_extended_by_a_larger_budget(elemnet_data_dir, tmp_path):
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 2}, training={"epochs": 1})
    run_dir = tmp_path / "runs" / "job"
    assert menndl("run", str(config), "--no-progress", cwd=tmp_path, timeout=300).returncode == 0
    out = menndl("run", str(config), "--no-progress", "--set", "search.max_evaluations=4", "--set",
                 "search.max_minutes=60", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "budget has been extended" in out.stdout
    assert ids(run_dir) == [0, 1, 2, 3]
    assert read_checkpoint(run_dir / "checkpoint.json")["finished"] is True
    assert json.loads((run_dir / "run.json").read_text())["evaluations"] == 4


def test_a_stopping_job_skips_the_test_scoring(elemnet_data_dir, tmp_path):
    """SIGUSR1 comes 120 s before the time limit: the job must end well inside that window."""
    config = write_config(tmp_path, elemnet_data_dir, search={"max_evaluations": 100}, training={"epochs": 3})
    run_dir = tmp_path / "runs" / "job"
    job = subprocess.Popen([MENNDL, "run", str(config), "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not ((run_dir / "best" / "model.pt").exists() and len(read_rows(run_dir)) >= 1):
            assert time.time() < deadline and job.poll() is None, "no network was stored"
            time.sleep(0.2)
        job.send_signal(signal.SIGUSR1)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 3, stderr[-3000:]
    assert "test-split scoring skipped" in stdout and "test mae" not in stdout
    facts = json.loads((run_dir / "run.json").read_text())
    assert "best_test" not in facts and facts["best_id"] is not None

