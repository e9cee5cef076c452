#!/usr/bin/env python
"""How many worker groups one master keeps busy: a discrete-event simulation of the real master, and real MPI runs.

1. Simulation. The real master-side objects (``Master`` with its ``AsyncGA``, ``Surrogate``, ``ResultStore`` and
   checkpoint, in a temporary run directory, ``synthetic`` task) run against a simulated clock and W simulated
   worker groups. Evaluation times are log-normal (given mean, sigma 0.5); a share fails (5 %) and a share times
   out (1 %, plus the log-normal's tail beyond the time-out; a time-out takes ``candidate_timeout`` = 3 x mean).
   The master is a single server: each of its steps (``on_result`` + ``next_work``: the reply; ``catch_up``: the
   deferred work, done when no result waits or when overdue, as ``mpi.master_loop`` does) is timed for real with
   ``time.perf_counter`` and charged to the simulated clock, so results queue while it is busy; an idle master
   notices a result within ``mpi.MASTER_POLL``. Fitness comes from ``SyntheticTask.evaluate`` (not charged).

   A sweep point runs until a given number of results is in (the budget is never reached, so there is no
   drain: a real search ends once after many hours). utilization = busy worker time / (W x makespan), the wait
   for the master counted as idle, evaluations still running counted up to the end; "steady" is the same from
   the W-th result on (after the first wave, whose genomes are random samples). master busy = the master's
   charged time / makespan. From the steady-state master time per result c, the
   queueing estimate of the largest W kept >= 95 % busy is W_max = 0.95 x mean / c; it is confirmed by simulating
   W_max workers for the 1-minute mean, and for the 10-minute mean (whose W_max is far beyond what this machine
   can simulate in minutes) by the equivalent load: mean evaluation / 10 and W_max / 10 (the master's load
   W x c / mean is the same).

2. MPI, for R = 3, 9, 17, 33, 65 ranks (groups of 1), evaluations sleeping a log-normal time (mean
   ``--eval-seconds``, sigma 0.5, 5 % failures). By default (``--mpi-mode light``) ``mpirun --oversubscribe -np R
   python scale.py --mpi-child CONFIG``: rank 0 runs the real ``Master`` in the real ``mpi.master_loop``, the
   other ranks the real ``mpi.worker_loop`` with an evaluator that only sleeps and makes up a fitness, so that
   no worker imports torch (65 ranks each importing torch and building the trainer take minutes of CPU on 2
   cores before the search starts). ``--mpi-mode menndl`` runs ``menndl run`` with the ``synthetic`` task
   instead. Utilization and results per second come from results.csv (busy = end - start of each evaluation;
   window = first start to last end; "before drain" stops at the last genome sent).

    python benchmarks/scale.py            # about 15 min on 2 shared cores (the simulated results cost real master time)
    python benchmarks/scale.py --quick    # W = 100 and 1000, no MPI: about a minute

The script reports; it does not assert. ``main(argv)`` returns the figures as a dict.
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import yaml
from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)

TARGET = 0.95
SIGMA, FAILURES, TIMEOUTS, TIMEOUT_FACTOR = 0.5, 0.05, 0.01, 3.0


def overlap(starts: np.ndarray, ends: np.ndarray, a: float, b: float) -> float:
    """Total length of the intervals [starts, ends] inside [a, b]."""
    return float(np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0.0, None).sum())


# -- 1. the simulation ---------------------------------------------------------------------------------------
def simulate(workers: int, mean: float, results: int, workdir: Path, seed: int = 0) -> dict:
    """One run of the real Master against `workers` simulated groups and a simulated clock (seconds)."""
    from menndl_py import config
    from menndl_py.commands.run import make_master, prepare_run_dir
    from menndl_py.engine.transport.mpi import MASTER_POLL
    from menndl_py.genome import Genome
    from menndl_py.records import Result, Status
    from menndl_py.tasks import make_task

    timeout = TIMEOUT_FACTOR * mean
    run_dir = workdir / f"w{workers}-m{mean:g}"
    cfg = config.from_dict({"run": {"name": run_dir.name, "directory": str(workdir)},
                            "task": {"name": "synthetic", "data_dir": str(workdir / "data"),
                                     "options": {"seconds": 0}},
                            "search": {"max_evaluations": results + workers, "surrogate": True, "seed": seed},
                            "cluster": {"candidate_timeout": timeout}})
    prepare_run_dir(cfg, resume=False)
    task = make_task("synthetic", cfg.task.options, cfg.task.data_dir)
    now = [0.0]
    master = make_master(cfg, task, workers, progress=False, clock=lambda: now[0])
    trainer = types.SimpleNamespace(space=master.search.space)
    rng = np.random.default_rng(seed)
    mu = math.log(mean) - SIGMA ** 2 / 2

    clock = 0.0  # when the master is next free
    charged: list[tuple[float, float]] = []  # (start, seconds) of each piece of master work
    replies: list[float] = []
    events: list = []  # (end, seq, group, work, status, start)
    starts, ends = [], []

    def charge(call):
        nonlocal clock
        now[0] = clock
        t0 = time.perf_counter()
        out = call()
        dt = time.perf_counter() - t0
        charged.append((clock, dt))
        clock += dt
        return out, dt

    def launch(group: int, work) -> None:
        u = rng.random()
        seconds = timeout if u < TIMEOUTS else min(float(rng.lognormal(mu, SIGMA)), timeout)
        status = Status.TIMEOUT if seconds >= timeout else Status.ERROR if u < TIMEOUTS + FAILURES else Status.OK
        heapq.heappush(events, (clock + seconds, work.id, group, work, status, clock))

    for group in range(workers):
        work, _ = charge(lambda: master.next_work(group))
        if work is not None:
            launch(group, work)
    wave_end, poll = None, np.random.default_rng(seed + 1)
    while len(ends) < results:
        end, _, group, work, status, start = heapq.heappop(events)
        while clock < end and charge(master.catch_up)[0]:  # idle: deferred work until a result arrives
            pass
        if clock < end:
            clock = end + poll.uniform(0.0, MASTER_POLL)
        outcome = task.evaluate(Genome.from_json(work.genome), trainer) if status == Status.OK else None
        ok = outcome is not None
        result = Result(work.id, status, outcome.fitness if ok else None, outcome.metrics if ok else {},
                        "" if ok else f"simulated {status}", 1 if ok else 0, end - start, [], start, end, "sim", 1)
        starts.append(start)
        ends.append(end)

        def reply(group=group, result=result):
            master.on_result(result)
            return master.next_work(group)
        follow, dt = charge(reply)
        replies.append(dt)
        if follow is not None:
            launch(group, follow)
        if wave_end is None and len(ends) >= workers:
            wave_end, wave_results = clock, len(ends)
        charge(lambda: master.catch_up(idle=False))
    makespan = clock
    refits = len(master.search.surrogate.log) if master.search.surrogate else 0
    master.close()
    shutil.rmtree(run_dir, ignore_errors=True)

    running = [(start, makespan) for _, _, _, _, _, start in events]  # still evaluating at the end
    starts_a = np.array(starts + [a for a, _ in running])
    ends_a = np.array(ends + [b for _, b in running])
    m_start = np.array([a for a, _ in charged])
    m_end = m_start + np.array([d for _, d in charged])
    a, b = wave_end, makespan
    master_steady = overlap(m_start, m_end, a, b)
    return {"workers": workers, "mean": mean, "results": len(ends), "makespan": makespan,
            "utilization": overlap(starts_a, ends_a, 0.0, b) / (workers * b),
            "steady": overlap(starts_a, ends_a, a, b) / (workers * (b - a)),
            "master_busy": float(m_end.sum() - m_start.sum()) / b, "master_busy_steady": master_steady / (b - a),
            "ms_per_result": 1e3 * master_steady / (len(ends) - wave_results),
            "reply_ms": 1e3 * statistics.median(replies), "first_wave_s": wave_end, "refits": refits}


def sweep(args, workdir: Path) -> list[dict]:
    out = []
    for mean in args.means:
        for w in args.workers:
            n = w + max(args.after, int(args.factor * w))
            t0 = time.perf_counter()
            f = simulate(w, 60.0 * mean, n, workdir, args.seed)
            f["wall"] = time.perf_counter() - t0
            print(f"  mean {mean:g} min, W = {w:,}: {n:,} results, utilization {100 * f['utilization']:.2f} % "
                  f"(steady {100 * f['steady']:.2f} %), master busy {100 * f['master_busy']:.1f} %, "
                  f"{f['ms_per_result']:.2f} ms/result ({f['wall']:.0f} s)", flush=True)
            out.append(f)
    return out


def w_max(args, sims: list[dict], workdir: Path) -> list[dict]:
    """The queueing estimate 0.95 x mean / c per mean (c from the largest simulated W), and its confirmation."""
    out = []
    for mean in args.means:
        points = [f for f in sims if f["mean"] == 60.0 * mean and not math.isnan(f["ms_per_result"])]
        if not points:
            continue
        c = points[-1]["ms_per_result"] / 1e3
        estimate = int(TARGET * 60.0 * mean / c)
        scale = max(1, math.ceil(estimate / args.confirm_limit))  # same load W c / mean, simulable size
        w, m = max(1, estimate // scale), 60.0 * mean / scale
        n = w + max(args.after, int(args.factor * w))
        print(f"  W_max for {mean:g} min: 0.95 x {60 * mean:g} s / {1e3 * c:.2f} ms = {estimate:,}; confirming with "
              f"W = {w:,}, mean {m:g} s, {n:,} results", flush=True)
        f = simulate(w, m, n, workdir, args.seed)
        out.append({"mean_min": mean, "c_ms": 1e3 * c, "estimate": estimate, "confirm_workers": w,
                    "confirm_mean_s": m, "confirm": f})
    return out


# -- 2. real MPI runs -----------------------------------------------------------------------------------------
def mpi_sweep(args, workdir: Path) -> list[dict]:
    from master_overhead import menndl_command

    from menndl_py.rundir import RunDir

    out = []
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=pythonpath)
    for ranks in args.ranks:
        available = _available_mb()
        if available is not None and available < ranks * args.mb_per_rank:
            out.append({"ranks": ranks, "error": f"not started: {ranks} ranks x ~{args.mb_per_rank} MB > "
                                                 f"{available:,} MB of free memory"})
            print(f"  R = {ranks}: {out[-1]['error']}", flush=True)
            continue
        name = f"mpi{ranks}"
        workers = ranks - 1
        n = max(2 * workers, int(workers * args.mpi_seconds / args.eval_seconds))
        cfg = {"run": {"name": name, "directory": str(workdir / "runs")},
               "task": {"name": "synthetic", "data_dir": str(workdir / "data"),
                        "options": {"seconds": args.eval_seconds, "sigma": SIGMA, "failure_rate": FAILURES}},
               "search": {"max_evaluations": n, "surrogate": True, "seed": args.seed},
               "cluster": {"ranks_per_candidate": 1, "threads_per_rank": 1}}
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        program = [*menndl_command(), "run", str(path), "--no-progress"] if args.mpi_mode == "menndl" else \
            [sys.executable, str(Path(__file__).resolve()), "--mpi-child", str(path)]
        command = ["mpirun", "--oversubscribe", "-np", str(ranks), "-x", "PYTHONPATH", *program]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.mpi_timeout)
            error = None if proc.returncode == 0 else f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}"
        except subprocess.TimeoutExpired:
            error = f"timed out after {args.mpi_timeout:g} s"
        wall = time.perf_counter() - t0
        if error:
            out.append({"ranks": ranks, "error": error, "wall": wall})
            print(f"  R = {ranks}: {error}", flush=True)
            continue
        with open(RunDir(workdir / "runs" / name).results, newline="") as fh:
            rows = list(csv.DictReader(fh))
        start = np.array([float(r["start_time"]) for r in rows])
        end = np.array([float(r["end_time"]) for r in rows])
        submit = np.array([float(r["submit_time"]) for r in rows])
        window = end.max() - start.min()
        last_submit = submit.max()
        busy_before = overlap(start, end, start.min(), last_submit)
        facts = {"ranks": ranks, "workers": workers, "results": len(rows), "wall": wall, "window": window,
                 "utilization": float((end - start).sum()) / (workers * window),
                 "before_drain": busy_before / (workers * (last_submit - start.min())),
                 "per_second": len(rows) / window, "ideal_per_second": workers / args.eval_seconds,
                 "wait_ms": _median_wait(rows)}
        out.append(facts)
        print(f"  R = {ranks}: {len(rows)} results in {window:.0f} s, utilization {100 * facts['utilization']:.1f} % "
              f"(before drain {100 * facts['before_drain']:.1f} %), {facts['per_second']:.1f} results/s "
              f"(mpirun {wall:.0f} s)", flush=True)
    return out


class SleepEvaluator:
    """A worker group's evaluator that sleeps a log-normal time and makes up a fitness (no torch, no data)."""

    def __init__(self, options: dict, seed: int):
        import socket

        self.options, self.seed, self.host = options, seed, socket.gethostname()

    def evaluate(self, work):
        import random

        from menndl_py.genome import Genome
        from menndl_py.records import Result, Status

        rng = random.Random(self.seed * 1_000_003 + work.id)
        start = time.time()
        sigma = self.options["sigma"]
        time.sleep(rng.lognormvariate(math.log(self.options["seconds"]) - sigma ** 2 / 2, sigma))
        genome = Genome.from_json(work.genome)
        ok = rng.random() >= self.options["failure_rate"]
        fitness = 0.05 * abs(genome.depth - 6) + int(genome.key[:4], 16) / 65536 if ok else None
        return Result(work.id, Status.OK if ok else Status.ERROR, fitness, {"val_mae": fitness} if ok else {},
                      "" if ok else "made-up failure", 1, None, [], start, time.time(), self.host, 1)


def mpi_child(config_path: str) -> None:
    """One rank of the light MPI run: rank 0 the real master, the others real worker loops that only sleep."""
    from menndl_py.engine.transport import mpi

    comm = mpi.world()
    layout = mpi.make_layout(comm, 1)  # first, so that no rank spins in a collective while rank 0 imports torch
    raw = yaml.safe_load(Path(config_path).read_text())
    if comm.rank != 0:
        mpi.worker_loop(comm, layout, lambda: SleepEvaluator(raw["task"]["options"], raw["search"]["seed"]))
        return
    from menndl_py import config
    from menndl_py.commands.common import task_of
    from menndl_py.commands.run import make_master, prepare_run_dir

    cfg = config.from_dict(raw)
    prepare_run_dir(cfg, resume=False)
    master = make_master(cfg, task_of(cfg), layout.n_groups, progress=False)
    try:
        mpi.master_loop(comm, layout, master, grace=30.0)
    finally:
        master.close()


def _median_wait(rows: list[dict]) -> float:
    """Median ms from a group's result (end) to the start of its next evaluation."""
    by_group: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append((float(r["start_time"]), float(r["end_time"])))
    waits = [b[0] - a[1] for runs in by_group.values() for a, b in zip(sorted(runs), sorted(runs)[1:])]
    return 1e3 * statistics.median(waits) if waits else float("nan")


def _available_mb():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


# -- the report ------------------------------------------------------------------------------------------------
def report(args, sims, wmax, mpi) -> None:
    print()
    if sims:
        by_w = {}
        for f in sims:
            by_w.setdefault(f["workers"], {})[f["mean"] / 60.0] = f
        header = ["W"]
        for mean in args.means:
            header += [f"{mean:g} min: util.", "steady", "master busy", "ms/result"]
        rows = []
        for w, per_mean in sorted(by_w.items()):
            row = [f"{w:,}"]
            for mean in args.means:
                f = per_mean.get(mean)
                row += ["-"] * 4 if f is None else [f"{100 * f['utilization']:.2f} %", f"{100 * f['steady']:.2f} %",
                                                    f"{100 * f['master_busy']:.1f} %", f"{f['ms_per_result']:.2f}"]
            rows.append(row)
        print(table(header, rows, f"== Simulated: the real master, W simulated groups, log-normal evaluations "
                                  f"(sigma {SIGMA:g}), {100 * FAILURES:g} % failures, {100 * TIMEOUTS:g} % "
                                  f"time-outs =="))
        print("util. = busy worker time / (W x makespan); steady = the same after the first wave (no drain: the "
              "budget is never reached); master busy = master time / makespan; ms/result = master time per result "
              "in the steady state (reply + deferred work)")
        print()
        big = [f for f in sims if f["mean"] == 600.0 and f["workers"] >= 18000]
        if big:
            f = big[-1]
            print(f"target: >= 95 % at {f['workers']:,} workers with 10-minute evaluations: "
                  f"{100 * f['utilization']:.2f} % overall, {100 * f['steady']:.2f} % steady -> "
                  f"{'met' if f['steady'] >= TARGET else 'NOT met'}\n")
    if wmax:
        rows = [[f"{w['mean_min']:g} min", f"{w['c_ms']:.2f}", f"{w['estimate']:,}",
                 f"W = {w['confirm_workers']:,}, mean {w['confirm_mean_s']:g} s",
                 f"{100 * w['confirm']['utilization']:.2f} %", f"{100 * w['confirm']['steady']:.2f} %",
                 f"{100 * w['confirm']['master_busy_steady']:.1f} %"] for w in wmax]
        print(table(["mean evaluation", "c: master ms/result", "W_max = 0.95 x mean / c", "confirmed with",
                     "utilization", "steady", "master busy (steady)"], rows,
                    "== The largest number of workers one master keeps >= 95 % busy =="))
        print()
    if mpi:
        rows = []
        for m in mpi:
            if "error" in m:
                rows.append([m["ranks"], m["ranks"] - 1, "-", "-", "-", "-", "-", "-", m["error"][:80]])
            else:
                rows.append([m["ranks"], m["workers"], m["results"], f"{m['window']:.0f}",
                             f"{100 * m['utilization']:.1f} %", f"{100 * m['before_drain']:.1f} %",
                             f"{m['per_second']:.1f} / {m['ideal_per_second']:.1f}", f"{m['wait_ms']:.1f}", ""])
        print(table(["ranks", "groups", "results", "search s", "utilization", "before drain",
                     "results/s (got / ideal)", "median wait ms", "note"], rows,
                    f"== Real MPI ({args.mpi_mode}): mpirun --oversubscribe, groups of 1, evaluations sleeping "
                    f"{args.eval_seconds:g} s (log-normal, sigma {SIGMA:g}), {100 * FAILURES:g} % failures, on "
                    f"{os.cpu_count()} cores =="))
        print("median wait = from a group's result to the start of its next evaluation (master reaction, "
              "messages and polling on an oversubscribed node)")
        print()


def plot(args, sims, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mean in args.means:
        points = sorted((f for f in sims if f["mean"] == 60.0 * mean), key=lambda f: f["workers"])
        w = [f["workers"] for f in points]
        line, = ax.plot(w, [100 * f["utilization"] for f in points], "o-", label=f"{mean:g} min: overall")
        ax.plot(w, [100 * f["steady"] for f in points], "s--", color=line.get_color(), label=f"{mean:g} min: steady")
    ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("worker groups W")
    ax.set_ylabel("worker utilization (%)")
    ax.set_title("One master, simulated workers (real master code)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "scale_utilization.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [str(path)]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="W = 100 and 1000, 200 results after the first wave; no MPI")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="simulated groups (default 100 1000 3000 6000 12000 18000)")
    p.add_argument("--means", type=float, nargs="+", default=[1.0, 10.0], help="mean evaluation, minutes")
    p.add_argument("--after", type=int, default=None,
                   help="results simulated after the first wave: at least this many (default 1000; quick 200) ...")
    p.add_argument("--factor", type=float, default=0.0, help="... and at least factor x W (default 0)")
    p.add_argument("--confirm-limit", type=int, default=None,
                   help="largest W simulated to confirm W_max (default 3000; quick 500)")
    p.add_argument("--ranks", type=int, nargs="+", default=None, help="MPI world sizes (default 3 9 17 33 65)")
    p.add_argument("--eval-seconds", type=float, default=1.0, help="mean synthetic evaluation in the MPI runs")
    p.add_argument("--mpi-seconds", type=float, default=40.0, help="search time aimed at per MPI run")
    p.add_argument("--mpi-timeout", type=float, default=300.0)
    p.add_argument("--mpi-mode", choices=["light", "menndl"], default="light",
                   help="light: the real master and worker loops, workers only sleep (default); menndl: menndl run")
    p.add_argument("--mb-per-rank", type=int, default=None, help="memory a rank needs, to skip a world that "
                                                                 "cannot start (default 120 light, 350 menndl)")
    p.add_argument("--mpi-child", help=argparse.SUPPRESS)
    p.add_argument("--skip-sim", action="store_true")
    p.add_argument("--skip-mpi", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="directory for the plots")
    args = p.parse_args(argv)
    if args.mpi_child:
        mpi_child(args.mpi_child)
        return {}
    args.mb_per_rank = args.mb_per_rank or (350 if args.mpi_mode == "menndl" else 120)
    args.workers = args.workers or ([100, 1000] if args.quick else [100, 1000, 3000, 6000, 12000, 18000])
    args.after = args.after if args.after is not None else (200 if args.quick else 1000)
    args.confirm_limit = args.confirm_limit or (500 if args.quick else 3000)
    args.ranks = args.ranks or [3, 9, 17, 33, 65]
    skip_mpi = args.skip_mpi or (args.quick and "--ranks" not in (argv or sys.argv))

    workdir = Path(tempfile.mkdtemp(prefix="menndl-scale-"))
    print(f"scale: simulated W = {', '.join(f'{w:,}' for w in args.workers)} at mean evaluations of "
          f"{', '.join(f'{m:g}' for m in args.means)} min; MPI ranks {'(skipped)' if skip_mpi else args.ranks}\n"
          f"  {code_version()}", flush=True)
    figures: dict = {"simulated": [], "w_max": [], "mpi": [], "plots": []}
    try:
        if not args.skip_sim:
            figures["simulated"] = sweep(args, workdir)
            figures["w_max"] = w_max(args, figures["simulated"], workdir)
            figures["plots"] = plot(args, figures["simulated"], args.out)
        if not skip_mpi:
            figures["mpi"] = mpi_sweep(args, workdir)
        report(args, figures["simulated"], figures["w_max"], figures["mpi"])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale_figures.json").write_text(json.dumps(figures, indent=1, default=str))
        for path in figures["plots"] + [str(args.out / "scale_figures.json")]:
            print(f"figures: {path}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
