"""A task's data file made once, whoever asks for it: jobs that want the same file at the same time take turns.

A lock file beside the data file (`<file>.lock`, created with O_EXCL and holding the maker's host, pid and job id;
`flock` is unreliable on Lustre and NFS) lets one maker write while the others wait, then use the file it made. A
lock left by a process that is gone, on this host, is taken over. Makers write to temporary names of their own
(`temp_path`) and rename the finished file into place, so nobody ever reads half a file.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import h5py
import numpy as np

from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.tasks.base import SPLITS

POLL_SECONDS = 0.5
TAKEOVER_STALE_SECONDS = 60.0  # a takeover marker older than this was left by a maker that died while taking over


def temp_path(path: Path, suffix: str) -> Path:
    """A name beside `path` that no other process (on any host) uses at the same time."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}{suffix}")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def item_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of item `index` (an image, a block) of `split`: the same whatever process makes it, so a
    simulated data set is the same for any number of ranks. Streams other than 0 are independent sets of the same
    split (each multislice microscope of a training split its own)."""
    key = (SPLITS.index(split), index) + ((stream,) if stream else ())
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def split_blocks(n: int, block: int, share: Solo) -> tuple[list[int], list[int]]:
    """(every block of a split of `n` items in blocks of `block`, the blocks this rank makes)."""
    blocks = list(range(-(-n // block)))
    return blocks, share.mine(blocks)


@contextmanager
def parallel_h5(path: Path, counts: dict[str, int], seed: int, share: Solo) -> Iterator[Optional[h5py.File]]:
    """The HDF5 file of a simulated data set, written by rank 0 of `share` while every rank simulates: checks the
    split counts and the seed, then yields on rank 0 the file open at a temporary name of its own (None on the
    other ranks); at the end renames it into place, or removes it after an error."""
    bad = [k for k in counts if k not in SPLITS]
    if bad:
        raise UserError(f"unknown data split(s) {', '.join(map(repr, bad))} (expected {', '.join(SPLITS)})")
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UserError(f"task.options.{split}_size: must be an integer >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed: must be an integer >= 0, got {seed!r}")
    path = Path(path)
    partial = temp_path(path, ".partial")
    error, f = None, None
    if share.rank == 0:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = h5py.File(partial, "w")
        except OSError as exc:
            error = f"{partial}: cannot create ({exc})"
    error = share.bcast(error)
    if error is not None:
        raise UserError(error)
    try:
        yield f
    except BaseException:
        if f is not None:
            f.close()
            partial.unlink(missing_ok=True)
        raise
    if f is not None:
        f.close()
        os.replace(partial, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(lock: Path) -> Optional[dict]:
    """{host, pid, job} of the lock's maker; None if it is gone or not yet written."""
    try:
        fields = lock.read_text().split()
    except (OSError, UnicodeDecodeError):  # gone meanwhile, or not a lock this code wrote
        return None
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return {"host": fields[0], "pid": int(fields[1]), "job": fields[2] if len(fields) > 2 else "-"}


class DataLock:
    """The lock of one data file (see the module's description). `acquire` waits; `release` removes it."""

    def __init__(self, data_path: Path, say: Callable[[str], None] = lambda text: None):
        self.path = lock_path(Path(data_path))
        self.say = say
        self.me = f"{socket.gethostname()} {os.getpid()} {os.environ.get('SLURM_JOB_ID', '-')}\n"

    def try_acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise UserError(f"{self.path}: cannot create the data lock ({exc.strerror or exc})") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(self.me)
        return True

    def acquire(self) -> bool:
        """Take the lock, waiting while another live maker holds it. Returns whether it had to wait."""
        waited, told = False, False
        while not self.try_acquire():
            holder = _holder(self.path)
            if holder is not None and holder["host"] == socket.gethostname() and not _alive(holder["pid"]):
                self._take_over(holder)
                continue
            if not told:
                maker = "an unknown process" if holder is None else \
                    f"pid {holder['pid']} on {holder['host']} (job {holder['job']})"
                self.say(f"waiting for {self.path}: {maker} is making the data; if that process is gone, remove "
                         f"the lock file")
                told = True
            waited = True
            time.sleep(POLL_SECONDS)
        return waited

    def _take_over(self, stale: dict) -> None:
        """Remove a dead maker's lock, unless another waiter is doing so (a marker file, made with O_EXCL, says
        who) or the lock changed hands meanwhile."""
        marker = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - marker.stat().st_mtime > TAKEOVER_STALE_SECONDS:
                    marker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(POLL_SECONDS)
            return
        os.close(fd)
        try:
            if _holder(self.path) == stale:
                self.say(f"{self.path}: taking over the lock of pid {stale['pid']}, which is gone")
                self.path.unlink(missing_ok=True)
        finally:
            marker.unlink(missing_ok=True)

    def release(self) -> None:
        try:
            if self.path.read_text() == self.me:
                self.path.unlink()
        except FileNotFoundError:
            pass


def make_unless_made(task, share: Solo = Solo(), force: bool = False,
                     say: Callable[[str], None] = lambda text: None) -> Optional[str]:
    """Make `task`'s data file unless it exists (or with `force`), under its lock; every rank of `share` calls
    this. Returns the maker's summary, or None when the file was there already or another process made it while
    this one waited for the lock (then it uses that file, even with `force`)."""
    decision, lock, new_dir = None, None, False
    if share.rank == 0:
        try:
            decision = "made" if task.data_path.exists() and not force else None
            if decision is None:
                try:
                    new_dir = not task.data_dir.exists()
                    task.data_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    why = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else \
                        exc.strerror or exc
                    raise UserError(f"{task.data_dir}: cannot create the data directory ({why})") from None
                lock = DataLock(task.data_path, say)
                waited = lock.acquire()
                decision = "made" if waited and task.data_path.exists() else "make"
        except UserError as exc:
            decision = f"error: {exc}"
    decision = share.bcast(decision)
    if decision.startswith("error: "):
        raise UserError(decision.removeprefix("error: "))
    if decision == "made":
        if lock is not None:
            lock.release()
        return None
    try:
        if task.parallel_data:
            return task.make_data(share)
        return task.make_data() if share.rank == 0 else None
    finally:
        if lock is not None:
            lock.release()
            if new_dir and not any(task.data_dir.iterdir()):  # a task that writes no file (synthetic)
                task.data_dir.rmdir()
