"""The run directory's lock: one `menndl run` or `resume` at a time on a run directory.

A file created with O_EXCL (which Lustre and NFS honour, unlike `flock`) holding the host, pid, process start time
and Slurm job of its holder. A lock left by a dead process on this host, or by an earlier launch of the same Slurm
job (a requeue), is taken over with a note; one held by a live process, or by another host, is refused.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from menndl_py.errors import UserError

FRESH_SECONDS = 10.0  # an unreadable lock younger than this may still be being written by its holder


def _stat(pid: int) -> Optional[list[str]]:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> Optional[int]:
    """When process `pid` started (clock ticks since boot), to tell a reused pid from its first owner."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _alive(pid: int, start: Optional[int]) -> bool:
    """Whether process `pid`, started at `start`, still runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: the signal is all we know
    return fields[0] not in ("Z", "X") and (start is None or _start_ticks(pid) == start)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _holder() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0")}


class RunLock:
    """The lock file at `path`: `acquire()` or UserError; `release()` removes it if it is still ours (both may be
    called again); `note` gets the one line that says a stale lock was taken over."""

    def __init__(self, path: Path, note=lambda line: print(line, file=sys.stderr, flush=True)):
        self.path, self.note = Path(path), note
        self.held = self.made_dir = False
        self.me = _holder()

    def acquire(self) -> None:
        """Take the lock (making the run directory if there is none), or raise a UserError saying who holds it."""
        if self.held:
            return
        try:
            self.made_dir = not self.path.parent.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(3):  # another process may take over a stale lock at the same time: look again
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(self.me))
                    fh.flush()
                    os.fsync(fh.fileno())
                return
        except OSError as exc:
            self.release()
            raise UserError(f"{self.path}: cannot be written ({exc.strerror or exc})") from None
        raise UserError(f"{self.path}: could not be taken (other processes keep taking it)")

    def _read(self) -> Optional[str]:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def _take_over_if_stale(self) -> None:
        text = self._read()
        if text is None:  # released meanwhile
            return
        try:
            other = json.loads(text)
            host, pid = other["host"], int(other["pid"])
        except (ValueError, KeyError, TypeError):
            other = None
        if other is not None:
            who = f"host {host}, pid {pid}" + (f", Slurm job {other['slurm_job_id']}" if other.get("slurm_job_id")
                                                else "")
            same_job = other.get("slurm_job_id") and other["slurm_job_id"] == self.me["slurm_job_id"]
            if same_job and other.get("slurm_restart") != self.me["slurm_restart"]:
                why = "an earlier launch of this Slurm job"
            elif host == self.me["host"] and not _alive(pid, other.get("start")):
                why = "a process that is no longer running"
            elif host == self.me["host"]:
                raise UserError(f"{self.path.parent}: in use by another menndl ({who}); wait for it to end or "
                                f"stop it")
            else:
                raise UserError(f"{self.path.parent}: in use by a menndl on {who}; if it is no longer running, "
                                f"remove {self.path} and start again")
        elif time.time() - _mtime(self.path) < FRESH_SECONDS:  # its holder may be writing it just now
            raise UserError(f"{self.path.parent}: in use by another menndl (its lock is being written)")
        else:  # written by a launch killed before it had written the lock whole
            why = "an unreadable lock (a launch killed while taking it)"
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text() != text:  # another process took it over in between: give its lock back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink()
            return
        aside.unlink()
        self.note(f"menndl: note: {self.path}: taken over from {why} ({text.strip()[:200]})")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text() in ("", json.dumps(self.me)):  # ours (empty: a write to a full disk failed)
                self.path.unlink()
            if self.made_dir:
                self.path.parent.rmdir()  # if the launch left nothing in it
        except (OSError, ValueError):
            pass
