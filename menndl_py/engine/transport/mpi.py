"""The MPI transport, and the one module of menndl_py that talks MPI: the world and its layout (rank 0 the
master, ranks 1..N-1 worker groups of `ranks_per_candidate`), the setup handshake, the master and worker loops,
the share of a parallel job (`MPIShare`) that data makers and `menndl predict` use, the master's watchdog, and
how a rank leaves the world.

Master ⇄ group leader messages are point to point with their own tags (`Tag`); a leader passes each message on
to the rest of its group. Waiting ranks poll with a growing sleep instead of spinning in a blocking call, so that
an idle rank does not take a core from the ranks that are training on an oversubscribed node. The master sleeps
at most MASTER_POLL between polls (a result waits for it no longer than that), and spends its idle time on its
deferred work. mpi4py is imported only when the process was started by an MPI launcher.

Leaving: until the ranks part ways (the setup handshake, or a share's first `to_root`), every rank runs the same
code on the same inputs, so an error is met by every rank alike: rank 0 prints it, and the ranks leave together
(if they do not all arrive within TOGETHER_WAIT seconds, the world is aborted). Once they have parted, an error
is that rank's alone: it prints its line and aborts the world (`MPI_Abort` with the exit status), so that no
rank waits for it forever; a master that had to give up on a group (the watchdog) aborts the world likewise.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from menndl_py.engine.signals import StopRequest
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError, os_error_line
from menndl_py.records import Result, Status

LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")
MASTER_POLL = 0.002  # seconds: the master's longest sleep between polls for results
TOGETHER_WAIT = 10.0  # seconds a rank waits for the others to leave with it after an error met by all alike
WATCHDOG_GRACE = 10.0  # seconds past the candidate time-out (at least) before a silent group is declared lost


class Tag(IntEnum):
    """Every kind of message, one tag each; no other module picks a tag."""

    SETUP = 10  # rank 0 → every rank: (error, what the setup found)
    READY = 11  # leader → master: None, or the group's setup error
    WORK = 12  # master → leader: a Work
    RESULT = 13  # leader → master: a Result
    STOP = 14  # master → leader: no more work
    GROUP = 15  # leader → group members: (tag, message) passed on
    STREAM = 100  # rank → rank 0: chunks of results of a share's n-th `to_root` go with tag STREAM + n


def launched_by_mpi() -> bool:
    """True under mpirun/mpiexec/srun with a PMI: only then is mpi4py imported (and MPI initialised)."""
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def world():
    """COMM_WORLD, or None when this process was started without a launcher."""
    if not launched_by_mpi():
        slurm_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))
        if slurm_tasks > 1 and "SLURM_STEP_ID" in os.environ:
            raise UserError(f"srun started {slurm_tasks} tasks but gave them no MPI process manager: "
                            f"use 'srun --mpi=pmix' (or --mpi=pmi2)")
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    slurm_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "0"))
    if comm.size == 1 and slurm_tasks > 1:
        raise UserError(f"srun started {slurm_tasks} tasks but MPI sees a world of 1: use 'srun --mpi=pmix'")
    if _leaving.exits is None and comm.size > 1:
        _leaving.exits = comm.Dup()
    return comm


def share():
    """The share of this process in a job spread over the world: `MPIShare`, or `Solo` without a launcher."""
    comm = world()
    return Solo() if comm is None or comm.size == 1 else MPIShare(comm)


# -- leaving the world ----------------------------------------------------------------------------------------
@dataclass
class _Leaving:
    """What this rank knows of how to leave the world (one world per process)."""

    exits: Any = None  # a duplicate of COMM_WORLD, on which the ranks meet as they leave
    parted: bool = False  # the ranks went their own ways: an error now is this rank's alone
    stranded: bool = False  # some ranks cannot be reached (a lost or unresponsive group): the world is aborted


_leaving = _Leaving()


def launcher_rank() -> int:
    """This process's rank as its launcher numbered it (0 without one); known before MPI is initialised."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def leave(code: int) -> int:
    """This rank is done with exit status `code`: returns it once every rank is done (or aborts the world with
    it, when some ranks cannot be reached)."""
    if _leaving.stranded:
        _abort(code)
    if _leaving.exits is not None:
        _meet(timeout=None)
    return code


def leave_after_error(code: int, line: str) -> int:
    """After a one-line error on this rank: print `line` once and return `code` when every rank meets the same
    error (before the ranks part); otherwise print it here and end the whole world with `code`."""
    if _leaving.exits is None:  # one process, or MPI not started: each rank of a launch meets the same error
        if launcher_rank() == 0:
            _say(line)
        return code
    if _leaving.parted or _leaving.stranded:
        _say(line)
        _abort(code)
    rank = _leaving.exits.rank
    if rank == 0:
        _say(line)
    if _meet(timeout=TOGETHER_WAIT):
        return code
    if rank != 0:  # rank 0 did not meet this error: nobody has printed it
        _say(line)
    _abort(code)
    return code


def abort_world() -> None:
    """After an unexpected crash on this rank (within an `except`): print the traceback and end every rank, when
    MPI is running, so that none waits forever."""
    if "mpi4py.MPI" in sys.modules:
        traceback.print_exc()
        _abort(1)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _abort(code: int) -> None:
    """End every rank of the world now; the launcher (mpirun, srun) exits with `code`."""
    sys.stdout.flush()
    sys.stderr.flush()
    sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)


def _meet(timeout: Optional[float]) -> bool:
    """Wait until every rank has come here (True), or `timeout` seconds have passed (False)."""
    request = _leaving.exits.Ibarrier()
    start, delay = time.monotonic(), 0.0005
    while not request.Test():
        if timeout is not None and time.monotonic() - start > timeout:
            return False
        time.sleep(delay)
        delay = min(delay * 1.25, 0.05)
    return True


def receive(comm, source: int, tag: int, interrupt: Optional[Callable[[], bool]] = None,
            idle: Optional[Callable[[], bool]] = None, max_delay: float = 0.05) -> Optional[tuple[Any, int, int]]:
    """(message, source, tag) of the next matching message, polling with a sleep that grows by a quarter each time
    up to `max_delay` (so a message waits at most a quarter of the time already waited, plus 0.5 ms); None as
    soon as `interrupt()` is true. While nothing has arrived, `idle()` is called before each sleep (it
    does a piece of work and says whether it did; if it did, the poll is repeated at once)."""
    from mpi4py import MPI

    delay = 0.0005
    while True:
        status = MPI.Status()
        message = comm.improbe(source=source, tag=tag, status=status)
        if message is not None:
            return message.recv(), status.Get_source(), status.Get_tag()
        if interrupt is not None and interrupt():
            return None
        if idle is not None and idle():
            continue
        time.sleep(delay)
        delay = min(delay * 1.25, max_delay)


def node_comm(comm):
    """The ranks of `comm` on this rank's node, as a communicator of their own."""
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED)


class MPIShare(Solo):
    """The share of one rank of a communicator (see `Solo` for what each call does)."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.rank, comm.size
        self.node = node_comm(comm)
        self.local_rank, self.ranks_on_node = self.node.rank, self.node.size
        self.streams = 0
        self.windows = []  # the node arrays' shared memory, kept while the share lives

    def node_array(self, shape: tuple, dtype) -> np.ndarray:
        from mpi4py import MPI

        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize if self.local_rank == 0 else 0
        window = MPI.Win.Allocate_shared(size, dtype.itemsize, comm=self.node)
        self.windows.append(window)
        return np.ndarray(shape, dtype, buffer=window.Shared_query(0)[0])

    def node_barrier(self) -> None:
        self.node.Barrier()

    def bcast(self, value: Any) -> Any:
        return self.comm.bcast(value, root=0)

    def allgather(self, value: Any) -> list:
        return self.comm.allgather(value)

    def to_root(self, chunks: Iterable[list], expected: int) -> Iterator[list]:
        tag = Tag.STREAM + self.streams
        self.streams += 1
        _leaving.parted = True  # rank 0 writes what the others send: from here on, an error is one rank's
        if self.rank != 0:
            for chunk in chunks:
                self.comm.ssend(chunk, dest=0, tag=tag)
            return
        from mpi4py import MPI

        received = 0

        def arrived(block: bool) -> Iterator[list]:
            nonlocal received
            while received < expected and (block or self.comm.iprobe(source=MPI.ANY_SOURCE, tag=tag)):
                chunk, _, _ = receive(self.comm, MPI.ANY_SOURCE, tag)
                received += len(chunk)
                yield chunk

        for chunk in chunks:
            yield chunk
            yield from arrived(block=False)
        yield from arrived(block=True)


# -- the search ---------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """Who is who in the world: the master, the groups, each group's leader."""

    rank: int
    size: int
    ranks_per_candidate: int
    group_index: Optional[int]  # None on the master
    group: Any  # this rank's group communicator (the master has one of its own)
    local_rank: int
    ranks_on_node: int
    hosts: Optional[list[str]] = None  # every rank's host name, on the master

    @property
    def n_groups(self) -> int:
        return (self.size - 1) // self.ranks_per_candidate

    @property
    def leaders(self) -> list[int]:
        return [1 + g * self.ranks_per_candidate for g in range(self.n_groups)]

    @property
    def is_leader(self) -> bool:
        return self.group_index is not None and self.group.rank == 0


def check_geometry(size: int, k: int) -> None:
    if size < 2 or (size - 1) % k:
        raise UserError(f"cluster.ranks_per_candidate: {size} ranks = 1 master + {size - 1} workers, which cannot "
                        f"form groups of {k}; launch 1 + a multiple of {k} ranks")


def make_layout(comm, k: int) -> Layout:
    check_geometry(comm.size, k)
    rank = comm.rank
    group_index = None if rank == 0 else (rank - 1) // k
    group = comm.Split(0 if rank == 0 else 1 + group_index, rank)
    node = node_comm(comm)
    layout = Layout(rank, comm.size, k, group_index, group, node.rank, node.size)
    node.Free()
    layout.hosts = comm.gather(socket.gethostname(), root=0)
    return layout


def handshake(comm, k: int, setup: Callable[[], Any]) -> Any:
    """Rank 0 checks the geometry and runs `setup()` before any other rank starts work; every rank gets what it
    returned, or the same UserError."""
    error, found = None, None
    if comm.rank == 0:
        try:
            check_geometry(comm.size, k)
            found = setup()
        except UserError as exc:
            error = str(exc)
        except OSError as exc:
            error = os_error_line(exc)
        for rank in range(1, comm.size):
            comm.send((error, found), dest=rank, tag=Tag.SETUP)
    else:
        (error, found), _, _ = receive(comm, 0, Tag.SETUP)
    if error:
        raise UserError(error)
    _leaving.parted = True
    return found


def stop_requested_of(comm, layout: Layout) -> Callable[[], bool]:
    """This rank's test for a stop: its own signal, or on a leader also the master's stop message."""
    if layout.is_leader:
        return lambda: StopRequest.requested() or comm.iprobe(source=0, tag=Tag.STOP)
    return StopRequest.requested


class Watchdog:
    """The master's watch over its busy groups: one silent for `limit` seconds after its work was sent is lost."""

    def __init__(self, limit: float):
        self.limit = limit
        self.sent: dict[int, tuple[Any, float]] = {}  # leader → (its Work, when it was sent)
        self._next_look = 0.0

    def due(self) -> bool:
        """Whether some group is silent past the limit (looked at most once a second)."""
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + 1.0
        return bool(self.silent())

    def silent(self) -> list[int]:
        now = time.monotonic()
        return [leader for leader, (_, sent) in self.sent.items() if now - sent > self.limit]


def master_loop(comm, layout: Layout, master, grace: float) -> None:
    """Hand out genomes as results arrive; no generation barrier. Stops every group at the end, or at once on
    a stop signal, then waits up to `grace` seconds for the busy groups to report. A group silent for the candidate
    time-out plus a grace (the larger of `grace` and WATCHDOG_GRACE) is lost: its candidate is stored as lost, the
    search stops (exit status 3, resumable), and the world is aborted at the end, since that group cannot be
    reached."""
    from mpi4py import MPI

    leaders = layout.leaders
    group_of = {leader: group for group, leader in enumerate(leaders)}
    errors = []
    for leader in leaders:
        ready, _, _ = receive(comm, leader, Tag.READY)
        if ready is not None:
            errors.append(ready)
    if errors:
        stop_all(comm, leaders)
        _leaving.parted = False  # every rank was told to stop: they leave together
        raise UserError(errors[0])
    watchdog = Watchdog(master.cfg.cluster.candidate_timeout + max(grace, WATCHDOG_GRACE))
    busy = watchdog.sent

    def send(leader: int) -> None:
        work = None if StopRequest.requested() else master.next_work(group_of[leader])
        if work is not None:
            comm.send(work, dest=leader, tag=Tag.WORK)
            busy[leader] = (work, time.monotonic())

    def send_idle() -> None:
        """Work for every idle group, while there is any (with rungs, a result may make promotions due)."""
        for leader in leaders:
            if leader not in busy:
                send(leader)
                if leader not in busy:
                    return

    send_idle()
    while busy and not master.stopping:
        got = receive(comm, MPI.ANY_SOURCE, Tag.RESULT, interrupt=lambda: StopRequest.requested() or watchdog.due(),
                      idle=master.catch_up, max_delay=MASTER_POLL)
        if got is None:
            break
        result, source, _ = got
        start = time.perf_counter()
        master.on_result(result)
        del busy[source]
        send_idle()
        master.handling_seconds.append(time.perf_counter() - start)
        master.catch_up(idle=False)  # only what is overdue: receive() calls it when no result is waiting
    lost = watchdog.silent()
    for leader in lost:
        work, sent = busy.pop(leader)
        _store_lost(master, layout, leader, work, time.monotonic() - sent, watchdog.limit)
    if lost:
        master.stop("the watchdog")
    elif StopRequest.requested():
        master.stop(StopRequest.signal_name)
    stop_all(comm, [leader for leader in leaders if leader not in lost])
    deadline = time.monotonic() + grace
    while busy:  # stopping early: each busy group finishes or abandons its candidate at its next agreement
        got = receive(comm, MPI.ANY_SOURCE, Tag.RESULT, interrupt=lambda: time.monotonic() > deadline)
        if got is None:
            break
        master.on_result(got[0])
        del busy[got[1]]
    if lost or busy:  # ranks that will not come to the end: their work is in flight, sent again on resume
        _leaving.stranded = True


def _store_lost(master, layout: Layout, leader: int, work, silent: float, limit: float) -> None:
    group, k = layout.leaders.index(leader), layout.ranks_per_candidate
    message = (f"lost: group {group} (ranks {leader}-{leader + k - 1}) silent for {silent:.0f} s, past the "
               f"candidate time-out and its grace ({limit:g} s); a rank may have died or hung")
    _say(f"menndl: warning: evaluation {work.id}: {message}")
    now = time.time()
    master.on_result(Result(work.id, Status.LOST, None, {}, message, 0, 0.0, [], work.submit_time or now, now,
                            layout.hosts[leader] if layout.hosts else "", k))


def stop_all(comm, leaders: list[int]) -> None:
    for leader in leaders:
        comm.send(None, dest=leader, tag=Tag.STOP)


def worker_loop(comm, layout: Layout, make_evaluator: Callable[[], Any]) -> None:
    """Every rank of a group: set up, then evaluate each genome the leader passes on, until stop."""
    from mpi4py import MPI

    group = layout.group
    try:
        evaluator, error = make_evaluator(), None
    except UserError as exc:
        evaluator, error = None, str(exc)
    except OSError as exc:
        evaluator, error = None, os_error_line(exc)
    errors = [e for e in group.gather(error, root=0) or [] if e]
    if layout.is_leader:
        comm.send(errors[0] if errors else None, dest=0, tag=Tag.READY)
    while True:
        if layout.is_leader:
            message, _, tag = receive(comm, 0, MPI.ANY_TAG)
            for member in range(1, group.size):
                group.send((tag, message), dest=member, tag=Tag.GROUP)
        else:
            (tag, message), _, _ = receive(group, 0, Tag.GROUP)
        if tag == Tag.STOP:
            return
        result = evaluator.evaluate(message)
        if layout.is_leader:
            comm.send(result, dest=0, tag=Tag.RESULT)
