"""The MPI transport: rank 0 is the master, ranks 1..N-1 form worker groups of `ranks_per_candidate`.

Master ⇄ group leader messages are point to point with their own tags; a leader passes each message on to the
rest of its group. Waiting ranks poll with a growing sleep instead of spinning in a blocking call, so that an idle
rank does not take a core from the ranks that are training on an oversubscribed node. The master sleeps at most
MASTER_POLL between polls (a result waits for it no longer than that), and spends its idle time on its deferred
work.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from menndl_py.cluster.signals import StopRequest
from menndl_py.errors import UserError

TAG_SETUP, TAG_READY, TAG_WORK, TAG_RESULT, TAG_STOP, TAG_GROUP = range(10, 16)
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")
MASTER_POLL = 0.002  # seconds: the master's longest sleep between polls for results


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
    return comm


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
    from mpi4py import MPI

    check_geometry(comm.size, k)
    rank = comm.rank
    group_index = None if rank == 0 else (rank - 1) // k
    group = comm.Split(0 if rank == 0 else 1 + group_index, rank)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    layout = Layout(rank, comm.size, k, group_index, group, node.rank, node.size)
    node.Free()
    return layout


# -- the master ------------------------------------------------------------------------------------------
def master_loop(comm, layout: Layout, master, grace: float) -> None:
    """Hand out genomes as results arrive; no generation barrier. Stops every group at the end, or at once on
    a stop signal, then waits up to `grace` seconds for the busy groups to report."""
    from mpi4py import MPI

    leaders = layout.leaders
    group_of = {leader: group for group, leader in enumerate(leaders)}
    errors = []
    for leader in leaders:
        ready, _, _ = receive(comm, leader, TAG_READY)
        if ready is not None:
            errors.append(ready)
    if errors:
        stop_all(comm, leaders)
        raise UserError(errors[0])
    busy = set()
    for group, leader in enumerate(leaders):
        work = master.next_work(group)
        if work is not None:
            comm.send(work, dest=leader, tag=TAG_WORK)
            busy.add(leader)
    while busy and not master.stopping:
        got = receive(comm, MPI.ANY_SOURCE, TAG_RESULT, interrupt=StopRequest.requested, idle=master.catch_up,
                      max_delay=MASTER_POLL)
        if got is None:
            break
        result, source, _ = got
        start = time.perf_counter()
        master.on_result(result)
        busy.discard(source)
        work = None if StopRequest.requested() else master.next_work(group_of[source])
        if work is not None:
            comm.send(work, dest=source, tag=TAG_WORK)
            busy.add(source)
        master.handling_seconds.append(time.perf_counter() - start)
        master.catch_up(idle=False)  # only what is overdue: receive() calls it when no result is waiting
    if StopRequest.requested():
        master.stop(StopRequest.signal_name)
    stop_all(comm, leaders)
    deadline = time.monotonic() + grace
    while busy:  # stopping early: each busy group finishes or abandons its candidate at its next agreement
        got = receive(comm, MPI.ANY_SOURCE, TAG_RESULT, interrupt=lambda: time.monotonic() > deadline)
        if got is None:
            break
        master.on_result(got[0])
        busy.discard(got[1])


def stop_all(comm, leaders: list[int]) -> None:
    for leader in leaders:
        comm.send(None, dest=leader, tag=TAG_STOP)


# -- a worker group --------------------------------------------------------------------------------------
def worker_loop(comm, layout: Layout, make_evaluator: Callable[[], Any]) -> None:
    """Every rank of a group: set up, then evaluate each genome the leader passes on, until stop."""
    from mpi4py import MPI

    group = layout.group
    try:
        evaluator, error = make_evaluator(), None
    except UserError as exc:
        evaluator, error = None, str(exc)
    errors = [e for e in group.gather(error, root=0) or [] if e]
    if layout.is_leader:
        comm.send(errors[0] if errors else None, dest=0, tag=TAG_READY)
    while True:
        if layout.is_leader:
            message, _, tag = receive(comm, 0, MPI.ANY_TAG)
            for member in range(1, group.size):
                group.send((tag, message), dest=member, tag=TAG_GROUP)
        else:
            (tag, message), _, _ = receive(group, 0, TAG_GROUP)
        if tag == TAG_STOP:
            return
        result = evaluator.evaluate(message)
        if layout.is_leader:
            comm.send(result, dest=0, tag=TAG_RESULT)
