"""The master's work, whatever carries the messages: hand out genomes, store results, keep the search informed.

Every result is stored and written to the operating system, and every genome journalled in the checkpoint, before
the next genome goes out; a genome leaves the list in flight only once its row is stored. Genomes in flight when a
job dies are sent again on resume, under the same id, except one that was in flight at `CRASH_LIMIT` crashes: it
is stored as crashed. With `training.rungs`, a free group first takes a promotion the Ladder proposes (the same id
trained on from its stored state to the next rung, a row per rung), then a new genome; once the budget of new
genomes is spent, promotions go on until the leader stands at the top rung.

What can wait (forcing the files to disk every few seconds; the search's deferred work, such as refitting its
surrogate; bringing the HDF5 results level; compacting the checkpoint; removing training states no longer needed)
is left to `catch_up`, which the transports call after the reply is sent, when no other result is waiting.
"""
from __future__ import annotations

import itertools
import json
import socket
import time
from collections import deque
from typing import Optional

from menndl_py.config import Config
from menndl_py.engine.ladder import Ladder
from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.records import Result, Status, Work, stored_row
from menndl_py.rundir import Checkpoint, ResultStore, RunDir, read_checkpoint
from menndl_py.rundir.networks import (
    discard_staged,
    install_network,
    remove_network,
    settle_members,
    settle_networks,
    stage_network,
)
from menndl_py.rundir.states import States
from menndl_py.search import Search, SpaceExhausted, objectives_of
from menndl_py.search.pareto import pareto_front
from menndl_py.tasks.base import Task

H5_BATCH, H5_SECONDS = 256, 30.0  # the HDF5 results are brought level every this many rows or seconds, when idle
JOURNAL_LINES = 1000  # the checkpoint is compacted when its journal is this long (or twice the genomes in flight)
OVERDUE = 4  # deferred work is done even under a backlog of results once it is this many times overdue
SYNC_SECONDS = 2.0  # results and journal are forced to disk this often (OVERDUE times as seldom under a backlog)
CRASH_LIMIT = 2  # a genome in flight at this many crashes of the job is stored as crashed, not sent again
CHOICES = 8  # with rungs: the search picks among this many candidates due for promotion to the same rung
RESERVE_FACTOR = 1.25  # with rungs in seconds: new genomes stop this many times the leader's way to the top early


class Master:
    """Hands out Work that any Search proposes, stores each Result in the run directory, keeps the checkpoint."""

    def __init__(self, cfg: Config, task: Task, search: Search, n_groups: int, *, progress: bool = True,
                 clock=time.time):
        self.cfg, self.task, self.search, self.n_groups, self.clock = cfg, task, search, n_groups, clock
        self.run = RunDir(cfg.run_dir)
        self.objectives = objectives_of(cfg.search, task.higher_is_better)
        self.store = ResultStore(self.run.path, ["train_loss", *(f"val_{m}" for m in task.metric_names),
                                                 *task.result_metrics,
                                                 *(["latency"] if "latency" in self.objectives.names else [])])
        self.ids: dict[str, int] = {}  # genome key → evaluation id
        self.in_flight: dict[int, Work] = {}
        self._genomes: dict[int, Genome] = {}  # of the work in flight, by id
        self.resend: deque[Work] = deque()
        self.attempts: dict[int, int] = {}  # sends of each id in flight (or to resend) not ended by a clean stop
        self.sent: set[int] = set()  # ids sent by this launch
        self.next_id, self.elapsed_before = 0, 0.0
        self.fingerprint = cfg.fingerprint()
        self.checkpoints = Checkpoint(self.run.checkpoint)
        self.best: Optional[tuple[float, int, int]] = None  # (fitness, id, rung) of the best row
        self._best_key: Optional[tuple] = None  # (rung, Objectives.preference) of the best row
        self.rungs, self.inherit, self.keep_top = cfg.training.rungs, cfg.search.inherit, cfg.search.keep_top
        # networks kept besides best/, at the top rung: the Pareto front's (several objectives) or the K best's
        self.kept = self.run.pareto if self.objectives.many else self.run.ensemble if self.keep_top else None
        self.ladder = Ladder(self.rungs.budgets if self.rungs else [0.0], self.rungs.eta if self.rungs else 2,
                             task.higher_is_better, self.objectives)
        self.states = States(self.run.states)
        self.first_rung_rows = 0  # rows at rung 0: the new genomes evaluated (`search.max_evaluations` counts them)
        self._latest: dict[int, int] = {}  # id → the index of its last row in the store
        self._states_checked = False  # since the last result
        self.stopping: Optional[str] = None  # the signal that stopped the search, if one did
        self.exhausted: Optional[str] = None  # why no new genome could be found, if so
        self._restore()
        self.launched = self.clock()
        self.busy_seconds = 0.0
        self.handling_seconds: list[float] = []  # master time per result: store, tell, ask, send
        self.deferred_seconds = 0.0  # in catch_up: refits, results.h5, checkpoint compaction
        self._h5_written = self._synced = time.monotonic()
        self.progress = Progress(self, progress)

    # -- resume --------------------------------------------------------------------------------------
    def _restore(self) -> None:
        for index, row in enumerate(self.store.rows):
            self._latest[row["id"]] = index
            try:
                genome = Genome.from_json(row["genome"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise UserError(f"{self.store.csv_path}: the genome of id {row['id']} is unreadable: a corrupt row "
                                f"(remove it, and the lines after it, to continue the run)") from None
            self.ids[genome.key] = row["id"]
            self._track_best(row)
            fitness = row["fitness"] if row["status"] == Status.OK else None
            self.ladder.record(row["id"], row["rung"], fitness, costs(row))
            self.first_rung_rows += row["rung"] == 0
            self.search.tell(genome, fitness, row["rung"], json.loads(row["curve"]) if row["curve"] else [],
                             costs(row))
        if self.store.rows:
            self.search.replayed()
        self.search.log = self.run.append_surrogate_row  # replays are not measurements: logged from here on
        checkpoint = read_checkpoint(self.run.checkpoint)
        if checkpoint:
            if checkpoint["ga"] is not None:  # None: no genome was asked for yet, or the snapshot was rebuilt
                self.search.restore(checkpoint["ga"])
            self.next_id = checkpoint["next_id"]
            self.elapsed_before = checkpoint["elapsed"]
            self.checkpoints.seq = checkpoint.get("seq", 0)
            done = {(row["id"], row["rung"]) for row in self.store.rows}
            for work in (Work.from_json(w) for w in checkpoint["in_flight"]):
                if (work.id, work.rung) in done:
                    continue
                genome = Genome.from_json(work.genome)
                self.ids[genome.key] = work.id
                self.ladder.sent(work.id, work.rung)
                crashes = checkpoint["attempts"].get(work.id, 0)
                if crashes >= CRASH_LIMIT:
                    self._store_crashed(work, genome, crashes)
                else:
                    self.attempts[work.id] = crashes
                    self.resend.append(work)
                    self.search.mark_in_flight(genome)
        self.next_id = max([self.next_id, *(r["id"] + 1 for r in self.store.rows)])
        settle_networks(self.run.best, self.best and self.best[1])
        if self.kept is not None:
            settle_members(self.kept, self._kept_ids())

    def _store_crashed(self, work: Work, genome: Genome, crashes: int) -> None:
        now = self.clock()
        result = Result(work.id, Status.CRASHED, None, {}, f"in flight at {crashes} crashes of the job (does it kill "
                        f"its ranks?); not sent again", 0, 0.0, [], now, now, socket.gethostname(), 0)
        row = stored_row(work, result, genome)
        self.store.append(row)
        self.ladder.record(work.id, work.rung, None)
        self.first_rung_rows += work.rung == 0
        self.search.tell(genome, None, work.rung)

    # -- the budget ----------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.elapsed_before + self.clock() - self.launched

    @property
    def seconds_left(self) -> float:
        """Of `search.max_minutes` (infinite without it)."""
        minutes = self.cfg.search.max_minutes
        return float("inf") if minutes is None else 60 * minutes - self.elapsed

    def may_dispatch(self) -> bool:
        """Whether any work may still be sent: not stopping, and time left."""
        return not self.stopping and self.seconds_left > 0

    def may_ask(self) -> bool:
        """Whether a new genome may be sent: within `search.max_evaluations` (new genomes; promotions are not
        counted), and, with rungs, with time left to take the leader to the top rung afterwards."""
        s = self.cfg.search
        if not self.may_dispatch() or self.exhausted:
            return False
        if self.seconds_left <= self._reserve():
            return False
        started = self.first_rung_rows + sum(w.rung == 0 for w in (*self.in_flight.values(), *self.resend))
        return s.max_evaluations is None or started < s.max_evaluations

    def _reserve(self) -> float:
        """Seconds kept back, with rungs counted in seconds, to train the leader on to the top rung."""
        if self.rungs is None or self.rungs.unit != "seconds":
            return 0.0
        leader = self.ladder.leader()
        done = self.rungs.budgets[leader[1]] if leader else 0.0
        return RESERVE_FACTOR * (self.rungs.budgets[-1] - done)

    def stop(self, reason: str) -> None:
        """Hand out no more work; what is in flight stays recorded for the resume."""
        self.stopping = reason

    @property
    def done(self) -> bool:
        return not self.in_flight and not (self.may_dispatch() and (self.resend or self._promotion() is not None
                                                                     or self.may_ask()))

    # -- the two events --------------------------------------------------------------------------------
    def next_work(self, group: int) -> Optional[Work]:
        """The next genome for `group`, or None when the budget is spent or the search is stopping."""
        if not self.may_dispatch():
            return None
        promotion = None if self.resend else self._promotion(choose=True)
        if self.resend:
            work = self.resend.popleft()
            genome = Genome.from_json(work.genome)
            if work.rung > 0:
                work.state = self.states.load(work.id)
            work.inherit = self._inheritance(work)
        elif promotion is not None:
            work_id, rung = promotion
            row = self.store.rows[self._latest[work_id]]
            genome = Genome.from_json(row["genome"])
            work = Work(work_id, genome.to_json(), [int(p) for p in row["parents"].split(";") if p], row["origin"],
                        None, False, row["params"], row["flops"], rung=rung, budget=self.rungs.budgets[rung],
                        data=self.rungs.share(rung), state=self.states.load(work_id))
            self.ladder.sent(work_id, rung)
        elif not self.may_ask():
            return None
        else:
            try:
                proposal = self.search.ask()
            except SpaceExhausted as exc:
                self.exhausted = str(exc)
                return None
            genome = proposal.genome
            work = Work(self.next_id, genome.to_json(), [self.ids[k] for k in proposal.parents], proposal.origin,
                        proposal.predicted, proposal.screened, proposal.params, proposal.flops)
            if self.rungs is not None:
                work.budget, work.data = self.rungs.budgets[0], self.rungs.share(0)
            work.inherit = self._inheritance(work)
            self.ids[genome.key] = self.next_id
            self.next_id += 1
        work.group, work.submit_time = group, self.clock()
        work.best = self._weights_wanted(work)
        self.in_flight[work.id] = work
        self._genomes[work.id] = genome
        self.attempts[work.id] = self.attempts.get(work.id, 0) + 1  # a journal line counts it on reading
        self.sent.add(work.id)
        if self.checkpoints.started:
            self.checkpoints.append({"work": work.to_json(), "next_id": self.next_id, "ga": self.search.state(),
                                     "elapsed": self.elapsed})
        else:
            self.checkpoint()
        return work

    def _promotion(self, choose: bool = False) -> Optional[tuple[int, int]]:
        """(id, rung) of the candidate to train on next, if any: a promotion the Ladder offers (in seconds, one
        that fits in the time left; with `choose`, the search's pick of the first `CHOICES` offered to the highest
        rung), or once no new genome may be sent, the leader's next step to the top rung, or while the leader is
        training, the best candidate not yet promoted (a runner-up)."""
        if self.rungs is None:
            return None
        budgets, left = self.rungs.budgets, self.seconds_left

        def fits(rung: int) -> bool:
            return self.rungs.unit != "seconds" or budgets[rung] - budgets[rung - 1] <= left

        offered = (p for p in self.ladder.promotions() if fits(p[1]))
        promotion = next(offered, None)
        if promotion is not None and choose:
            options = [promotion, *itertools.islice(itertools.takewhile(lambda p: p[1] == promotion[1], offered),
                                                    CHOICES - 1)]
            if len(options) > 1:
                genomes = [Genome.from_json(self.store.rows[self._latest[i]]["genome"]) for i, _ in options]
                promotion = options[self.search.choose_promotion(genomes)]
        if promotion is None and not self.may_ask():
            promotion = self.ladder.finishing()
            leader = self.ladder.leader()
            if promotion is None and leader is not None and leader[0] in self.in_flight:
                promotion = self.ladder.runner_up()  # rather than idle while the leader climbs
            if promotion is not None and not fits(promotion[1]):
                promotion = None
        return promotion

    def on_result(self, result: Result) -> None:
        """Store a finished evaluation (any status but INTERRUPTED), then tell the search. The work stays in flight
        until its row is stored, so if storing fails (a full disk, an interrupt) the resume sends it again. An
        abandoned one stays in flight, for the resume; a late answer for work already stored (declared lost) is
        dropped."""
        if result.status == Status.INTERRUPTED or result.id not in self.in_flight:
            return
        work, genome = self.in_flight[result.id], self._genomes[result.id]
        if work.rung > 0 and "latency" in self.objectives.names and result.status == Status.OK:
            result.metrics["latency"] = self.store.rows[self._latest[work.id]]["m:latency"]  # timed at rung 0
        row = stored_row(work, result, genome)
        beats = self._beats_best(row)
        staged = stage_network(self.run.best, genome, result.weights, _record(row)) \
            if beats and result.weights is not None else None
        staged_member = stage_network(self.kept / str(row["id"]), genome, result.weights, _record(row)) \
            if self._may_keep(row) and result.weights is not None else None
        try:
            if result.state is not None:  # before the row: a stored row at a lower rung always has its state
                self.states.save(result.id, result.state)
            self.store.append(row)
        except BaseException:
            for leftover in (staged, staged_member):
                if leftover is not None:
                    discard_staged(leftover)
            raise
        del self.in_flight[result.id], self._genomes[result.id], self.attempts[result.id]
        self._latest[row["id"]] = len(self.store.rows) - 1
        if beats:
            self._track_best(row)
        if staged is not None:  # a crash before this is mended by settle_networks on resume
            install_network(staged, self.run.best)
        self.ladder.record(row["id"], row["rung"], row["fitness"], costs(row))
        if staged_member is not None:  # the same, by settle_members
            self._update_kept(row["id"], staged_member)
        self.first_rung_rows += row["rung"] == 0
        self._states_checked = False
        self.search.tell(genome, row["fitness"], row["rung"], result.curve, costs(row))  # costly work waits
        self.busy_seconds += max(0.0, row["end_time"] - row["start_time"])
        self.progress.update(row)  # the checkpoint is written by next_work or close (stored ids are never re-sent)

    def catch_up(self, idle: bool = True) -> bool:
        """One piece of deferred work, if any is due: the search's, bringing the HDF5 results level, compacting the
        checkpoint. With `idle` False (results are waiting) only work that is `OVERDUE` times late is done.
        Returns whether anything was done (call again until it returns False)."""
        start = time.perf_counter()
        late = 1 if idle else OVERDUE
        done = self._sync(late) or self.search.idle_work(late) or self._level_h5(late, idle) or \
            self._compact(late) or self._drop_states()
        self.deferred_seconds += time.perf_counter() - start if done else 0.0
        return done

    def _sync(self, late: int) -> bool:
        if not (self.store.unsynced or self.checkpoints.unsynced) or \
                time.monotonic() - self._synced < late * SYNC_SECONDS:
            return False
        self.store.fsync()
        self.checkpoints.sync()
        self._synced = time.monotonic()
        return True

    def _level_h5(self, late: int, idle: bool) -> bool:
        pending = self.store.h5_pending
        if pending >= late * H5_BATCH or (idle and pending and time.monotonic() - self._h5_written >= H5_SECONDS):
            self.store.write_h5()
            self._h5_written = time.monotonic()
            return True
        return False

    def _inheritance(self, work: Work) -> Optional[bytes]:
        """With `search.inherit`, the training state a new genome starts from: its first parent's, if kept."""
        if not self.inherit or work.rung > 0 or not work.parents:
            return None
        return self.states.load(work.parents[0])

    def _drop_states(self) -> bool:
        """Remove the training states of candidates that can no longer be promoted (not of work in flight), once
        after each result; with `search.inherit`, not those of the search's possible parents, nor those that work
        in flight or waiting to be sent again inherits."""
        if self._states_checked:
            return False
        self._states_checked = True
        waiting = {w.id for w in self.resend}
        parents = set()
        if self.inherit:
            parents = {self.ids[key] for key in self.search.parents()} | \
                {w.parents[0] for w in (*self.in_flight.values(), *self.resend) if w.parents}
        hopeless = [i for i in self.states.ids if i not in self.in_flight and i not in waiting and
                    i not in parents and self.ladder.hopeless(i)]
        for work_id in hopeless:
            self.states.drop(work_id)
        return bool(hopeless)

    def _compact(self, late: int) -> bool:
        if self.checkpoints.lines >= late * max(JOURNAL_LINES, 2 * len(self.in_flight)):
            self.checkpoint()
            return True
        return False

    # -- records ---------------------------------------------------------------------------------------
    def _preference(self, row: dict) -> tuple:
        return row["rung"], self.objectives.preference(row["fitness"], costs(row))

    def _beats_best(self, row: dict) -> bool:
        """Whether a row beats the best so far: at a higher rung, or at the same rung with a better fitness (with
        `search.max_latency`: better within the latency, or faster where neither is within it)."""
        return row["status"] == Status.OK and (self._best_key is None or self._preference(row) > self._best_key)

    def _track_best(self, row: dict) -> None:
        if self._beats_best(row):
            self.best, self._best_key = (row["fitness"], row["id"], row["rung"]), self._preference(row)

    # -- the networks kept besides best/: the Pareto front (several objectives) or the K best -----------------
    def _kept_ids(self) -> list[int]:
        """The ids whose networks are kept: the non-dominated results at the top rung, or its `keep_top` best."""
        if self.objectives.many:
            return pareto_front(self.ladder.score[self.ladder.top])
        return [i for _, i in self.ladder.ranked[self.ladder.top][:self.keep_top]]

    def _may_keep(self, row: dict) -> bool:
        return self.kept is not None and row["status"] == Status.OK and row["rung"] == self.ladder.top

    def _weights_wanted(self, work: Work) -> Optional[float]:
        """The fitness a result of `work` must beat for its group to send the weights (None: any result): the
        best's, unless the best is at a lower rung; with `keep_top`, at the top rung, the K-th best's once there are
        K. With several objectives none: any result at the top rung may join the front."""
        if self.objectives.many:
            return None
        if self.keep_top and work.rung == self.ladder.top:
            kept = self._kept_ids()
            return self.store.rows[self._latest[kept[-1]]]["fitness"] if len(kept) == self.keep_top else None
        return self.best[0] if self.best and self.best[2] >= work.rung else None

    def _update_kept(self, work_id: int, staged) -> None:
        """Keep the network staged for `work_id` if it is among those kept now; remove those it pushed out."""
        kept = set(self._kept_ids())
        if work_id in kept:
            install_network(staged, self.kept / str(work_id))
        else:
            discard_staged(staged)
        for other in self.run.member_ids(self.kept):
            if other not in kept:
                remove_network(self.kept / str(other))

    def checkpoint(self, finished: bool = False) -> None:
        """Write the whole state (a snapshot; the journal starts afresh)."""
        in_flight = [*self.in_flight.values(), *self.resend]
        self.checkpoints.snapshot({
            "fingerprint": self.fingerprint, "next_id": self.next_id, "ga": self.search.state(),
            "in_flight": [w.to_json() for w in in_flight], "elapsed": self.elapsed, "finished": finished,
            "attempts": {str(w.id): self.attempts[w.id] for w in in_flight}})

    def close(self) -> None:
        """Flush everything; mark the run finished if its budget is spent. This launch ends cleanly: the genomes
        it sent that are still in flight did not crash it, so their sends are not counted against them."""
        finished = self.done and not self.stopping
        if finished:
            self.search.finish()
        for work_id in self.sent & self.in_flight.keys():
            self.attempts[work_id] -= 1
        self.checkpoint(finished=finished)
        self.checkpoints.close()
        self.store.sync()
        self.store.close()
        self.progress.close()

    def abandon(self) -> None:
        """Close the files, writing nothing (a finished run, which this launch does not extend)."""
        self.checkpoints.close()
        self.store.close()
        self.progress.close()


def costs(row: dict) -> dict:
    """A stored row's objectives besides the metric: its latency (if timed) and parameters."""
    return {"latency": row.get("m:latency"), "parameters": row["params"]}


def _record(row: dict) -> dict:
    """What result.json keeps of a row: all but the genome (in genome.json) and the curve."""
    return {k: v for k, v in row.items() if k not in ("genome", "curve")}


class Progress:
    """A tqdm bar on the master: evaluations of the budget, best fitness, failures, utilization."""

    def __init__(self, master: Master, enabled: bool):
        from tqdm import tqdm

        self.master, self.enabled = master, enabled
        total = master.cfg.search.max_evaluations
        self.failures = sum(r["status"] != Status.OK for r in master.store.rows)
        self.bar = tqdm(total=total, initial=master.first_rung_rows, disable=not enabled, unit="eval",
                        desc=master.cfg.run.name, mininterval=1.0, dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        m = self.master
        best = f"{m.best[0]:.4g} {m.task.unit}" if m.best else "-"
        if m.best and m.rungs is not None:
            best += f" (rung {m.best[2]} of {len(m.rungs.budgets) - 1})"
        util = min(1.0, m.busy_seconds / (max(m.clock() - m.launched, 1e-9) * m.n_groups))
        self.bar.set_postfix_str(f"best {best}, failed {self.failures}, util {util:.0%}", refresh=False)

    def update(self, row: dict) -> None:
        """One row stored: the bar counts new genomes (rung 0), the postfix every row's outcome."""
        self.failures += row["status"] != Status.OK
        if self.enabled:
            self._postfix()
            self.bar.update(int(row["rung"] == 0))

    def close(self) -> None:
        self.bar.close()
