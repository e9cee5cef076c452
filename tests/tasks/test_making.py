"""Data files made once whoever asks: makers that want the same file at once take turns (a lock file beside it),
the ones that waited use what the first made, and a lock left by a dead process is taken over."""
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from launchers import MENNDL

from menndl_py.errors import UserError
from menndl_py.tasks import make_task
from menndl_py.tasks.making import DataLock, lock_path, make_unless_made, temp_path


class FileMaker:
    """The part of a task that `make_unless_made` uses: a data file and a maker that counts its calls."""

    parallel_data = False

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.data_path = data_dir / "made.h5"
        self.calls = 0

    def make_data(self) -> str:
        self.calls += 1
        tmp = temp_path(self.data_path, ".tmp")
        tmp.write_text("data")
        tmp.replace(self.data_path)
        return "made"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _in_thread(function) -> tuple[threading.Thread, dict]:
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", function()), daemon=True)
    thread.start()
    return thread, out


def test_temporary_names_carry_host_and_pid(tmp_path):
    name = temp_path(tmp_path / "d.h5", ".tmp").name
    assert name == f".d.h5.{socket.gethostname()}.{os.getpid()}.tmp"


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    maker = FileMaker(tmp_path)
    lock_path(maker.data_path).write_text(f"{socket.gethostname()} {_dead_pid()} 42\n")
    notes = []
    assert make_unless_made(maker, say=notes.append) == "made" and maker.calls == 1
    assert any("taking over the lock of pid" in note for note in notes), notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made.h5"]


def test_a_waiting_maker_uses_the_file_the_lock_holder_made(tmp_path):
    holder = FileMaker(tmp_path)
    lock = DataLock(holder.data_path)
    assert lock.acquire() is False
    waiter = FileMaker(tmp_path)
    notes = []
    thread, out = _in_thread(lambda: make_unless_made(waiter, force=True, say=notes.append))
    time.sleep(1.5)
    assert thread.is_alive() and notes and notes[0].startswith(f"waiting for {lock.path}: pid {os.getpid()} on ")
    holder.make_data()
    lock.release()
    thread.join(30)
    assert not thread.is_alive() and out["value"] is None and waiter.calls == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made.h5"]


def test_a_live_holder_is_waited_for_and_its_lock_taken_over_once_it_dies(tmp_path):
    maker = FileMaker(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(maker.data_path).write_text(f"{socket.gethostname()} {sleeper.pid} -\n")
        thread, out = _in_thread(lambda: make_unless_made(maker))
        time.sleep(1.5)
        assert thread.is_alive() and maker.calls == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    thread.join(30)
    assert out["value"] == "made" and maker.calls == 1 and not lock_path(maker.data_path).exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    maker = FileMaker(tmp_path)
    lock_path(maker.data_path).write_text(f"not-{socket.gethostname()} {_dead_pid()} 7\n")
    notes = []
    thread, _ = _in_thread(lambda: make_unless_made(maker, say=notes.append))
    time.sleep(1.5)
    assert thread.is_alive() and maker.calls == 0
    assert notes == [f"waiting for {lock_path(maker.data_path)}: pid {_holder_pid(maker)} on "
                     f"not-{socket.gethostname()} (job 7) is making the data; if that process is gone, remove the "
                     "lock file"]
    lock_path(maker.data_path).unlink()  # as the message says
    thread.join(30)
    assert maker.calls == 1


def _holder_pid(maker) -> int:
    return int(lock_path(maker.data_path).read_text().split()[1])


def test_two_data_makers_at_once_both_succeed_and_the_file_is_whole(tmp_path):
    # they used to share one temporary name; the loser deleted the winner's file (or HDF5 refused to open it twice)
    jobs = [subprocess.Popen([MENNDL, "data", "make", "elemnet", "--data-dir", "d"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for job in jobs:
        try:
            outs.append(job.communicate(timeout=240))
        finally:
            job.kill()
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in outs]
    said = " ".join(out for out, _ in outs)
    assert "train: " in said and ("made by another process meanwhile" in said or "already made" in said), said
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["elemnet.h5"]
    make_task("elemnet", {}, tmp_path / "d").check_data()


def test_a_task_that_writes_no_file_leaves_no_data_directory(tmp_path):
    assert make_unless_made(make_task("synthetic", {}, tmp_path / "data")) == "synthetic: no data needed"
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_data_directory_should_be_is_one_line(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    for where in ("data", "data/sub"):
        with pytest.raises(UserError) as info:
            make_unless_made(FileMaker(tmp_path / where))
        assert str(info.value) == f"{tmp_path / where}: cannot create the data directory (a file is in the way)"
