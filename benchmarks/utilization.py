#!/usr/bin/env python
"""Worker utilization of the asynchronous GA against a generational (DEAP eaSimple-style) loop.

W worker threads in one process; each evaluation is a real ``time.sleep`` of a duration drawn from a log-normal
(given mean, sigma 0.5 and 1.0). The i-th genome asked for sleeps the i-th duration in both loops, and both use
``AsyncGA`` (``SyntheticTask().space()``, the config's default GA and surrogate settings, the same seed), so the
only difference is the barrier:

* asynchronous: ask one genome whenever a worker frees (``concurrent.futures.wait(FIRST_COMPLETED)``), tell
  each result as it returns;
* generational: ask a whole generation of W, wait for all of it, tell all, repeat;
* asynchronous, no surrogate (a diagnosis, skipped with --no-surrogate): the asynchronous loop with a GA
  that costs well under a millisecond per result, to separate the effect of the barrier from the master's cost;
* asynchronous with promotion: the real ``Master`` with ``training.rungs`` (1, 3 and 9 budget units, eta 3) over
  the synthetic task, whose training sleeps the log-normal draw of its genome times the units it trains (1, 2 or
  6), all in the main thread as ``mpi.master_loop`` does: store, tell, ask or promote, send to every idle worker.
  A worker may wait for work that a result has yet to make due (a promotion), and at the end the leader's last
  rungs run while other workers have nothing left.

Utilization = total busy seconds (measured in the workers) / (W x wall seconds from the first submission to the
last result). Target: >= 95 % for the asynchronous loop. The script reports; it does not assert.

    python benchmarks/utilization.py            # 800 evaluations per run, 6 runs: about 3 min
    python benchmarks/utilization.py --quick    # 96 evaluations per run: about 30 s
"""
from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
import types
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
from common import code_version, table  # noqa: E402 (puts this checkout first on sys.path)

TARGET = 0.95


def make_ga(seed: int, surrogate: bool):
    from menndl_py.config import SearchConfig
    from menndl_py.search import AsyncGA, Surrogate
    from menndl_py.tasks.synthetic import SyntheticTask

    s = SearchConfig()  # the config's defaults
    task = SyntheticTask()
    space = task.space()
    sur = Surrogate(task.higher_is_better, min_results=s.surrogate_min_results, max_train=s.surrogate_max_train,
                    refit_every=s.surrogate_refit_every) if surrogate else None
    ga = AsyncGA(space, population=s.population, higher_is_better=task.higher_is_better, seed=seed,
                 crossover_rate=s.crossover_rate, mutation_rate=s.mutation_rate, tournament_size=s.tournament_size,
                 surrogate=sur, screen_factor=s.screen_factor, explore_fraction=s.explore_fraction)
    return task, ga


def evaluate(task, trainer, genome, seconds: float):
    """One evaluation in a worker thread: sleep, then the synthetic fitness. Returns (fitness, start, end)."""
    start = time.perf_counter()
    time.sleep(seconds)
    outcome = task.evaluate(genome, trainer)  # options.seconds is 0: no sleep of its own, just the fitness
    end = time.perf_counter()
    return (outcome.fitness if outcome.status == "ok" else None), start, end


class Run:
    def __init__(self, name: str):
        self.name = name
        self.intervals: list[tuple[float, float]] = []
        self.master: list[float] = []  # seconds of tell + ask per result
        self.reaction: list[float] = []  # seconds from a worker's end to its next genome's submission
        self.last_dispatch = 0.0
        self.t0 = self.t1 = 0.0
        self.best = math.inf

    def told(self, ga, genome, fitness, start: float, end: float) -> float:
        """Tell the GA one evaluation's fitness and let it do its idle work; returns the evaluation's end."""
        self.intervals.append((start, end))
        ga.tell(genome, fitness)
        while ga.idle_work():
            pass
        if fitness is not None:
            self.best = min(self.best, fitness)
        return end

    def figures(self, workers: int) -> dict:
        busy = sum(b - a for a, b in self.intervals)
        wall = self.t1 - self.t0
        # before the drain: only up to the last dispatch (after it, workers can only run out of work)
        cut = self.last_dispatch
        busy_before = sum(max(0.0, min(b, cut) - max(a, self.t0)) for a, b in self.intervals)
        return {"busy": busy, "wall": wall, "util": busy / (workers * wall),
                "util_before_drain": busy_before / (workers * max(cut - self.t0, 1e-9)),
                "master_ms": 1e3 * statistics.median(self.master) if self.master else float("nan"),
                "master_p95_ms": 1e3 * sorted(self.master)[int(0.95 * (len(self.master) - 1))] if self.master
                else float("nan"),
                "reaction_ms": 1e3 * statistics.median(self.reaction) if self.reaction else float("nan")}


def run_async(durations, workers: int, seed: int, surrogate: bool) -> Run:
    task, ga = make_ga(seed, surrogate)
    trainer = types.SimpleNamespace(space=ga.space)
    run, n, asked = Run("asynchronous"), len(durations), 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = {}
        run.t0 = time.perf_counter()
        for _ in range(min(workers, n)):
            g = ga.ask().genome
            pending[pool.submit(evaluate, task, trainer, g, durations[asked])] = g
            asked += 1
        run.last_dispatch = time.perf_counter()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                t0 = time.perf_counter()
                b = run.told(ga, pending.pop(future), *future.result())
                if asked < n:
                    g = ga.ask().genome
                    pending[pool.submit(evaluate, task, trainer, g, durations[asked])] = g
                    asked += 1
                    run.last_dispatch = time.perf_counter()
                    run.reaction.append(run.last_dispatch - b)
                run.master.append(time.perf_counter() - t0)
        run.t1 = max(b for _, b in run.intervals)
    return run


def run_promoting(mean: float, sigma: float, n: int, workers: int, seed: int, surrogate: bool) -> Run:
    import tempfile

    import torch

    from menndl_py import config
    from menndl_py.commands.run import make_master
    from menndl_py.engine.evaluator import Evaluator
    from menndl_py.tasks import make_task
    from menndl_py.train.group import LocalGroup

    directory = Path(tempfile.mkdtemp(prefix="menndl-utilization-"))
    cfg = config.from_dict({
        "run": {"name": "promoting", "directory": str(directory)},
        "task": {"name": "synthetic", "data_dir": str(directory), "options": {"seconds": mean, "sigma": sigma}},
        "search": {"max_evaluations": n, "surrogate": surrogate, "seed": seed},
        "training": {"rungs": {"unit": "epochs", "min_budget": 1, "max_budget": 9, "eta": 3}}})
    cfg.run_dir.mkdir(parents=True)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    master = make_master(cfg, task, workers, progress=False)
    evaluator = Evaluator(cfg, task, LocalGroup(), torch.device("cpu"))

    def train(work):
        start = time.perf_counter()
        result = evaluator.evaluate(work)
        return result, start, time.perf_counter()

    run, idle = Run("async, promotion"), list(range(workers))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = {}

        def dispatch() -> None:
            while idle:
                work = master.next_work(idle[0])
                if work is None:
                    return
                pending[pool.submit(train, work)] = idle.pop(0)
                run.last_dispatch = time.perf_counter()

        run.t0 = time.perf_counter()
        dispatch()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                t0 = time.perf_counter()
                idle.append(pending.pop(future))
                result, a, b = future.result()
                run.intervals.append((a, b))
                master.on_result(result)
                if result.fitness is not None and master.best and master.best[1] == result.id:
                    run.best = result.fitness
                sent = len(pending)
                dispatch()
                if len(pending) > sent:
                    run.reaction.append(run.last_dispatch - b)
                run.master.append(time.perf_counter() - t0)
                while master.catch_up():
                    pass
        run.t1 = max(b for _, b in run.intervals)
    master.close()
    shutil.rmtree(directory, ignore_errors=True)
    return run


def run_generational(durations, workers: int, seed: int, surrogate: bool) -> Run:
    task, ga = make_ga(seed, surrogate)
    trainer = types.SimpleNamespace(space=ga.space)
    run, n, asked = Run("generational"), len(durations), 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        run.t0 = time.perf_counter()
        while asked < n:
            t0 = time.perf_counter()
            batch = []
            for _ in range(min(workers, n - asked)):
                g = ga.ask().genome
                batch.append((pool.submit(evaluate, task, trainer, g, durations[asked]), g))
                asked += 1
            run.last_dispatch = time.perf_counter()
            ask_seconds = run.last_dispatch - t0
            wait([f for f, _ in batch], return_when=ALL_COMPLETED)
            t0 = time.perf_counter()
            for future, genome in batch:
                run.told(ga, genome, *future.result())
            tell_seconds = time.perf_counter() - t0
            run.master += [(ask_seconds + tell_seconds) / len(batch)] * len(batch)
            if asked < n:  # each worker idles from its own end until the next generation is sent
                run.reaction += [time.perf_counter() - b for _, (_, _, b) in
                                 ((f, f.result()) for f, _ in batch)]
        run.t1 = max(b for _, b in run.intervals)
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="96 evaluations per run")
    p.add_argument("--evaluations", type=int, default=None, help="per run, rounded up to a multiple of W "
                                                                  "(default 800)")
    p.add_argument("--workers", type=int, default=8, help="W worker threads (default 8)")
    p.add_argument("--mean", type=float, default=0.2, help="mean evaluation time in seconds (default 0.2)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0], help="log-normal sigmas (default 0.5 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-surrogate", action="store_true", help="the GA without its SVM surrogate")
    args = p.parse_args(argv)
    w = args.workers
    n = args.evaluations or (96 if args.quick else 800)
    n = w * math.ceil(n / w)
    surrogate = not args.no_surrogate

    print(f"utilization: W = {w} worker threads, {n} evaluations per run, log-normal times with mean "
          f"{args.mean:g} s, sigma {', '.join(f'{s:g}' for s in args.sigmas)}; AsyncGA seed {args.seed}, "
          f"surrogate {'on' if surrogate else 'off'}\n  {code_version()}", flush=True)
    results = []
    for sigma in args.sigmas:
        mu = math.log(args.mean) - sigma ** 2 / 2  # so that the mean is args.mean
        durations = np.random.default_rng(args.seed).lognormal(mu, sigma, n).tolist()
        runs = [("asynchronous", run_async, surrogate), ("generational", run_generational, surrogate)]
        if surrogate:  # a diagnosis: the same asynchronous loop with a master that costs almost nothing
            runs.append(("async, no surrogate", run_async, False))
        for name, runner, with_surrogate in runs:
            t0 = time.perf_counter()
            run = runner(durations, w, args.seed, with_surrogate)
            run.name = name
            print(f"  sigma {sigma:g}, {run.name}: {time.perf_counter() - t0:.1f} s", flush=True)
            results.append((sigma, run, run.figures(w)))
        t0 = time.perf_counter()
        run = run_promoting(args.mean, sigma, n // 3, w, args.seed, surrogate)
        print(f"  sigma {sigma:g}, {run.name}: {time.perf_counter() - t0:.1f} s", flush=True)
        results.append((sigma, run, run.figures(w)))
    print()

    rows = []
    for sigma, run, f in results:
        rows.append([f"{sigma:g}", run.name, len(run.intervals), f"{f['wall']:.1f}", f"{f['busy']:.1f}",
                     f"{100 * f['util']:.1f} %", f"{100 * f['util_before_drain']:.1f} %",
                     f"{f['master_ms']:.2f}", f"{f['master_p95_ms']:.2f}", f"{f['reaction_ms']:.1f}",
                     f"{run.best:.4f}"])
    print(table(["sigma", "loop", "evals", "wall s", "busy s", "utilization", "util. before drain",
                 "master ms/result", "p95 ms", "worker wait ms", "best fitness"], rows,
                f"== Utilization, W = {w}, mean evaluation {args.mean:g} s =="))
    print()
    rows = []
    for sigma in args.sigmas:
        a = next(f for s, r, f in results if s == sigma and r.name == "asynchronous")
        g = next(f for s, r, f in results if s == sigma and r.name == "generational")
        bare = next((f for s, r, f in results if s == sigma and r.name == "async, no surrogate"), None)
        ladder = next(f for s, r, f in results if s == sigma and r.name == "async, promotion")
        rows.append([f"{sigma:g}", f"{100 * a['util']:.1f} %", f"{100 * g['util']:.1f} %",
                     f"x{a['util'] / g['util']:.2f}", f"x{g['wall'] / a['wall']:.2f}", f">= {100 * TARGET:.0f} %",
                     "yes" if a["util"] >= TARGET else "NO",
                     f"{100 * bare['util']:.1f} % ({'yes' if bare['util'] >= TARGET else 'NO'})" if bare else "-",
                     f"{100 * ladder['util']:.1f} % ({'yes' if ladder['util'] >= TARGET else 'NO'}; before the "
                     f"drain {100 * ladder['util_before_drain']:.1f} %)"])
    print(table(["sigma", "asynchronous", "generational", "ratio async/gen", "wall gen/async", "target (async)",
                 "met", "async, no surrogate", "async, promotion"], rows,
                f"== Asynchronous against generational (surrogate {'on' if surrogate else 'off'}) =="))
    print()
    print("utilization = busy seconds / (W x wall); 'before drain' stops at the last dispatch, leaving out the end "
          "of the run when workers can only run out of work. master ms/result = the main thread's tell + ask per "
          "result (generational: per generation, divided by W). worker wait = median time from a worker's "
          "end to the submission of its next genome (asynchronous: the master's reaction, queueing behind other "
          "results included; generational: the barrier plus tell and ask); the asynchronous loop loses about "
          "worker wait / mean evaluation time of its workers' time to it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
