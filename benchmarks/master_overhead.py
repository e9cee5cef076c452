#!/usr/bin/env python
"""The master's time per result with a zero-cost task, and whether it grows with the length of the history.

Three measurements, one after the other in this script:

1. MPI: ``mpirun --oversubscribe -np RANKS menndl run <config> --no-progress`` with the ``synthetic`` task
   (``options.seconds: 0``), one rank per candidate, the surrogate on (default ``surrogate_max_train``).
   ``menndl run`` writes the median and p95 of the master's time per result (store + tell + ask + send, timed by
   ``mpi.master_loop``) to ``run.json`` as ``master_ms_per_result``. The run's ``results.csv`` also gives the
   results per second in each window of history (the workers cost nothing, so the master is the bottleneck).
2. In process: the same ``Master`` (same config, same seed) driven without MPI, RANKS-1 simulated groups answering
   instantly with results made by ``SyntheticTask.evaluate`` (through the worker's ``Evaluator``). Each result is
   timed like ``master_loop`` does (``on_result`` + ``next_work``, no send: the reply), then the master's deferred
   work is done in full (``catch_up`` until it has nothing left: every refit the surrogate is due, results.h5
   batches, checkpoint compaction), as if the master were idle after every reply; the time per result is the
   sum of both. The parts are timed by wrapping bound methods of the instance from the outside: ``store.append``,
   ``ga.tell``, ``ga.ask``, ``checkpoint`` (snapshots), ``checkpoint journal``, ``catch_up`` (and inside them the
   CSV line, the HDF5 batch, ``surrogate.refit``, ``surrogate.predict``, ``ga.state``). Medians are printed per
   window of history (0-1k, 1k-2k, ...).
3. Growth with history, measured so that other users' load (which drifts over a long run) cancels: the in-process
   run directory is copied once the surrogate's training set is full (``surrogate_max_train`` results, or one
   window in) and again one window before the end; both copies are resumed as two Masters and advanced in turn,
   one result each, for a window of results. Their medians are compared. Garbage collection, timed with
   ``gc.callbacks``, is shown per window of the long run (it is shared by the process, so the paired comparison
   cannot separate it).

Target: median master time per result <= 2 ms, not growing with history (ratio <= 1.25). The script reports; it
does not assert.

    python benchmarks/master_overhead.py                 # 10,000 evaluations: about 10-15 min on 2 shared cores
    python benchmarks/master_overhead.py --quick         # 500 evaluations: about 1-2 min (MPI start-up dominates)
    python benchmarks/master_overhead.py --rungs --pareto  # promotion by Pareto front, NSGA-II (two objectives)
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml
from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)

TARGET_MS = 2.0
GROWTH_LIMIT = 1.25  # last window's median / first window's median: at most this to call it flat


# -- helpers -----------------------------------------------------------------------------------------------
def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1)))] if values else float("nan")


def ms(seconds: float, digits: int = 2) -> str:
    return f"{1e3 * seconds:.{digits}f}"


def window_label(start: int, stop: int) -> str:
    def k(n: int) -> str:
        return f"{n // 1000}k" if n % 1000 == 0 and n else str(n)
    return f"{k(start)}-{k(stop)}"


def windows(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


RUNGS = {"unit": "epochs", "min_budget": 1, "max_budget": 9, "eta": 3}  # --rungs: promotion on (1, 3, 9 units)


def config_dict(directory: Path, name: str, evaluations: int, seed: int, rungs: bool = False,
                pareto: bool = False) -> dict:
    return {"run": {"name": name, "directory": str(directory)},
            "task": {"name": "synthetic", "data_dir": str(directory / "data"), "options": {"seconds": 0}},
            "search": {"max_evaluations": evaluations, "surrogate": True, "seed": seed,
                       **({"objectives": ["metric", "parameters"]} if pareto else {})},
            "cluster": {"ranks_per_candidate": 1, "threads_per_rank": 1},
            **({"training": {"rungs": RUNGS}} if rungs else {})}


# -- 1. the real thing under mpirun --------------------------------------------------------------------------
def menndl_command() -> list[str]:
    script = Path(sys.executable).with_name("menndl")
    if script.exists():
        return [str(script)]
    found = shutil.which("menndl")
    return [found] if found else [sys.executable, "-m", "menndl_py.cli"]


def run_mpi(args, workdir: Path) -> dict:
    cfg_path = workdir / "mpi.yaml"
    cfg_path.write_text(yaml.safe_dump(config_dict(workdir / "runs", "mpi", args.evaluations, args.seed,
                                                   args.rungs, args.pareto)))
    command = ["mpirun", "--oversubscribe", "-np", str(args.ranks), "-x", "PYTHONPATH", *menndl_command(), "run",
               str(cfg_path), "--no-progress"]
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=pythonpath)
    print(f"$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.mpi_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"mpirun timed out after {args.mpi_timeout:g} s"}
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": f"mpirun exited {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
    from menndl_py.rundir import RunDir

    run_dir = RunDir(workdir / "runs" / "mpi")
    facts = run_dir.read_run_json()
    with open(run_dir.results, newline="") as fh:
        ends = sorted(float(r["end_time"]) for r in csv.DictReader(fh))
    return {"wall": wall, "facts": facts, "ends": ends, "run_dir": run_dir.path}


# -- 2. the same Master in process, timed in parts -------------------------------------------------------------
class PartTimer:
    """Wraps callables; the time of a call nested in wrapped calls is booked under its path, 'outer > inner'."""

    def __init__(self):
        self.stack: list[str] = []
        self.current: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, fn, label: str):
        def timed(*a, **k):
            name = " > ".join([*self.stack, label])
            self.stack.append(label)
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.current[name] += time.perf_counter() - start
                self.calls[name] += 1
                self.stack.pop()
        return timed

    def take(self) -> dict[str, float]:
        parts, self.current = dict(self.current), defaultdict(float)
        return parts


class GcClock:
    """Seconds spent in the garbage collector (any generation) since the last take(): a process-wide cost that
    grows with the number of live objects, so with the history the master keeps in memory."""

    def __init__(self):
        self.seconds, self.full, self._start = 0.0, 0, None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.full += info.get("generation") == 2
            self._start = None

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


TOP_PARTS = ["store.append", "ga.tell", "ga.ask", "checkpoint journal", "checkpoint", "catch_up"]
REFIT = "catch_up > surrogate.refit"
GC = "garbage collection"


def instrument(master, timer: PartTimer) -> None:
    """Wrap the bound methods of this Master instance (and of its store, GA and surrogate) with `timer`."""
    master.store.append = timer.wrap(master.store.append, "store.append")
    master.store._write_line = timer.wrap(master.store._write_line, "csv line")
    master.store.write_h5 = timer.wrap(master.store.write_h5, "h5 batch")
    master.search.tell = timer.wrap(master.search.tell, "ga.tell")
    master.search.ask = timer.wrap(master.search.ask, "ga.ask")
    master.search.state = timer.wrap(master.search.state, "ga.state")
    master.checkpoint = timer.wrap(master.checkpoint, "checkpoint")
    master.checkpoints.append = timer.wrap(master.checkpoints.append, "checkpoint journal")
    master.catch_up = timer.wrap(master.catch_up, "catch_up")
    if master.search.surrogate is not None:
        master.search.surrogate.refit = timer.wrap(master.search.surrogate.refit, "surrogate.refit")
        master.search.surrogate.predict = timer.wrap(master.search.surrogate.predict, "surrogate.predict")


class Driver:
    """A Master and its simulated groups, advanced one result at a time and timed like mpi.master_loop times it
    (on_result + next_work; no send), then all its deferred work (catch_up until it has none)."""

    def __init__(self, master, evaluator, n_groups: int, timer: PartTimer, gc_clock: GcClock):
        self.master, self.evaluator, self.timer, self.gc_clock = master, evaluator, timer, gc_clock
        self.queue = [w for w in (master.next_work(g) for g in range(n_groups)) if w is not None]
        self.idle: list[int] = []  # groups that found no work
        self.totals: list[float] = []  # reply + deferred work
        self.replies: list[float] = []  # on_result + next_work: what the worker waits for
        self.parts: list[dict[str, float]] = []
        timer.take()

    def step(self) -> bool:
        if not self.queue:
            return False
        work = self.queue.pop(0)  # groups answer in turn: every evaluation takes the same (zero) time
        result = self.evaluator.evaluate(work)
        self.gc_clock.take()
        t0 = time.perf_counter()
        self.master.on_result(result)
        follow = self.master.next_work(work.group)
        reply = time.perf_counter() - t0
        while self.master.catch_up():
            pass
        elapsed = time.perf_counter() - t0
        self.master.handling_seconds.append(reply)
        self.replies.append(reply)
        self.totals.append(elapsed)
        parts = self.timer.take()
        parts[GC] = self.gc_clock.take()
        self.parts.append(parts)
        if follow is not None:
            self.queue.append(follow)
        else:  # nothing due for it now (with rungs a later result may make a promotion due)
            self.idle.append(work.group)
        while self.idle and (waiting := self.master.next_work(self.idle[0])) is not None:
            self.idle.pop(0)
            self.queue.append(waiting)
        return True


def run_in_process(args, workdir: Path) -> dict:
    import torch

    from menndl_py import config
    from menndl_py.commands.run import make_master, prepare_run_dir
    from menndl_py.engine.evaluator import Evaluator
    from menndl_py.rundir import RunDir, read_checkpoint
    from menndl_py.tasks import make_task
    from menndl_py.train.group import LocalGroup

    torch.set_num_threads(1)
    cfg = config.from_dict(config_dict(workdir / "runs", "inprocess", args.evaluations, args.seed, args.rungs,
                                       args.pareto))
    prepare_run_dir(cfg, resume=False)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    n_groups = args.ranks - 1
    master = make_master(cfg, task, n_groups, progress=False)
    evaluator = Evaluator(cfg, task, LocalGroup(), torch.device("cpu"))
    timer, gc_clock = PartTimer(), GcClock()
    instrument(master, timer)

    # snapshots of the run directory for the growth test: once the surrogate's training set is full, and one
    # window before the end
    cap = min(cfg.search.surrogate_max_train, max(0, args.evaluations - 2 * args.window))
    early, late = max(cap, min(args.window, args.evaluations - 2 * args.window)), args.evaluations - args.window
    snapshots: dict[int, Path] = {}
    mid_checkpoint = None
    try:
        driver = Driver(master, evaluator, n_groups, timer, gc_clock)
        start = time.perf_counter()
        while driver.step():
            done = len(driver.totals)
            if done == args.evaluations // 2:  # a mid-run checkpoint, with genomes in flight
                mid_checkpoint = read_checkpoint(RunDir(cfg.run_dir).checkpoint)
            if done in (early, late) and done not in snapshots:  # flushed and checkpointed: a resumable state
                snapshots[done] = workdir / "snapshots" / f"after-{done}"
                shutil.copytree(cfg.run_dir, snapshots[done])
        wall = time.perf_counter() - start
    finally:
        master.close()
    out = {"totals": driver.totals, "replies": driver.replies, "parts": driver.parts, "wall": wall,
           "calls": dict(timer.calls), "checkpoint": mid_checkpoint, "max_train": cfg.search.surrogate_max_train,
           "full_gcs": gc_clock.full,
           "refits": len(master.search.surrogate.log) if master.search.surrogate else 0,
           "refit_every": cfg.search.surrogate_refit_every}
    del master, driver
    gc.collect()

    # the growth test: resume both snapshots and advance them in turn, so that the machine's load (other users)
    # falls on both alike; only the length of the history differs
    if len(snapshots) == 2:
        drivers = {}
        for done, path in sorted(snapshots.items()):
            snap_cfg = config.from_dict(config_dict(path.parent, path.name, args.evaluations, args.seed,
                                                    args.rungs, args.pareto))
            resumed = make_master(snap_cfg, task, n_groups, progress=False)
            snap_timer = PartTimer()
            instrument(resumed, snap_timer)
            drivers[done] = Driver(resumed, evaluator, n_groups, snap_timer, gc_clock)
        steps = 0
        while steps < args.window and all(d.step() for d in drivers.values()):
            steps += 1
        for d in drivers.values():
            d.master.close()
        out["growth"] = {done: (d.totals[:steps], d.parts[:steps]) for done, d in drivers.items()}
    gc_clock.close()
    return out


def checkpoint_anatomy(payload: dict, directory: Path, repeat: int = 200) -> list[list]:
    """What one checkpoint write of this size costs, piece by piece (json.dump to a file streams through the
    pure-Python encoder; json.dumps uses the C one)."""
    import io

    from menndl_py.rundir import write_json_atomic

    path = directory / "anatomy.json"
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(payload)

    def median_ms(fn) -> str:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return ms(statistics.median(samples), 3)

    def write_and_replace():
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    n_flight = len(payload.get("in_flight", []))
    return [[f"payload (mid-run): {len(text):,} bytes of JSON, {n_flight} genomes in flight", ""],
            ["menndl_py.rundir.write_json_atomic(path, payload)", median_ms(lambda: write_json_atomic(path, payload))],
            ["  json.dumps(payload)  (C encoder)", median_ms(lambda: json.dumps(payload))],
            ["  open + write + os.replace of the encoded text", median_ms(write_and_replace)],
            ["for comparison: json.dump(payload, StringIO)  (pure-Python encoder)",
             median_ms(lambda: json.dump(payload, io.StringIO()))]]


# -- the report ------------------------------------------------------------------------------------------------
def mean_of(parts: list[dict], key: str) -> float:
    return statistics.fmean(p.get(key, 0.0) for p in parts) if parts else float("nan")


def per_call(parts: list[dict], key: str) -> float:
    calls = sum(key in p for p in parts)
    return sum(p.get(key, 0.0) for p in parts) / calls if calls else float("nan")


def report(args, mpi: dict | None, inproc: dict | None, workdir: Path) -> None:
    print()
    rows = []
    if mpi is not None and "error" not in mpi:
        m = mpi["facts"].get("master_ms_per_result", {})
        med = m.get("median", float("nan"))
        rows.append([f"MPI, {args.ranks} ranks (run.json master_ms_per_result)", f"{med:.2f}",
                     f"{m.get('p95', float('nan')):.2f}", f"<= {TARGET_MS:g}", "yes" if med <= TARGET_MS else "NO"])
    growth = inproc.get("growth") if inproc else None
    if inproc is not None:
        t = inproc["totals"]
        med = statistics.median(t)
        rows.append([f"in process, {args.ranks - 1} simulated groups: reply + deferred work", ms(med),
                     ms(percentile(t, 0.95)), f"<= {TARGET_MS:g}", "yes" if 1e3 * med <= TARGET_MS else "NO"])
        rows.append([f"  mean (deferred refits every {inproc['refit_every']} results included)",
                     ms(statistics.fmean(t)), "", "", ""])
        r = inproc["replies"]
        rows.append(["  the reply alone (on_result + next_work: what a worker waits for)",
                     ms(statistics.median(r)), ms(percentile(r, 0.95)), "", ""])
    if growth:
        (early, (te, pe)), (late, (tl, pl)) = sorted(growth.items())
        ratio = statistics.median(tl) / statistics.median(te)
        rows.append([f"growth: median after {late:,} / after {early:,} results (interleaved)", f"x{ratio:.2f}", "",
                     f"<= x{GROWTH_LIMIT:g}", "yes" if ratio <= GROWTH_LIMIT else "NO"])
        refit = per_call(pl, REFIT) / per_call(pe, REFIT)
        rows.append(["growth: surrogate.refit per call, same comparison", f"x{refit:.2f}", "",
                     f"<= x{GROWTH_LIMIT:g}", "yes" if refit <= GROWTH_LIMIT else "NO"])
    if rows:
        print(table(["master time per result", "median ms", "p95 ms", "target", "met"], rows,
                    f"== Master overhead: {args.evaluations:,} evaluations, synthetic task (0 s), surrogate on =="))
        print()

    if mpi is not None:
        if "error" in mpi:
            print(f"MPI run failed: {mpi['error']}\n")
        else:
            ends = mpi["ends"]
            print(f"MPI run: {len(ends):,} results, mpirun wall {mpi['wall']:.0f} s "
                  f"(of which searching {ends[-1] - ends[0]:.0f} s; the rest is start-up of {args.ranks} ranks)\n")
    if inproc is None:
        return

    # by window of history, in the one long run
    t, parts = inproc["totals"], inproc["parts"]
    ends = mpi["ends"] if mpi and "error" not in mpi else None
    rows = []
    for a, b in windows(len(t), args.window):
        w, wp = t[a:b], parts[a:b]
        means = [mean_of(wp, p) for p in TOP_PARTS]
        row = [window_label(a, b), ms(statistics.median(w)), ms(percentile(w, 0.95)), *(ms(m) for m in means),
               ms(statistics.fmean(w) - sum(means)), ms(mean_of(wp, REFIT)), ms(mean_of(wp, GC))]
        if ends is not None:
            e = ends[a:b] if b <= len(ends) else []
            rate = (len(e) - 1) / (e[-1] - e[0]) if len(e) > 1 and e[-1] > e[0] else float("nan")
            row.append(f"{1e3 / rate:.2f}" if rate == rate else "-")
        rows.append(row)
    header = ["history", "median ms", "p95 ms", *(f"{p} (mean)" for p in TOP_PARTS), "other (mean)",
              "of catch_up: refit", "gc (mean)"]
    if ends is not None:
        header.append("MPI ms/result (wall)")
    print(table(header, rows, "== In process, by window of history: one long run (ms per result; the parts are "
                              "means and add up to the mean total; gc falls inside the parts) =="))
    print("(other users' load drifts over a long run and moves every column; the interleaved comparison below is "
          "the measurement of growth)")
    print()

    if growth:
        (early, (te, pe)), (late, (tl, pl)) = sorted(growth.items())
        rows = [["median per result", ms(statistics.median(te)), ms(statistics.median(tl))],
                ["mean per result", ms(statistics.fmean(te)), ms(statistics.fmean(tl))],
                ["p95 per result", ms(percentile(te, 0.95)), ms(percentile(tl, 0.95))],
                *([f"  {p} (mean)", ms(mean_of(pe, p)), ms(mean_of(pl, p))] for p in TOP_PARTS),
                ["  catch_up > surrogate.refit, per call", ms(per_call(pe, REFIT)), ms(per_call(pl, REFIT))],
                ["  ga.ask > surrogate.predict, per call", ms(per_call(pe, "ga.ask > surrogate.predict")),
                 ms(per_call(pl, "ga.ask > surrogate.predict"))],
                ["  garbage collection (mean)", ms(mean_of(pe, GC)), ms(mean_of(pl, GC))]]
        for r in rows:
            try:
                r.append(f"x{float(r[2]) / float(r[1]):.2f}")
            except (ValueError, ZeroDivisionError):
                r.append("-")
        print(table(["ms", f"after {early:,} results", f"after {late:,} results", "ratio"], rows,
                    f"== Growth with history: the run directory copied after {early:,} and after {late:,} results, "
                    f"both resumed and advanced in turn for {len(te):,} results each =="))
        print("(advanced in turn, both see the same load from other users; garbage collection is shared by the "
              "process, so its growth shows in the windows above, not here)")
        print()

    # every wrapped piece, over the whole run
    n = len(t)
    names = sorted({k for p in parts for k in p if k != GC},
                   key=lambda k: (TOP_PARTS.index(k.split(" > ")[0]) if k.split(" > ")[0] in TOP_PARTS else 99,
                                  k.split(" > ")))
    total_mean = statistics.fmean(t)
    rows = []
    for name in names:
        total = sum(p.get(name, 0.0) for p in parts)
        calls = inproc["calls"].get(name, 0)
        rows.append(["  " * name.count(" > ") + name, f"{calls / n:.2f}", ms(total / max(calls, 1), 3),
                     ms(total / n, 3), f"{100 * total / n / total_mean:.0f} %"])
    rest = total_mean - sum(mean_of(parts, k) for k in TOP_PARTS)
    rows.append(["other (row building, progress, ...)", "", "", ms(rest, 3),
                 f"{100 * rest / total_mean:.0f} %"])
    rows.append(["total", "", "", ms(total_mean, 3), "100 %"])
    gc_total = mean_of(parts, GC)
    rows.append([f"garbage collection, inside the parts above ({inproc['full_gcs']} full collections)", "", "",
                 ms(gc_total, 3), f"{100 * gc_total / total_mean:.0f} %"])
    print(table(["part (indented: inside the part named before it)", "calls/result", "ms per call", "ms per result",
                 "share of mean"], rows,
                f"== In process, where the time goes ({n:,} results, surrogate_max_train {inproc['max_train']}, "
                f"{inproc['refits']} refits logged) =="))
    print()
    if inproc["checkpoint"] is not None:
        print(table(["one checkpoint snapshot, piece by piece", "median ms"],
                    checkpoint_anatomy(inproc["checkpoint"], workdir),
                    f"== Anatomy of a checkpoint snapshot's file write ({inproc['calls'].get('checkpoint', 0) / n:.3f} "
                    f"per result; the journal takes a line per genome sent in between) =="))
        print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="500 evaluations, windows of 100")
    p.add_argument("--evaluations", type=int, default=None, help="search.max_evaluations (default 10000)")
    p.add_argument("--window", type=int, default=None, help="results per window of history (default 1000)")
    p.add_argument("--ranks", type=int, default=9, help="MPI ranks: master + ranks-1 groups of 1 (default 9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rungs", action="store_true", help="multi-fidelity promotion on (training.rungs 1, 3, 9; "
                                                          "evaluations count new genomes, results every rung)")
    p.add_argument("--pareto", action="store_true", help="two objectives (search.objectives: [metric, "
                                                          "parameters]): NSGA-II, promotion by Pareto front")
    p.add_argument("--skip-mpi", action="store_true", help="only the in-process measurement")
    p.add_argument("--skip-inprocess", action="store_true", help="only the MPI measurement")
    p.add_argument("--mpi-timeout", type=float, default=4 * 3600.0, help="seconds before mpirun is given up")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    args = p.parse_args(argv)
    args.evaluations = args.evaluations or (500 if args.quick else 10_000)
    args.window = args.window or (100 if args.quick else 1000)

    workdir = Path(tempfile.mkdtemp(prefix="menndl-master-overhead-"))
    print(f"master_overhead: {args.evaluations:,} evaluations, {args.ranks} ranks, windows of {args.window}, "
          f"work dir {workdir}\n  {code_version()}", flush=True)
    mpi = inproc = None
    try:
        if not args.skip_mpi:
            t0 = time.perf_counter()
            mpi = run_mpi(args, workdir)
            print(f"  MPI run done in {time.perf_counter() - t0:.0f} s", flush=True)
        if not args.skip_inprocess:
            t0 = time.perf_counter()
            inproc = run_in_process(args, workdir)
            print(f"  in-process run done in {time.perf_counter() - t0:.0f} s", flush=True)
        report(args, mpi, inproc, workdir)
    finally:
        if args.keep:
            print(f"run directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
