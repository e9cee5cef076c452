"""The master's work, whatever carries the messages: hand out genomes, store results, keep the GA informed.

Every result is stored and flushed, and every genome journalled in the checkpoint, before the next genome goes
out; genomes in flight when a job dies are sent again on resume, under the same id. What can wait (refitting the
surrogate, results.h5, compacting the checkpoint) is left to `catch_up`, which the transports call after the
reply is sent, when no other result is waiting.
"""
from __future__ import annotations

import csv
import os
import time
from collections import deque
from typing import Optional

from menndl_py.config import Config
from menndl_py.genome import Genome
from menndl_py.search import AsyncGA, Surrogate
from menndl_py.search.ga import SpaceExhausted
from menndl_py.search.seeds import seed_genomes
from menndl_py.store import Checkpoint, ResultStore, read_checkpoint, write_json_atomic
from menndl_py.tasks.base import Task
from menndl_py.train.trainer import INTERRUPTED

SURROGATE_COLUMNS = ["refit", "n_results", "n_train", "fit_seconds", "spearman", "n_scored"]
H5_BATCH, H5_SECONDS = 256, 30.0  # results.h5 is brought level every this many rows or seconds, when idle
JOURNAL_LINES = 1000  # the checkpoint is compacted when its journal is this long (or twice the genomes in flight)
OVERDUE = 4  # deferred work is done even under a backlog of results once it is this many times overdue


class Master:
    def __init__(self, cfg: Config, task: Task, n_groups: int, *, progress: bool = True, clock=time.time):
        self.cfg, self.task, self.n_groups, self.clock = cfg, task, n_groups, clock
        self.run_dir = cfg.run_dir
        self.space = task.space().restricted(cfg.search.space)
        self.metric_column = f"val_{task.metric}"
        self.store = ResultStore(self.run_dir, ["train_loss", *(f"val_{m}" for m in task.metric_names)])
        s = cfg.search
        surrogate = Surrogate(task.higher_is_better, min_results=s.surrogate_min_results,
                              max_train=s.surrogate_max_train, refit_every=s.surrogate_refit_every) \
            if s.surrogate else None
        self.ga = AsyncGA(self.space, population=s.population, higher_is_better=task.higher_is_better, seed=s.seed,
                          crossover_rate=s.crossover_rate, mutation_rate=s.mutation_rate,
                          tournament_size=s.tournament_size, surrogate=surrogate, screen_factor=s.screen_factor,
                          explore_fraction=s.explore_fraction,
                          seeds=seed_genomes(s.seed_genomes, task.baseline_genomes(), self.space))
        self.ids: dict[str, int] = {}  # genome key → evaluation id
        self.in_flight: dict[int, dict] = {}
        self._genomes: dict[int, Genome] = {}  # of the work in flight, by id
        self.resend: deque[dict] = deque()
        self.next_id, self.elapsed_before = 0, 0.0
        self.fingerprint = cfg.fingerprint()
        self.checkpoints = Checkpoint(self.run_dir / "checkpoint.json")
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
            self.ga.tell(genome, row["fitness"] if row["status"] == "ok" else None, refit=False)
        if self.ga.surrogate is not None and self.store.rows:
            self.ga.surrogate.restart()
        checkpoint = read_checkpoint(self.run_dir / "checkpoint.json")
        if checkpoint:
            self.ga.restore(checkpoint["ga"])
            self.next_id = checkpoint["next_id"]
            self.elapsed_before = checkpoint["elapsed"]
            self.checkpoints.seq = checkpoint.get("seq", 0)
            done = {row["id"] for row in self.store.rows}
            self.resend = deque(w for w in checkpoint["in_flight"] if w["id"] not in done)
            for work in self.resend:
                genome = Genome.from_json(work["genome"])
                self.ids[genome.key] = work["id"]
                self.ga.mark_in_flight(genome)
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
    def next_work(self, group: int) -> Optional[dict]:
        """The next genome for `group`, or None when the budget is spent or the search is stopping."""
        if not self.may_dispatch():
            return None
        if self.resend:
            work = self.resend.popleft()
            genome = Genome.from_json(work["genome"])
        else:
            try:
                proposal = self.ga.ask()
            except SpaceExhausted as exc:
                self.exhausted = str(exc)
                return None
            genome = proposal.genome
            work = {"id": self.next_id, "genome": genome.to_json(), "parents": [self.ids[k] for k in proposal.parents],
                    "origin": proposal.origin, "predicted": proposal.predicted, "screened": proposal.screened,
                    "params": proposal.params, "flops": proposal.flops}
            self.ids[genome.key] = self.next_id
            self.next_id += 1
        work.update(group=group, submit_time=self.clock(), best=self.best[0] if self.best else None)
        self.in_flight[work["id"]] = work
        self._genomes[work["id"]] = genome
        if self.checkpoints.started:
            self.checkpoints.append({"work": work, "next_id": self.next_id, "ga": self.ga.state(),
                                     "elapsed": self.elapsed})
        else:
            self.checkpoint()
        return work

    def on_result(self, result: dict) -> None:
        """Store a finished evaluation, then tell the GA. An abandoned one stays in flight, for the resume."""
        if result["status"] == INTERRUPTED:
            return
        work = self.in_flight.pop(result["id"])
        genome = self._genomes.pop(result["id"])
        ok = result["status"] == "ok"
        row = {**{k: work[k] for k in ("id", "origin", "predicted", "params", "flops", "group", "submit_time")},
               **{k: result[k] for k in ("status", "message", "host", "ranks", "start_time", "end_time",
                                         "train_seconds", "epochs", "curve")},
               "genome_hash": genome.key, "parents": ";".join(map(str, work["parents"])),
               "fitness": result["fitness"] if ok else None, "screened": int(work["screened"]),
               "depth": genome.depth, "genome": genome.canonical(),
               **{f"m:{k}": v for k, v in result["metrics"].items()}}
        if result["curve"]:
            row["m:train_loss"] = result["curve"][-1]["train_loss"]
        self.store.append(row)
        if ok and self._track_best(row) and result.get("weights") is not None:
            self._write_best(genome, row, result["weights"])
        self.ga.tell(genome, row["fitness"], refit=False)  # a due refit waits for catch_up
        self.busy_seconds += max(0.0, row["end_time"] - row["start_time"])
        self.progress.update(row)  # the checkpoint is written by next_work or close (stored ids are never re-sent)

    def catch_up(self, idle: bool = True) -> bool:
        """One piece of deferred work, if any is due: refit the surrogate, bring results.h5 level, compact the
        checkpoint. With `idle` False (results are waiting) only work that is `OVERDUE` times late is done.
        Returns whether anything was done (call again until it returns False)."""
        start = time.perf_counter()
        late = 1 if idle else OVERDUE
        surrogate = self.ga.surrogate
        if surrogate is not None and surrogate.due and \
                (not surrogate.ready or surrogate.since_refit >= late * surrogate.refit_every):
            closed = self.ga.refit()
            if closed is not None:
                self._write_surrogate_row(closed)
        elif self.store.h5_pending >= late * H5_BATCH or \
                (idle and self.store.h5_pending and time.monotonic() - self._h5_written >= H5_SECONDS):
            self.store.write_h5()
            self._h5_written = time.monotonic()
        elif self.checkpoints.lines >= late * max(JOURNAL_LINES, 2 * len(self.in_flight)):
            self.checkpoint()
        else:
            return False
        self.deferred_seconds += time.perf_counter() - start
        return True

    # -- records ---------------------------------------------------------------------------------------
    def _track_best(self, row: dict) -> bool:
        if row["status"] != "ok" or row["fitness"] is None:
            return False
        better = self.best is None or (row["fitness"] > self.best[0] if self.task.higher_is_better
                                       else row["fitness"] < self.best[0])
        if better:
            self.best = (row["fitness"], row["id"])
        return better

    def _write_best(self, genome: Genome, row: dict, weights: bytes) -> None:
        best_dir = self.run_dir / "best"
        best_dir.mkdir(exist_ok=True)
        tmp = best_dir / "model.pt.tmp"
        tmp.write_bytes(weights)
        os.replace(tmp, best_dir / "model.pt")
        write_json_atomic(best_dir / "genome.json", genome.to_json())
        write_json_atomic(best_dir / "result.json", {k: v for k, v in row.items() if k not in ("genome", "curve")})

    def _write_surrogate_row(self, row: dict) -> None:
        path = self.run_dir / "surrogate.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, SURROGATE_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in SURROGATE_COLUMNS})

    def checkpoint(self, finished: bool = False) -> None:
        """Write the whole state (a snapshot; the journal starts afresh)."""
        self.checkpoints.snapshot({
            "fingerprint": self.fingerprint, "next_id": self.next_id, "ga": self.ga.state(),
            "in_flight": [*self.in_flight.values(), *self.resend], "elapsed": self.elapsed, "finished": finished})

    def close(self) -> None:
        """Flush everything; mark the run finished if its budget is spent."""
        finished = self.done and not self.stopping
        if finished and self.ga.surrogate is not None and self.ga.surrogate.log:
            closed = self.ga.surrogate.close_log()
            if closed is not None:
                self._write_surrogate_row(closed)
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
        self.failures = sum(r["status"] != "ok" for r in master.store.rows)
        self.bar = tqdm(total=total, initial=len(master.store.rows), disable=not enabled, unit="eval",
                        desc=master.cfg.run.name, mininterval=1.0, dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        m = self.master
        best = f"{m.best[0]:.4g} {m.task.unit}" if m.best else "-"
        util = min(1.0, m.busy_seconds / (max(m.clock() - m.launched, 1e-9) * m.n_groups))
        self.bar.set_postfix_str(f"best {best}, failed {self.failures}, util {util:.0%}", refresh=False)

    def update(self, row: dict) -> None:
        self.failures += row["status"] != "ok"
        if self.enabled:
            self._postfix()
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
