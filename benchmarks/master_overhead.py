#!/usr/bin/env python
"""The master's time per result with a zero-cost task, and whether it grows with the length of the history.

Two measurements, one after the other in this script:

1. MPI: ``mpirun --oversubscribe -np RANKS menndl run <config> --no-progress`` with the ``synthetic`` task
   (``options.seconds: 0``), one rank per candidate, the surrogate on (default ``surrogate_max_train``).
   ``menndl run`` writes the median and p95 of the master's time per result (store + tell + ask + send, timed by
   ``mpi.master_loop``) to ``run.json`` as ``master_ms_per_result``. The run's ``results.csv`` also gives the
   results per second in each window of history (the workers cost nothing, so the master is the bottleneck).
2. In process: the same ``Master`` (same config, same seed) driven without MPI, RANKS-1 simulated groups answering
   instantly with results made by ``SyntheticTask.evaluate`` (through the worker's ``Evaluator``). Each result is
   timed like ``master_loop`` does (``on_result`` + ``next_work``, no send), and split into parts by wrapping bound
   methods of the instance from the outside: ``store.append``, ``ga.tell``, ``ga.ask``, ``checkpoint`` (and inside
   them ``store._write_h5``, ``surrogate.refit``, ``surrogate.predict``, ``ga.state``, ``cfg.fingerprint``,
   ``write_json_atomic``). Medians are printed per window of history (0-1k, 1k-2k, ...).

Target: median master time per result <= 2 ms, not growing with history. Growth is judged from the window where the
surrogate's training set is full (``surrogate_max_train`` results) to the last window, corrected for the machine's
load with a fixed calibration workload timed along the run (other users' load drifts over a long run). The
script reports; it does not assert.

    python benchmarks/master_overhead.py                 # 10,000 evaluations: about 12-20 min on 2 shared cores
    python benchmarks/master_overhead.py --quick         # 500 evaluations: about 2-3 min (MPI start-up dominates)
"""
from __future__ import annotations

import argparse
import csv
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # measure this checkout's menndl_py, whatever the environment has installed

TARGET_MS = 2.0
GROWTH_LIMIT = 1.25  # last window's median / first window's median: at most this to call it flat


# -- helpers -----------------------------------------------------------------------------------------------
def code_version() -> str:
    import menndl_py

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"menndl_py from {Path(menndl_py.__file__).parent} (git {commit or 'unknown'})"


def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1)))] if values else float("nan")


def table(header: list[str], rows: list[list], title: str = "") -> str:
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else f"{c}" for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title] if title else []
    out.append(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells[0], widths))))
    out.append(line.replace("+", "|"))
    for r in cells[1:]:
        out.append(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def ms(seconds: float, digits: int = 2) -> str:
    return f"{1e3 * seconds:.{digits}f}"


def window_label(start: int, stop: int) -> str:
    def k(n: int) -> str:
        return f"{n // 1000}k" if n % 1000 == 0 and n else str(n)
    return f"{k(start)}-{k(stop)}"


def windows(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def config_dict(directory: Path, name: str, evaluations: int, seed: int) -> dict:
    return {"run": {"name": name, "directory": str(directory)},
            "task": {"name": "synthetic", "data_dir": str(directory / "data"), "options": {"seconds": 0}},
            "search": {"max_evaluations": evaluations, "surrogate": True, "seed": seed},
            "cluster": {"ranks_per_candidate": 1, "threads_per_rank": 1}}


# -- 1. the real thing under mpirun --------------------------------------------------------------------------
def menndl_command() -> list[str]:
    script = Path(sys.executable).with_name("menndl")
    if script.exists():
        return [str(script)]
    found = shutil.which("menndl")
    return [found] if found else [sys.executable, "-m", "menndl_py.cli"]


def run_mpi(args, workdir: Path) -> dict:
    cfg_path = workdir / "mpi.yaml"
    cfg_path.write_text(yaml.safe_dump(config_dict(workdir / "runs", "mpi", args.evaluations, args.seed)))
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
    run_dir = workdir / "runs" / "mpi"
    facts = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "results.csv", newline="") as fh:
        ends = sorted(float(r["end_time"]) for r in csv.DictReader(fh))
    return {"wall": wall, "facts": facts, "ends": ends, "run_dir": run_dir}


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


class Calibration:
    """A fixed piece of work like the master's (an SVR fit on fixed data, a prediction, a JSON encoding), timed
    every few results, outside the results' own timings: how fast the machine is at that moment. Other users'
    load drifts over a long run; dividing by this separates growth with history from a busier machine."""

    def __init__(self):
        import numpy as np

        rng = np.random.default_rng(0)
        self.x, self.y = rng.random((256, 30)), rng.random(256)
        self.payload = {"rows": rng.random((60, 30)).tolist()}
        self.samples: list[tuple[int, float]] = []  # (results so far, seconds)

    def __call__(self, index: int) -> None:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        start = time.perf_counter()
        make_pipeline(StandardScaler(), SVR(C=1.0, epsilon=0.02)).fit(self.x, self.y).predict(self.x[:8])
        json.dumps(self.payload)
        self.samples.append((index, time.perf_counter() - start))

    def median(self, a: int, b: int) -> float:
        return statistics.median([s for i, s in self.samples if a <= i < b] or [float("nan")])


TOP_PARTS = ["store.append", "ga.tell", "ga.ask", "checkpoint"]
REFIT = "ga.tell > surrogate.refit"


def run_in_process(args, workdir: Path) -> dict:
    import torch

    from menndl_py import config
    from menndl_py.cluster import master as master_module
    from menndl_py.cluster.master import Master
    from menndl_py.cluster.worker import Evaluator
    from menndl_py.run import prepare_run_dir
    from menndl_py.tasks import make_task
    from menndl_py.train.group import LocalGroup

    torch.set_num_threads(1)
    cfg = config.from_dict(config_dict(workdir / "runs", "inprocess", args.evaluations, args.seed))
    prepare_run_dir(cfg, resume=False)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    n_groups = args.ranks - 1
    master = Master(cfg, task, n_groups=n_groups, progress=False)
    evaluator = Evaluator(cfg, task, LocalGroup(), torch.device("cpu"))

    timer = PartTimer()
    master.store.append = timer.wrap(master.store.append, "store.append")
    master.store._write_h5 = timer.wrap(master.store._write_h5, "h5 write")
    master.ga.tell = timer.wrap(master.ga.tell, "ga.tell")
    master.ga.ask = timer.wrap(master.ga.ask, "ga.ask")
    master.ga.state = timer.wrap(master.ga.state, "ga.state")
    master.checkpoint = timer.wrap(master.checkpoint, "checkpoint")
    object.__setattr__(master.cfg, "fingerprint", timer.wrap(master.cfg.fingerprint, "cfg.fingerprint"))
    if master.ga.surrogate is not None:
        master.ga.surrogate.refit = timer.wrap(master.ga.surrogate.refit, "surrogate.refit")
        master.ga.surrogate.predict = timer.wrap(master.ga.surrogate.predict, "surrogate.predict")
    saved_writer = master_module.write_json_atomic
    master_module.write_json_atomic = timer.wrap(saved_writer, "write_json_atomic")

    mid_checkpoint = None
    calibration, every = Calibration(), max(1, args.window // 20)
    totals: list[float] = []
    parts: list[dict[str, float]] = []
    try:
        queue = [w for w in (master.next_work(g) for g in range(n_groups)) if w is not None]
        timer.take()
        start = time.perf_counter()
        while queue:
            work = queue.pop(0)  # groups answer in turn: every evaluation takes the same (zero) time
            result = evaluator.evaluate(work)
            t0 = time.perf_counter()
            master.on_result(result)
            follow = master.next_work(work["group"])
            elapsed = time.perf_counter() - t0
            master.handling_seconds.append(elapsed)
            totals.append(elapsed)
            parts.append(timer.take())
            if len(totals) % every == 0:
                calibration(len(totals) - 1)
            if len(totals) == args.evaluations // 2:  # a mid-run checkpoint, with genomes in flight
                mid_checkpoint = json.loads((cfg.run_dir / "checkpoint.json").read_text())
            if follow is not None:
                queue.append(follow)
        wall = time.perf_counter() - start
    finally:
        master_module.write_json_atomic = saved_writer
        master.close()
    return {"totals": totals, "parts": parts, "wall": wall, "calls": dict(timer.calls), "run_dir": cfg.run_dir,
            "checkpoint": mid_checkpoint, "max_train": cfg.search.surrogate_max_train, "calibration": calibration,
            "refits": len(master.ga.surrogate.log) if master.ga.surrogate else 0}


def checkpoint_anatomy(payload: dict, directory: Path, repeat: int = 200) -> list[list]:
    """What one checkpoint write of this size costs, piece by piece (json.dump to a file streams through the
    pure-Python encoder; json.dumps uses the C one)."""
    import io

    from menndl_py.store import write_json_atomic

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
            ["menndl_py.store.write_json_atomic(path, payload)", median_ms(lambda: write_json_atomic(path, payload))],
            ["  json.dumps(payload)  (C encoder)", median_ms(lambda: json.dumps(payload))],
            ["  open + write + os.replace of the encoded text", median_ms(write_and_replace)],
            ["for comparison: json.dump(payload, StringIO)  (pure-Python encoder)",
             median_ms(lambda: json.dump(payload, io.StringIO()))]]


# -- the report ------------------------------------------------------------------------------------------------
def report(args, mpi: dict | None, inproc: dict | None, workdir: Path) -> None:
    print()
    rows = []
    if mpi is not None and "error" not in mpi:
        m = mpi["facts"].get("master_ms_per_result", {})
        med = m.get("median", float("nan"))
        rows.append([f"MPI, {args.ranks} ranks (run.json master_ms_per_result)", f"{med:.2f}",
                     f"{m.get('p95', float('nan')):.2f}", f"<= {TARGET_MS:g}", "yes" if med <= TARGET_MS else "NO"])
    if inproc is not None:
        t = inproc["totals"]
        med = statistics.median(t)
        rows.append([f"in process, {args.ranks - 1} simulated groups", ms(med), ms(percentile(t, 0.95)),
                     f"<= {TARGET_MS:g}", "yes" if 1e3 * med <= TARGET_MS else "NO"])
        spans = windows(len(t), args.window)
        cal = inproc["calibration"]
        # the surrogate's training set grows up to surrogate_max_train rows: compare from there on
        cap = min(inproc["max_train"], max(0, len(t) - 2 * args.window))
        base, last = (cap, cap + args.window), spans[-1]
        load = cal.median(*last) / cal.median(*base)
        raw = statistics.median(t[last[0]:last[1]]) / statistics.median(t[base[0]:base[1]])
        rows.append([f"in process, growth: median of last window / {window_label(*base)}, load-corrected",
                     f"x{raw / load:.2f}", f"raw x{raw:.2f}", f"<= x{GROWTH_LIMIT:g}",
                     "yes" if raw / load <= GROWTH_LIMIT else "NO"])

        def refit_ms(a: int, b: int) -> float:
            calls = sum(REFIT in x for x in inproc["parts"][a:b])
            return sum(x.get(REFIT, 0.0) for x in inproc["parts"][a:b]) / max(calls, 1)

        r0, r1 = refit_ms(*base), refit_ms(*last)
        rows.append([f"in process, surrogate.refit per call: same windows, load-corrected",
                     f"x{r1 / r0 / load:.2f}", f"raw {ms(r0, 1)} -> {ms(r1, 1)} ms", f"<= x{GROWTH_LIMIT:g}",
                     "yes" if r1 / r0 / load <= GROWTH_LIMIT else "NO"])
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
    t, parts = inproc["totals"], inproc["parts"]
    ends = mpi["ends"] if mpi and "error" not in mpi else None
    rows = []
    cap = min(inproc["max_train"], max(0, len(t) - 2 * args.window))
    reference = inproc["calibration"].median(cap, cap + args.window)
    for a, b in windows(len(t), args.window):
        w = t[a:b]
        mean_part = {p: statistics.fmean(x.get(p, 0.0) for x in parts[a:b]) for p in TOP_PARTS}
        other = statistics.fmean(w) - sum(mean_part.values())
        refit = statistics.fmean(x.get(REFIT, 0.0) for x in parts[a:b])
        machine = inproc["calibration"].median(a, b)
        row = [window_label(a, b), ms(statistics.median(w)), ms(percentile(w, 0.95)),
               *(ms(mean_part[p]) for p in TOP_PARTS), ms(other), ms(refit), ms(machine),
               ms(statistics.median(w) * reference / machine)]
        if ends is not None:
            e = ends[a:b] if b <= len(ends) else []
            rate = (len(e) - 1) / (e[-1] - e[0]) if len(e) > 1 and e[-1] > e[0] else float("nan")
            row += [f"{1e3 / rate:.2f}" if rate == rate else "-"]
        rows.append(row)
    header = ["history", "median ms", "p95 ms", *(f"{p} (mean)" for p in TOP_PARTS), "other (mean)",
              "of ga.tell: refit", "calibration ms", "median, load-corrected"]
    if ends is not None:
        header.append("MPI ms/result (wall)")
    print(table(header, rows, f"== In process, by window of history (ms per result; parts are means, they add up "
                              f"to the mean total) =="))
    print(f"calibration: a fixed SVR fit + predict + JSON encode, timed every {max(1, args.window // 20)} results; "
          f"load-corrected = median x calibration of {window_label(cap, cap + args.window)} / calibration of the "
          f"window")
    print()

    # every wrapped piece, over the whole run
    n = len(t)
    names = sorted({k for p in parts for k in p}, key=lambda k: (TOP_PARTS.index(k.split(" > ")[0])
                                                                 if k.split(" > ")[0] in TOP_PARTS else 99,
                                                                 k.split(" > ")))
    total_mean = statistics.fmean(t)
    rows = []
    for name in names:
        s = sum(p.get(name, 0.0) for p in parts)
        calls = inproc["calls"].get(name, 0)
        rows.append(["  " * name.count(" > ") + name, f"{calls / n:.2f}", ms(s / max(calls, 1), 3),
                     ms(s / n, 3), f"{100 * s / n / total_mean:.0f} %"])
    rest = total_mean - sum(statistics.fmean(p.get(k, 0.0) for p in parts) for k in TOP_PARTS)
    rows.append(["other (Genome.from_json, row building, progress, ...)", "", "", ms(rest, 3),
                 f"{100 * rest / total_mean:.0f} %"])
    rows.append(["total", "", "", ms(total_mean, 3), "100 %"])
    print(table(["part (indented: inside the part named before it)", "calls/result", "ms per call", "ms per result",
                 "share of mean"], rows,
                f"== In process, where the time goes ({n:,} results, surrogate_max_train {inproc['max_train']}, "
                f"{inproc['refits']} refits logged) =="))
    print()
    print(table(["one checkpoint write, piece by piece", "median ms"],
                checkpoint_anatomy(inproc["checkpoint"], workdir),
                f"== Anatomy of Master.checkpoint's file write ({inproc['calls'].get('checkpoint', 0) / n:.2f} "
                f"per result) =="))
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="500 evaluations, windows of 100")
    p.add_argument("--evaluations", type=int, default=None, help="search.max_evaluations (default 10000)")
    p.add_argument("--window", type=int, default=None, help="results per window of history (default 1000)")
    p.add_argument("--ranks", type=int, default=9, help="MPI ranks: master + ranks-1 groups of 1 (default 9)")
    p.add_argument("--seed", type=int, default=0)
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
