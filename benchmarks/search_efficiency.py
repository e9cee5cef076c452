#!/usr/bin/env python
"""Search efficiency in compute: best-so-far validation MAE against training CPU-seconds, menndl against its peers.

Every method searches the same space (ElemNet's, narrowed: depth 1-8, widths 16-256) on the same data (a fixed
subset of the OQMD rows) with the same rungs: 1, 3 and 9 epochs (eta 3), each continuing from the state the rung
below left (weights, optimizer), constant learning rate. Each method stops candidates early in its own way:

* menndl: the AsyncGA with its SVM surrogate (screening offspring, choosing among promotions) and the master's
  asynchronous promotion (ASHA over the rungs), driven as the master drives one worker group;
* menndl, no surrogate; menndl, no promotion (every genome trained 9 epochs, then told);
* random: random genomes, each trained 9 epochs; random + ASHA: the same genomes under the master's promotion;
* Optuna TPE + Hyperband: ``TPESampler`` (seeded) with ``HyperbandPruner`` (1, 9, 3), reporting at each rung;
* DeepHyper CBO + SH: ``CBO`` through ask/tell, each job watched by a ``SuccessiveHalvingStopper`` (1, 9, 3).

A run (method, seed) goes on until its training CPU-seconds (the Trainer's, one torch thread) reach the budget;
each training is charged the seconds it took when first made. Training is deterministic (one trainer seed for
every run), so each (genome, rung) is trained once over all runs and kept in the cache (its result, and the state a
higher rung continues from): a re-run or a method meeting a genome another trained costs wall time only, never a
figure. A killed benchmark resumes: finished runs are read back, an unfinished one replays from the cache.

Figures: per method, the final best at the budget (median and range over seeds), the compute it needs to reach
random search's final best (median over seeds, as a share of the budget), best-so-far curves (PNG in --out); the
surrogate ablation (menndl with and without it, on --ablation-seeds seeds) with what the surrogate predicts;
the rung ranking (Spearman of each rung's MAE with the top rung's, over every genome trained to the top). Targets
(reported, not asserted; the script exits 0): menndl reaches random's final best within 10 % of the budget, and
ends at least as good as every peer (medians).

    python benchmarks/search_efficiency.py            # 5 seeds (10 for the ablation) x 120 CPU-s: about 40 min
    python benchmarks/search_efficiency.py --quick    # 2 seeds x 4 CPU-s, tiny data: about 2 min
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, code_version, table  # noqa: E402 (puts this checkout first on sys.path)

METHODS = {  # name: how to build it
    "menndl": {"kind": "menndl", "surrogate": True, "promotion": True},
    "menndl, no surrogate": {"kind": "menndl", "surrogate": False, "promotion": True},
    "menndl, no promotion": {"kind": "menndl", "surrogate": True, "promotion": False},
    "random": {"kind": "random", "promotion": False},
    "random + ASHA": {"kind": "random", "promotion": True},
    "Optuna TPE + Hyperband": {"kind": "optuna"},
    "DeepHyper CBO + SH": {"kind": "deephyper"},
}
ABLATION = ("menndl", "menndl, no surrogate")
DEEPHYPER_VERSION = "0.13"
CBO_INITIAL_POINTS = 10  # as Optuna TPE's n_startup_trials
CBO_POINTS = 1000
GRID = 100  # points of the best-so-far curves


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# -- one run: a (method, seed) in its own process ----------------------------------------------------------
class Trainings:
    """(genome, rung) → its result, from the cache or trained here; the state a higher rung continues from is
    kept beside it."""

    def __init__(self, cache: Path, settings: dict):
        import torch

        from menndl_py import config
        from menndl_py.engine.evaluator import make_trainer
        from menndl_py.tasks.elemnet.task import ElemNetTask
        from menndl_py.train.group import LocalGroup

        self.torch, self.dir = torch, cache / "trainings"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.budgets = settings["budgets"]
        cfg = config.from_dict({
            "task": {"name": "elemnet", "data_dir": settings["data_dir"],
                     "options": {"train_size": settings["train_size"], "val_size": settings["val_size"]}},
            "search": {"seed": 0, "space": settings["space"]},  # the trainer's seed: the same for every run
            "training": {"epochs": int(self.budgets[-1]),
                         "rungs": {"unit": "epochs", "min_budget": self.budgets[0], "max_budget": self.budgets[-1],
                                   "eta": settings["eta"]}},
            "cluster": {"candidate_timeout": 3600, "threads_per_rank": 1}})
        self.task = ElemNetTask(cfg.task.options, cfg.task.data_dir)
        self.space = self.task.space().restricted(cfg.search.space)
        self._trainer = lambda: make_trainer(cfg, self.task, LocalGroup(), torch.device("cpu"))
        self.trainer = None

    def _path(self, genome, rung: int, suffix: str) -> Path:
        return self.dir / f"{hashlib.sha1(genome.key.encode()).hexdigest()[:20]}_r{rung}{suffix}"

    def get(self, genome, rung: int) -> tuple[dict, bool]:
        """The result of training `genome` to rung `rung`, and whether it was trained here."""
        from menndl_py.records import Status
        from menndl_py.train.trainer import Stage

        path = self._path(genome, rung, ".json")
        if path.exists():
            return json.loads(path.read_text()), False
        state = None
        if rung > 0:
            self.get(genome, rung - 1)
            below = self._path(genome, rung - 1, ".pt")
            state = self.torch.load(below, weights_only=True)
        if self.trainer is None:  # loads the data: only once a genome needs training
            self.trainer = self._trainer()
        top = len(self.budgets) - 1
        out = self.task.evaluate(genome, self.trainer, None, Stage("epochs", self.budgets[rung], 1.0, state,
                                                                   keep=rung < top))
        if out.state is not None:
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.pt.tmp")
            self.torch.save(out.state, tmp)
            os.replace(tmp, self._path(genome, rung, ".pt"))
        result = {"fitness": out.fitness if out.status == Status.OK else None, "seconds": out.train_seconds,
                  "status": str(out.status), "curve": out.curve}
        write_json_atomic(path, result)
        return result, True


def make_method(spec: dict, space, seed: int, settings: dict, scratch: Path):
    import peers

    from menndl_py import config
    from menndl_py.search import make_search

    budgets, eta = settings["budgets"], settings["eta"]
    if spec["kind"] in ("menndl", "random"):
        base = config.load(REPO / "configs" / "elemnet.yaml").search
        s = config.build(config.SearchConfig, {
            **{k: getattr(base, k) for k in ("crossover_rate", "mutation_rate", "tournament_size", "screen_factor",
                                             "explore_fraction")},
            "population": settings["population"], "seed": seed, "surrogate": spec.get("surrogate", False),
            "algorithm": "ga" if spec["kind"] == "menndl" else "random"}, "search")
        search = make_search(s, space, False, {}, promotion=spec["promotion"])
        return peers.MenndlSearch(search, budgets, eta, spec["promotion"])
    if spec["kind"] == "optuna":
        return peers.OptunaHyperband(space, seed, budgets, eta)
    if spec["kind"] == "deephyper":
        return peers.DeepHyperSH(space, seed, str(scratch), budgets, eta, CBO_INITIAL_POINTS, CBO_POINTS)
    raise ValueError(f"unknown method kind {spec['kind']!r}")


def run_one(job: dict) -> None:
    """Search with one method and seed until the compute budget is spent, recording every training."""
    import peers
    import torch

    torch.set_num_threads(1)
    path, settings = Path(job["file"]), job["settings"]
    trainings = Trainings(path.parent, settings)
    method = make_method(job["spec"], trainings.space, job["seed"], settings, path.parent / f".{path.stem}")
    record = {"method": job["method"], "seed": job["seed"], "spec": job["spec"], "budget": settings["compute"],
              "events": [], "done": False}
    spent = 0.0

    def train(genome, rung: int) -> peers.Trained:
        nonlocal spent
        if spent >= settings["compute"]:
            raise peers.Spent
        result, here = trainings.get(genome, rung)
        spent += result["seconds"]
        record["events"].append({"key": genome.key, "rung": rung, "fitness": result["fitness"],
                                 "seconds": result["seconds"], "spent": spent, "trained_here": here})
        if here:
            write_json_atomic(path, record)
        return peers.Trained(result["fitness"], result["curve"])

    start = time.perf_counter()
    method.run(train)
    record.update(done=True, wall_seconds=time.perf_counter() - start, summary=method.summary())
    write_json_atomic(path, record)


# -- the driver ---------------------------------------------------------------------------------------------
def data_dir(given: str | None) -> str:
    """A directory holding elemnet.h5 (made in the repository's data/ if missing)."""
    target = Path(given) if given else REPO / "data"
    if not (target / "elemnet.h5").exists():
        from menndl_py.tasks.elemnet.task import ElemNetTask

        target.mkdir(parents=True, exist_ok=True)
        print(f"making the ElemNet data set in {target}", flush=True)
        print(ElemNetTask(data_dir=target).make_data(), flush=True)
    return str(target.resolve())


def deephyper_status() -> str:
    """'' if DeepHyper's CBO can run here, else why not (one line)."""
    try:
        import deephyper
        from deephyper.hpo import CBO, HpProblem  # noqa: F401
        from deephyper.stopper import SuccessiveHalvingStopper  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any reason it cannot run is reported, not raised
        return f"DeepHyper does not import: {type(exc).__name__}: {exc}".splitlines()[0]
    if not deephyper.__version__.startswith(DEEPHYPER_VERSION):
        return f"DeepHyper {deephyper.__version__} is installed, the benchmark expects {DEEPHYPER_VERSION}.x"
    return ""


def is_done(job: dict) -> bool:
    f = Path(job["file"])
    return f.exists() and json.loads(f.read_text()).get("done", False)


def run_jobs(batches: list[list[dict]], parallel: int, log) -> dict:
    """Run each batch of runs (those not done yet) in its own process, `parallel` at a time.
    Returns method → failure message, if any."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    todo = [b for b in ([j for j in batch if not is_done(j)] for batch in batches) if b]
    running, failed = {}, {}
    while todo or running:
        while todo and len(running) < parallel:
            batch = todo.pop(0)
            logfile = open(Path(batch[0]["file"]).with_suffix(".log"), "a")
            proc = subprocess.Popen([sys.executable, __file__, "--one", json.dumps(batch)], stdout=logfile,
                                    stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
            running[proc] = (batch, logfile, time.perf_counter())
        for proc in [p for p in running if p.poll() is not None]:
            batch, logfile, t0 = running.pop(proc)
            logfile.close()
            for job in batch:
                what = f"  {job['method']}, seed {job['seed']}"
                if is_done(job):
                    r = json.loads(Path(job["file"]).read_text())
                    here = sum(e["trained_here"] for e in r["events"])
                    log(f"{what}: best {fmt(best_at(r['events'], r['budget']))} in {len(r['events'])} trainings "
                        f"({here} new)")
                else:
                    lines = Path(logfile.name).read_text().strip().splitlines() or ["no output"]
                    failed.setdefault(job["method"], f"exit {proc.returncode}: {lines[-1]}")
                    log(f"{what}: FAILED ({failed[job['method']]})")
            log(f"  ({time.perf_counter() - t0:.0f} s for {len(batch)} run{'s' if len(batch) > 1 else ''})")
        time.sleep(0.2)
    return failed


# -- figures ------------------------------------------------------------------------------------------------
def best_at(events: list[dict], compute: float) -> float:
    """The best validation MAE among the trainings finished within `compute` CPU-seconds (inf if none)."""
    return min((e["fitness"] for e in events if e["spent"] <= compute and e["fitness"] is not None),
               default=math.inf)


def reach(events: list[dict], target: float, budget: float) -> float:
    """The compute at which the best so far first reaches `target` (inf if not within the budget)."""
    best = math.inf
    for e in events:
        if e["spent"] > budget:
            break
        if e["fitness"] is not None:
            best = min(best, e["fitness"])
        if best <= target:
            return e["spent"]
    return math.inf


def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else math.nan


def figures(records: dict[str, list[dict]], budget: float) -> dict:
    """Per method: final best, compute to reach random search's final best, best-so-far curves, counts."""
    grid = [budget * (i + 1) / GRID for i in range(GRID)]
    target = med(best_at(r["events"], budget) for r in records.get("random", []))
    out = {"budget": budget, "grid": grid, "random_final_best_median": target, "methods": {}}
    for m, rs in records.items():
        finals = [best_at(r["events"], budget) for r in rs]
        reaches = [reach(r["events"], target, budget) for r in rs]
        curves = [[best_at(r["events"], c) for c in grid] for r in rs]
        out["methods"][m] = {
            "seeds": [r["seed"] for r in rs],
            "final_best": {"median": med(finals), "min": min(finals), "max": max(finals), "per_seed": finals},
            "compute_to_random_best": {"median": med(reaches), "reached": sum(map(math.isfinite, reaches)),
                                       "per_seed": reaches},
            "curve_median": [med(col) for col in zip(*curves)],
            "curve_min": [min(col) for col in zip(*curves)], "curve_max": [max(col) for col in zip(*curves)],
            "trainings": med(len(r["events"]) for r in rs),
            "genomes": med(len({e["key"] for e in r["events"]}) for r in rs),
            "top_rung": med(sum(e["rung"] == len(r["spec"].get("budgets", [0, 0, 0])) - 1 for e in r["events"])
                            for r in rs),
            "failed": sum(e["fitness"] is None for r in rs for e in r["events"]),
        }
    return out


def surrogate_figures(records: list[dict], budget: float) -> dict:
    """What the menndl runs' surrogates did: screened offspring's first-rung MAE against unscreened ones', and
    the surrogates' Spearman over each refit's window."""
    screened, unscreened, screen_rho, promo_rho = [], [], [], []
    for r in records:
        first = {e["key"]: e["fitness"] for e in r["events"] if e["rung"] == 0 and e["spent"] <= budget}
        for p in r["summary"].get("proposals", []):
            f = first.get(p["key"])
            if p["origin"] == "offspring" and f is not None:
                (screened if p["screened"] else unscreened).append(f)
        screen_rho += [x["spearman"] for x in r["summary"].get("surrogate", []) if x["spearman"] is not None]
        promo_rho += [x["spearman"] for x in r["summary"].get("promotion_surrogate", []) if x["spearman"] is not None]
    return {"screened": med(screened), "n_screened": len(screened), "unscreened": med(unscreened),
            "n_unscreened": len(unscreened), "screen_spearman": med(screen_rho), "n_screen_refits": len(screen_rho),
            "promotion_spearman": med(promo_rho), "n_promotion_refits": len(promo_rho)}


def rung_ranking(cache: Path, top: int) -> dict:
    """Spearman of each rung's validation MAE with the top rung's, over every genome the cache holds at the top."""
    rows: dict[str, dict[int, float]] = {}
    for f in (cache / "trainings").glob("*.json"):
        digest, _, rung = f.stem.rpartition("_r")
        fitness = json.loads(f.read_text())["fitness"]
        if fitness is not None:
            rows.setdefault(digest, {})[int(rung)] = fitness
    full = [r for r in rows.values() if len(r) == top + 1]
    return {"genomes": len(full), "spearman": {rung: spearman([r[rung] for r in full], [r[top] for r in full])
                                               for rung in range(top)}}


def fmt(x: float, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else \
        "not reached" if math.isinf(x) else f"{x:.{digits}f}"


def plot(fig: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(8, 5))
    finite = [v for m in fig["methods"].values() for v in m["curve_median"] if math.isfinite(v)]
    for name, m in fig["methods"].items():
        clean = [[v if math.isfinite(v) else math.nan for v in m[k]] for k in ("curve_median", "curve_min",
                                                                                  "curve_max")]
        line, = ax.plot(fig["grid"], clean[0], label=f"{name} (median of {len(m['seeds'])})")
        ax.fill_between(fig["grid"], clean[1], clean[2], color=line.get_color(), alpha=0.1, linewidth=0)
    if math.isfinite(fig["random_final_best_median"]):
        ax.axhline(fig["random_final_best_median"], color="grey", linestyle="--", linewidth=1,
                   label="random search's final best (median)")
    if finite:  # the early, much worse values would flatten the rest
        lo, hi = min(finite), sorted(finite)[int(0.8 * (len(finite) - 1))]
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.set_xlabel("training CPU-seconds")
    ax.set_ylabel("best validation MAE so far (eV/atom)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=120)
    plt.close(f)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 seeds x 4 CPU-s, tiny data")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 5; --quick 2)")
    p.add_argument("--ablation-seeds", type=int, default=None,
                   help="seeds for menndl with and without the surrogate (default 10; --quick 2)")
    p.add_argument("--compute", type=float, default=None,
                   help="training CPU-seconds per run (default 120; --quick 4)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"among: {', '.join(METHODS)} (default all)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--data-dir", default=None, help="holding elemnet.h5 (default the repository's data/)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="for the PNG and the tables")
    p.add_argument("--cache", default=None, help="run files (default OUT/search_efficiency_cache)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # runs in their own process
    args = p.parse_args(argv)
    if args.one:
        for job in json.loads(args.one):
            run_one(job)
        return {}

    seeds = args.seeds or (2 if args.quick else 5)
    ablation_seeds = max(seeds, args.ablation_seeds or (2 if args.quick else 10))
    settings = {"data_dir": data_dir(args.data_dir), "train_size": 1000 if args.quick else 4000,
                "val_size": 500 if args.quick else 2000, "budgets": [1, 3, 9], "eta": 3, "population": 8,
                "compute": args.compute or (4.0 if args.quick else 120.0),
                "space": {"depth": [1, 4] if args.quick else [1, 8], "width": [16, 32, 64, 128, 256]}}
    out = Path(args.out)
    trained_by = {k: v for k, v in settings.items() if k not in ("data_dir", "compute", "population")}
    fingerprint = hashlib.sha1(json.dumps(trained_by, sort_keys=True).encode()).hexdigest()[:10]
    cache = Path(args.cache or out / "search_efficiency_cache") / fingerprint
    cache.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    specs = {m: {**METHODS[m], "budgets": settings["budgets"]} for m in args.methods}
    dh = deephyper_status() if "DeepHyper CBO + SH" in specs else "not requested"
    if dh and "DeepHyper CBO + SH" in specs:
        del specs["DeepHyper CBO + SH"]
    budget = settings["compute"]
    log(f"search efficiency: ElemNet, {settings['train_size']:,} train / {settings['val_size']:,} validation rows, "
        f"rungs {settings['budgets']} epochs (eta {settings['eta']}), 1 torch thread; space {settings['space']}; "
        f"{budget:g} training CPU-seconds per run; {seeds} seeds ({ablation_seeds} for {' and '.join(ABLATION)}); "
        f"{args.jobs} runs at a time\n  {code_version()}\n  GA population {settings['population']}, other search "
        f"settings from configs/elemnet.yaml\n  cache: {cache}")
    log(f"DeepHyper CBO: {'runs' if not dh else 'NOT RUN: ' + dh}")

    def run_file(method: str, spec: dict, seed: int) -> str:
        digest = hashlib.sha1(json.dumps([spec, settings["population"], budget], sort_keys=True).encode())
        return str(cache / f"{slug(method)}_s{seed}_{digest.hexdigest()[:6]}.json")

    jobs = [{"method": m, "spec": s, "seed": seed, "settings": settings, "file": run_file(m, s, seed)}
            for seed in range(ablation_seeds) for m, s in specs.items() if seed < seeds or m in ABLATION]
    # --quick: one process per method (its seeds in turn), as starting a process costs as much as the runs
    batches = [[j for j in jobs if j["method"] == m] for m in specs] if args.quick else [[j] for j in jobs]
    t0 = time.perf_counter()
    failed = run_jobs(batches, args.jobs, log)
    for m, why in failed.items():
        log(f"{m}: a run FAILED: {why}")
        if m == "DeepHyper CBO + SH":
            dh = f"failed at run time: {why}"
    log(f"all runs: {time.perf_counter() - t0:.0f} s\n")

    records: dict[str, list[dict]] = {}
    for job in jobs:
        f = Path(job["file"])
        r = json.loads(f.read_text()) if f.exists() else None
        if r and r.get("done"):
            records.setdefault(job["method"], []).append(r)
    main_records = {m: [r for r in rs if r["seed"] < seeds] for m, rs in records.items()}
    fig = figures(main_records, budget)
    fig["deephyper"] = dh or "ran"
    ms = fig["methods"]
    rows = [[m, len(f["seeds"]), fmt(f["final_best"]["median"]), fmt(f["final_best"]["min"]),
             fmt(f["final_best"]["max"]), f"{f['genomes']:g}", f"{f['trainings']:g}", f"{f['top_rung']:g}",
             f["failed"]] for m, f in ms.items()]
    log(table(["method", "seeds", "final best MAE: median", "min", "max", "genomes", "trainings", "at top rung",
               "failed"], rows, f"== Best validation MAE (eV/atom) within {budget:g} training CPU-seconds "
                                f"(genomes, trainings, at top rung: medians per run) =="))
    log()
    target = fig["random_final_best_median"]
    rows = [[m, fmt(100 * f["compute_to_random_best"]["median"] / budget, 1),
             f"{f['compute_to_random_best']['reached']}/{len(f['seeds'])}",
             " ".join(f"{100 * x / budget:.0f}" if math.isfinite(x) else "-"
                      for x in f["compute_to_random_best"]["per_seed"])] for m, f in ms.items()]
    log(table(["method", "% of the budget: median", "seeds that reach it", "per seed (%)"], rows,
              f"== Compute to reach random search's final best (median {fmt(target)}) =="))
    log()

    ablation = {m: [best_at(r["events"], budget) for r in records.get(m, [])] for m in ABLATION}
    if all(ablation.values()):
        on, off = ablation[ABLATION[0]], ablation[ABLATION[1]]
        pairs = list(zip(on, off))
        sur = surrogate_figures(records[ABLATION[0]], budget)
        fig["ablation"] = {"on": on, "off": off, "wins": sum(a < b for a, b in pairs),
                           "ties": sum(a == b for a, b in pairs), "surrogate": sur}
        log(table(["surrogate", "seeds", "final best MAE: median", "min", "max", "per seed"],
                  [[label, len(v), fmt(med(v)), fmt(min(v)), fmt(max(v)), " ".join(fmt(x) for x in v)]
                   for label, v in (("on", on), ("off", off))],
                  f"== Surrogate ablation at equal compute ({budget:g} CPU-s) =="))
        log(f"on beats off in {fig['ablation']['wins']} of {len(pairs)} seeds ({fig['ablation']['ties']} ties)")
        log(f"offspring's first-rung MAE (median): screened {fmt(sur['screened'])} ({sur['n_screened']}), "
            f"unscreened {fmt(sur['unscreened'])} ({sur['n_unscreened']}); Spearman over each refit's window "
            f"(median): screening {fmt(sur['screen_spearman'], 2)} ({sur['n_screen_refits']} refits), promotion "
            f"{fmt(sur['promotion_spearman'], 2)} ({sur['n_promotion_refits']} refits)")
        log()
    ranking = rung_ranking(cache, len(settings["budgets"]) - 1)
    fig["rung_ranking"] = ranking
    log(f"rung ranking over the {ranking['genomes']} genomes the cache holds at the top rung: Spearman with the "
        f"top rung's MAE: " + ", ".join(f"{settings['budgets'][r]} epoch{'s' * (settings['budgets'][r] > 1)} "
                                       f"{fmt(rho, 2)}" for r, rho in ranking["spearman"].items()))
    log()

    targets = {}
    if "menndl" in ms and "random" in ms:
        share = ms["menndl"]["compute_to_random_best"]["median"] / budget
        targets["reach_random_best_in_10_percent"] = {"value": share, "limit": 0.10, "met": share <= 0.10}
        log(f"target 1: menndl reaches random search's final best within 10 % of its compute (median): "
            f"{fmt(100 * share, 1)} % -> {'MET' if share <= 0.10 else 'NOT MET'}")
    if "menndl" in ms:
        mine = ms["menndl"]["final_best"]["median"]
        peers = {m: f["final_best"]["median"] for m, f in ms.items() if not m.startswith("menndl")}
        beaten = [m for m, v in peers.items() if mine > v]
        targets["at_least_as_good_as_every_peer"] = {"value": mine, "peers": peers, "met": not beaten}
        log(f"target 2: menndl's final best (median) {fmt(mine)} <= every peer's -> "
            f"{'MET' if not beaten else 'NOT MET (behind ' + ', '.join(beaten) + ')'}")
    fig["targets"] = targets
    log(f"DeepHyper CBO: {'ran' if not dh else 'NOT RUN: ' + dh}")

    out.mkdir(parents=True, exist_ok=True)
    png = out / ("search_efficiency_quick.png" if args.quick else "search_efficiency.png")
    plot(fig, png, f"ElemNet, {settings['train_size']} rows, rungs {settings['budgets']} epochs: "
                   f"median and range over {seeds} seeds")
    png.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {png} and {png.with_suffix('.md')}")
    fig["png"] = str(png)
    return fig


if __name__ == "__main__":
    main()
