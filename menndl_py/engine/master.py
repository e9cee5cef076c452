"""The master's work, whatever carries the messages: hand out genomes, store results, keep the search informed.

Every result is stored and flushed, and every genome journalled in the checkpoint, before the next genome goes
out; genomes in flight when a job dies are sent again on resume, under the same id. What can wait (the search's
deferred work, such as refitting its surrogate; bringing the HDF5 results level; compacting the checkpoint) is left
to `catch_up`, which the transports call after the reply is sent, when no other result is waiting.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Optional

from menndl_py.config import Config
from menndl_py.genome import Genome
from menndl_py.records import Result, Status, Work, better, stored_row
from menndl_py.rundir import Checkpoint, ResultStore, RunDir, read_checkpoint
from menndl_py.rundir.networks import save_network
from menndl_py.search import Search, SpaceExhausted
from menndl_py.tasks.base import Task

H5_BATCH, H5_SECONDS = 256, 30.0  # the HDF5 results are brought level every this many rows or seconds, when idle
JOURNAL_LINES = 1000  # the checkpoint is compacted when its journal is this long (or twice the genomes in flight)
OVERDUE = 4  # deferred work is done even under a backlog of results once it is this many times overdue


class Master:
    """Hands out Work that any Search proposes, stores each Result in the run directory, keeps the checkpoint."""

    def __init__(self, cfg: Config, task: Task, search: Search, n_groups: int, *, progress: bool = True,
                 clock=time.time):
        self.cfg, self.task, self.search, self.n_groups, self.clock = cfg, task, search, n_groups, clock
        self.run = RunDir(cfg.run_dir)
        self.store = ResultStore(self.run.path, ["train_loss", *(f"val_{m}" for m in task.metric_names)])
        self.ids: dict[str, int] = {}  # genome key → evaluation id
        self.in_flight: dict[int, Work] = {}
        self._genomes: dict[int, Genome] = {}  # of the work in flight, by id
        self.resend: deque[Work] = deque()
        self.next_id, self.elapsed_before = 0, 0.0
        self.fingerprint = cfg.fingerprint()
        self.checkpoints = Checkpoint(self.run.checkpoint)
        self.best: Optional[tuple[float, int]] = None
        self.stopping: Optional[str] = None  # the signal that stopped the search, if one did
        self.exhausted: Optional[str] = None  # why no new genome could be found, if so
        self._restore()
        self.launched = self.clock()
        self.busy_seconds = 0.0
        self.handling_seconds: list[float] = []  # master time per result: store, tell, ask, send
        self.deferred_seconds = 0.0  # in catch_up: refits, results.h5, checkpoint compaction
        self._h5_written = time.monotonic()
        self.progress = Progress(self, progress)

    # -- resume --------------------------------------------------------------------------------------
    def _restore(self) -> None:
        for row in self.store.rows:
            genome = Genome.from_json(row["genome"])
            self.ids[genome.key] = row["id"]
            self._track_best(row)
            self.search.tell(genome, row["fitness"] if row["status"] == Status.OK else None)
        if self.store.rows:
            self.search.replayed()
        self.search.log = self.run.append_surrogate_row  # replays are not measurements: logged from here on
        checkpoint = read_checkpoint(self.run.checkpoint)
        if checkpoint:
            self.search.restore(checkpoint["ga"])
            self.next_id = checkpoint["next_id"]
            self.elapsed_before = checkpoint["elapsed"]
            self.checkpoints.seq = checkpoint.get("seq", 0)
            done = {row["id"] for row in self.store.rows}
            self.resend = deque(Work.from_json(w) for w in checkpoint["in_flight"] if w["id"] not in done)
            for work in self.resend:
                genome = Genome.from_json(work.genome)
                self.ids[genome.key] = work.id
                self.search.mark_in_flight(genome)
        self.next_id = max([self.next_id, *(r["id"] + 1 for r in self.store.rows)])

    # -- the budget ----------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.elapsed_before + self.clock() - self.launched

    def may_dispatch(self) -> bool:
        s = self.cfg.search
        if self.stopping or self.exhausted:
            return False
        if s.max_minutes is not None and self.elapsed >= 60 * s.max_minutes:
            return False
        return s.max_evaluations is None or len(self.store.rows) + len(self.in_flight) < s.max_evaluations

    def stop(self, reason: str) -> None:
        """Hand out no more work; what is in flight stays recorded for the resume."""
        self.stopping = reason

    @property
    def done(self) -> bool:
        return not self.in_flight and not self.may_dispatch()

    # -- the two events --------------------------------------------------------------------------------
    def next_work(self, group: int) -> Optional[Work]:
        """The next genome for `group`, or None when the budget is spent or the search is stopping."""
        if not self.may_dispatch():
            return None
        if self.resend:
            work = self.resend.popleft()
            genome = Genome.from_json(work.genome)
        else:
            try:
                proposal = self.search.ask()
            except SpaceExhausted as exc:
                self.exhausted = str(exc)
                return None
            genome = proposal.genome
            work = Work(self.next_id, genome.to_json(), [self.ids[k] for k in proposal.parents], proposal.origin,
                        proposal.predicted, proposal.screened, proposal.params, proposal.flops)
            self.ids[genome.key] = self.next_id
            self.next_id += 1
        work.group, work.submit_time, work.best = group, self.clock(), self.best[0] if self.best else None
        self.in_flight[work.id] = work
        self._genomes[work.id] = genome
        if self.checkpoints.started:
            self.checkpoints.append({"work": work.to_json(), "next_id": self.next_id, "ga": self.search.state(),
                                     "elapsed": self.elapsed})
        else:
            self.checkpoint()
        return work

    def on_result(self, result: Result) -> None:
        """Store a finished evaluation, then tell the search. An abandoned one stays in flight, for the resume."""
        if result.status == Status.INTERRUPTED:
            return
        work = self.in_flight.pop(result.id)
        genome = self._genomes.pop(result.id)
        row = stored_row(work, result, genome)
        self.store.append(row)
        if self._track_best(row) and result.weights is not None:
            save_network(self.run.best, genome, result.weights,
                         {k: v for k, v in row.items() if k not in ("genome", "curve")})
        self.search.tell(genome, row["fitness"])  # its costly updates wait for catch_up
        self.busy_seconds += max(0.0, row["end_time"] - row["start_time"])
        self.progress.update(row)  # the checkpoint is written by next_work or close (stored ids are never re-sent)

    def catch_up(self, idle: bool = True) -> bool:
        """One piece of deferred work, if any is due: the search's, bringing the HDF5 results level, compacting the
        checkpoint. With `idle` False (results are waiting) only work that is `OVERDUE` times late is done.
        Returns whether anything was done (call again until it returns False)."""
        start = time.perf_counter()
        late = 1 if idle else OVERDUE
        done = self.search.idle_work(late) or self._level_h5(late, idle) or self._compact(late)
        self.deferred_seconds += time.perf_counter() - start if done else 0.0
        return done

    def _level_h5(self, late: int, idle: bool) -> bool:
        pending = self.store.h5_pending
        if pending >= late * H5_BATCH or (idle and pending and time.monotonic() - self._h5_written >= H5_SECONDS):
            self.store.write_h5()
            self._h5_written = time.monotonic()
            return True
        return False

    def _compact(self, late: int) -> bool:
        if self.checkpoints.lines >= late * max(JOURNAL_LINES, 2 * len(self.in_flight)):
            self.checkpoint()
            return True
        return False

    # -- records ---------------------------------------------------------------------------------------
    def _track_best(self, row: dict) -> bool:
        if row["status"] != Status.OK or not better(row["fitness"], self.best and self.best[0],
                                                     self.task.higher_is_better):
            return False
        self.best = (row["fitness"], row["id"])
        return True

    def checkpoint(self, finished: bool = False) -> None:
        """Write the whole state (a snapshot; the journal starts afresh)."""
        self.checkpoints.snapshot({
            "fingerprint": self.fingerprint, "next_id": self.next_id, "ga": self.search.state(),
            "in_flight": [w.to_json() for w in (*self.in_flight.values(), *self.resend)], "elapsed": self.elapsed,
            "finished": finished})

    def close(self) -> None:
        """Flush everything; mark the run finished if its budget is spent."""
        finished = self.done and not self.stopping
        if finished:
            self.search.finish()
        self.checkpoint(finished=finished)
        self.checkpoints.close()
        self.store.sync()
        self.store.close()
        self.progress.close()


class Progress:
    """A tqdm bar on the master: evaluations of the budget, best fitness, failures, utilization."""

    def __init__(self, master: Master, enabled: bool):
        from tqdm import tqdm

        self.master, self.enabled = master, enabled
        total = master.cfg.search.max_evaluations
        self.failures = sum(r["status"] != Status.OK for r in master.store.rows)
        self.bar = tqdm(total=total, initial=len(master.store.rows), disable=not enabled, unit="eval",
                        desc=master.cfg.run.name, mininterval=1.0, dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        m = self.master
        best = f"{m.best[0]:.4g} {m.task.unit}" if m.best else "-"
        util = min(1.0, m.busy_seconds / (max(m.clock() - m.launched, 1e-9) * m.n_groups))
        self.bar.set_postfix_str(f"best {best}, failed {self.failures}, util {util:.0%}", refresh=False)

    def update(self, row: dict) -> None:
        self.failures += row["status"] != Status.OK
        if self.enabled:
            self._postfix()
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
