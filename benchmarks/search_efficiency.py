#!/usr/bin/env python
"""Search efficiency: menndl_py's surrogate-screened asynchronous GA against peers, on the same evaluations.

Every method searches the same space (the ElemNet task's, narrowed: depth 1-8, widths 16-256) and every candidate
is trained the same way: menndl's Trainer on a LocalGroup, built by ``engine.evaluator.make_trainer`` from one config
(a fixed subset of the OQMD data, a fixed number of epochs and no time budget, one torch thread, one trainer seed),
so a genome's validation MAE does not depend on the method, the seed or the machine's load. Only the search differs:

* GA+surrogate: ``AsyncGA`` with its SVM surrogate, the search settings of configs/elemnet.yaml with the
  population scaled to the budget (evaluations / 7, 8 at 60);
* GA: the same without the surrogate;
* random: ``space.sample``, never the same genome twice;
* Optuna TPE: ``TPESampler`` (Optuna's defaults, seeded), the space define-by-run (depth, then each layer's genes,
  every Choice categorical);
* DeepHyper CBO: ``CBO`` through ask/tell on an ``HpProblem`` with per-layer genes conditional on depth (see
  peers.py for the settings that differ from its defaults), if DeepHyper imports.

Each (method, seed) runs as its own process, ``--jobs`` at a time, one genome at a time (ask, train, tell), and
writes its trajectory to a JSON file in the cache after each evaluation. A run resumes by replaying its search
with recorded results; a genome already trained by any run of the same evaluation settings is not trained again
(training is deterministic), which changes wall time only, never a figure.

Figures: best-so-far validation MAE against evaluations (median and min-max over seeds, PNG in --out), final
best (median, min, max over seeds), and the evaluations each method needs to reach random search's final best
(median over its seeds). Targets: GA+surrogate reaches it within half the budget, and ends at least as good as
Optuna TPE (medians over seeds). The script reports; it does not assert, and exits 0.

    python benchmarks/search_efficiency.py            # 5 seeds x 60 evaluations x 5 methods: about 35 min
    python benchmarks/search_efficiency.py --quick    # 2 seeds x 12 evaluations, tiny data: about 1-2 min
    python benchmarks/search_efficiency.py --variant "sf16:screen_factor=16,explore_fraction=0.1"
"""
from __future__ import annotations

import argparse
import dataclasses
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
    "GA+surrogate": {"kind": "ga", "surrogate": True},
    "GA": {"kind": "ga", "surrogate": False},
    "random": {"kind": "random"},
    "Optuna TPE": {"kind": "optuna"},
    "DeepHyper CBO": {"kind": "deephyper"},
}
DEEPHYPER_VERSION = "0.13"
CBO_INITIAL_POINTS = 10  # as Optuna TPE's n_startup_trials
CBO_POINTS = 1000
RESULT_KEYS = ("key", "genome", "status", "fitness", "train_seconds", "message")


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# -- one run: a (method, seed) in its own process ----------------------------------------------------------
def search_settings(spec: dict, evaluations: int):
    """configs/elemnet.yaml's search section, population scaled to the budget, then the method's overrides.
    (Populations of evaluations / 5 spent too much of the budget on the random start: 0.2245 against 0.2135 eV/atom
    at 60 evaluations, median of 5 seeds.)"""
    from menndl_py import config

    base = config.load(REPO / "configs" / "elemnet.yaml").search
    merged = {**dataclasses.asdict(base), "population": max(4, evaluations // 7), **spec.get("overrides", {})}
    return config.build(config.SearchConfig, merged, "search")


def make_method(spec: dict, space, seed: int, evaluations: int, scratch: Path):
    import peers

    kind = spec["kind"]
    if kind == "ga":
        return peers.GASearch(space, seed, search_settings(spec, evaluations), spec["surrogate"])
    if kind == "random":
        return peers.RandomSearch(space, seed)
    if kind == "optuna":
        return peers.OptunaTPE(space, seed)
    if kind == "deephyper":
        return peers.DeepHyperCBO(space, seed, str(scratch), CBO_INITIAL_POINTS, CBO_POINTS)
    raise ValueError(f"unknown method kind {kind!r}")


def evaluator_config(settings: dict):
    from menndl_py import config

    return config.from_dict({
        "task": {"name": "elemnet", "data_dir": settings["data_dir"],
                 "options": {"train_size": settings["train_size"], "val_size": settings["val_size"]}},
        "search": {"seed": 0, "space": settings["space"]},  # the trainer's seed: the same for every run
        "training": {"epochs": settings["epochs"]},
        "cluster": {"candidate_timeout": 3600, "threads_per_rank": 1}})


def known_results(cache: Path) -> dict:
    """Genome key → recorded result, over every run file of these evaluation settings."""
    known = {}
    for f in cache.glob("*.json"):
        try:
            for e in json.loads(f.read_text())["evaluations"]:
                known[e["key"]] = {k: e[k] for k in RESULT_KEYS}
        except (OSError, ValueError, KeyError):
            continue
    return known


def run_one(job: dict) -> None:
    """Search with one method and seed for the budget, recording each evaluation; resumes from the cache."""
    import torch

    torch.set_num_threads(1)
    from menndl_py.engine.evaluator import make_trainer
    from menndl_py.tasks.elemnet.task import ElemNetTask
    from menndl_py.train.group import LocalGroup

    path, cache = Path(job["file"]), Path(job["file"]).parent
    known = known_results(cache)
    cfg = evaluator_config(job["settings"])
    task = ElemNetTask(cfg.task.options, cfg.task.data_dir)
    space = task.space().restricted(cfg.search.space)
    scratch = cache / f".{path.stem}"
    method = make_method(job["spec"], space, job["seed"], job["evaluations"], scratch)
    trainer = None
    record = {"method": job["method"], "seed": job["seed"], "spec": job["spec"], "evaluations": [], "done": False}
    start = time.perf_counter()
    for _ in range(job["evaluations"]):
        genome = method.ask()
        result = known.get(genome.key) or known_results(cache).get(genome.key)  # others may have trained it since
        trained = result is None
        if trained:
            if trainer is None:  # loads the data: only once a genome needs training
                trainer = make_trainer(cfg, task, LocalGroup(), torch.device("cpu"))
            out = task.evaluate(genome, trainer)
            result = known[genome.key] = {
                "key": genome.key, "genome": genome.to_json(), "status": str(out.status),
                "fitness": out.fitness if out.status == "ok" else None, "train_seconds": out.train_seconds,
                "message": out.message}
        duplicate = any(e["key"] == genome.key for e in record["evaluations"])
        method.tell(genome, result["fitness"])
        record["evaluations"].append({**result, "trained": trained, "duplicate": duplicate, **method.last})
        write_json_atomic(path, record)
    record.update(done=True, seconds=time.perf_counter() - start, **method.summary())
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
    except Exception as exc:  # noqa: BLE001 - any reason it cannot run is reported, not raised
        return f"DeepHyper does not import: {type(exc).__name__}: {exc}".splitlines()[0]
    if not deephyper.__version__.startswith(DEEPHYPER_VERSION):
        return f"DeepHyper {deephyper.__version__} is installed, the benchmark expects {DEEPHYPER_VERSION}.x"
    return ""


def parse_variant(text: str) -> tuple[str, dict]:
    """'NAME:key=value,key=value' → (name, GA+surrogate spec with those search settings)."""
    import yaml

    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    surrogate = overrides.pop("surrogate", True)
    return name.strip(), {"kind": "ga", "surrogate": surrogate, "overrides": overrides}


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
                    e = json.loads(Path(job["file"]).read_text())["evaluations"]
                    best = min((x["fitness"] for x in e if x["fitness"] is not None), default=math.inf)
                    log(f"{what}: best {best:.4f} in {len(e)} evaluations ({sum(x['trained'] for x in e)} trained "
                        f"here)")
                else:
                    lines = Path(logfile.name).read_text().strip().splitlines() or ["no output"]
                    failed.setdefault(job["method"], f"exit {proc.returncode}: {lines[-1]}")
                    log(f"{what}: FAILED ({failed[job['method']]})")
            log(f"  ({time.perf_counter() - t0:.0f} s for {len(batch)} run{'s' if len(batch) > 1 else ''})")
        time.sleep(0.2)
    return failed


def best_so_far(record: dict) -> list[float]:
    best, out = math.inf, []
    for e in record["evaluations"]:
        if e["fitness"] is not None:
            best = min(best, e["fitness"])
        out.append(best)
    return out


def first_reach(curve: list[float], target: float) -> float:
    return next((i + 1 for i, v in enumerate(curve) if v <= target), math.inf)


def med(values) -> float:
    return statistics.median(values) if values else math.nan


def figures(records: dict[str, list[dict]], evaluations: int) -> dict:
    """Per method: best-so-far curves, final best and evaluations to reach random search's final best."""
    curves = {m: [best_so_far(r) for r in rs] for m, rs in records.items()}
    target = med([c[-1] for c in curves.get("random", [])])
    out = {"random_final_best_median": target, "evaluations": evaluations, "methods": {}}
    for m, cs in curves.items():
        finals = [c[-1] for c in cs]
        reach = [first_reach(c, target) for c in cs]
        evals = [e for r in records[m] for e in r["evaluations"]]
        offspring = [e for e in evals if e.get("origin") == "offspring"]
        spearman = [x["spearman"] for r in records[m] for x in r.get("surrogate_log", [])
                    if x["spearman"] is not None]
        out["methods"][m] = {
            "seeds": [r["seed"] for r in records[m]],
            "final_best": {"median": med(finals), "min": min(finals), "max": max(finals), "per_seed": finals},
            "evals_to_random_best": {"median": med(reach), "reached": sum(math.isfinite(x) for x in reach),
                                     "per_seed": reach},
            "curve_median": [med(col) for col in zip(*cs)],
            "curve_min": [min(col) for col in zip(*cs)],
            "curve_max": [max(col) for col in zip(*cs)],
            "failed": sum(e["status"] != "ok" for e in evals),
            "duplicates": sum(e["duplicate"] for e in evals),
            "mean_train_seconds": statistics.fmean(e["train_seconds"] for e in evals) if evals else math.nan,
            "offspring_mae_median": {
                "screened": med([e["fitness"] for e in offspring if e["screened"] and e["fitness"] is not None]),
                "unscreened": med([e["fitness"] for e in offspring
                                   if not e["screened"] and e["fitness"] is not None])},
            "surrogate_spearman_median": med(spearman),
        }
    return out


def fmt(x: float, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else \
        "not reached" if math.isinf(x) else f"{x:.{digits}f}"


def plot(fig: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(8, 5))
    x = range(1, fig["evaluations"] + 1)
    tops = [v for m in fig["methods"].values() for v in m["curve_max"] if math.isfinite(v)]
    bottoms = [v for m in fig["methods"].values() for v in m["curve_min"] if math.isfinite(v)]
    for name, m in fig["methods"].items():
        nan = [v if math.isfinite(v) else math.nan for v in m["curve_median"]]
        line, = ax.plot(x, nan, label=f"{name} (median of {len(m['seeds'])})")
        ax.fill_between(x, [v if math.isfinite(v) else math.nan for v in m["curve_min"]],
                        [v if math.isfinite(v) else math.nan for v in m["curve_max"]], color=line.get_color(),
                        alpha=0.12, linewidth=0)
    if math.isfinite(fig["random_final_best_median"]):
        ax.axhline(fig["random_final_best_median"], color="grey", linestyle="--", linewidth=1,
                   label="random search's final best (median)")
    if tops:  # the early, much worse values would flatten the rest
        lo, hi = min(bottoms), sorted(tops)[int(0.9 * (len(tops) - 1))]
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best validation MAE so far (eV/atom)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=120)
    plt.close(f)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 seeds, 12 evaluations, tiny data")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 5; --quick 2)")
    p.add_argument("--evaluations", type=int, default=None, help="per run (default 60; --quick 12)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"among: {', '.join(METHODS)} (default all)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                   help="an extra GA+surrogate method with these search settings (surrogate=false for none)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--data-dir", default=None, help="holding elemnet.h5 (default the repository's data/)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="for the PNG and the tables")
    p.add_argument("--cache", default=None, help="run files (default OUT/search_efficiency_cache)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a single run, in its own process
    args = p.parse_args(argv)
    if args.one:
        for job in json.loads(args.one):
            run_one(job)
        return {}

    seeds = args.seeds or (2 if args.quick else 5)
    evaluations = args.evaluations or (12 if args.quick else 60)
    settings = {"data_dir": data_dir(args.data_dir), "train_size": 1000 if args.quick else 4000,
                "val_size": 500 if args.quick else 2000, "epochs": 3 if args.quick else 6,
                "space": {"depth": [1, 4] if args.quick else [1, 8], "width": [16, 32, 64, 128, 256]}}
    out = Path(args.out)
    fingerprint = hashlib.sha1(json.dumps({k: v for k, v in settings.items() if k != "data_dir"},
                                          sort_keys=True).encode()).hexdigest()[:10]
    cache = Path(args.cache or out / "search_efficiency_cache") / fingerprint
    cache.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    specs = {m: METHODS[m] for m in args.methods}
    specs.update(parse_variant(v) for v in args.variant)
    dh = deephyper_status() if "DeepHyper CBO" in specs else "not requested"
    if dh and "DeepHyper CBO" in specs:
        del specs["DeepHyper CBO"]
    ga_settings = search_settings({"overrides": {}}, evaluations)
    log(f"search efficiency: ElemNet, {settings['train_size']:,} train / {settings['val_size']:,} validation rows, "
        f"{settings['epochs']} epochs per candidate (no time budget), 1 torch thread; space {settings['space']}; "
        f"{seeds} seeds x {evaluations} evaluations; {args.jobs} runs at a time\n  {code_version()}\n"
        f"  GA settings: population {ga_settings.population}, screen_factor {ga_settings.screen_factor}, "
        f"explore_fraction {ga_settings.explore_fraction}, surrogate_min_results "
        f"{ga_settings.surrogate_min_results}, refit_every {ga_settings.surrogate_refit_every}\n"
        f"  cache: {cache}")
    log(f"DeepHyper CBO: {'runs' if not dh else 'NOT RUN: ' + dh}")
    def run_file(method: str, spec: dict, seed: int) -> str:
        """Named by the method and everything that decides its runs (for the GA: its resolved search settings)."""
        ga = dataclasses.asdict(search_settings(spec, evaluations)) if spec["kind"] == "ga" else None
        digest = hashlib.sha1(json.dumps([spec, ga], sort_keys=True).encode()).hexdigest()[:6]
        return str(cache / f"{slug(method)}_s{seed}_{digest}.json")

    jobs = [{"method": m, "spec": s, "seed": seed, "evaluations": evaluations, "settings": settings,
             "file": run_file(m, s, seed)} for seed in range(seeds) for m, s in specs.items()]
    # the GA without surrogate after the others of its seed: its initial population is GA+surrogate's, trained once
    jobs.sort(key=lambda j: (j["seed"], j["spec"] == METHODS["GA"]))
    # --quick: one process per method (its seeds in turn), as starting a process costs as much as the runs
    batches = [[j for j in jobs if j["method"] == m] for m in specs] if args.quick else [[j] for j in jobs]
    t0 = time.perf_counter()
    failed = run_jobs(batches, args.jobs, log)
    for m, why in failed.items():
        log(f"{m}: a run FAILED: {why}")
        if m == "DeepHyper CBO":
            dh = f"failed at run time: {why}"
    log(f"all runs: {time.perf_counter() - t0:.0f} s\n")

    records: dict[str, list[dict]] = {}
    for job in jobs:
        f = Path(job["file"])
        r = json.loads(f.read_text()) if f.exists() else None
        if r and r.get("done"):
            records.setdefault(job["method"], []).append(r)
    fig = figures(records, evaluations)
    fig["deephyper"] = dh or "ran"
    ms = fig["methods"]
    rows = [[m, len(f["seeds"]), fmt(f["final_best"]["median"]), fmt(f["final_best"]["min"]),
             fmt(f["final_best"]["max"]), f["failed"], f["duplicates"], f"{f['mean_train_seconds']:.2f}"]
            for m, f in ms.items()]
    log(table(["method", "seeds", "final best MAE: median", "min", "max", "failed", "duplicates",
               "train s/eval"], rows, f"== Final best validation MAE (eV/atom) after {evaluations} evaluations =="))
    log()
    target = fig["random_final_best_median"]
    rows = [[m, fmt(f["evals_to_random_best"]["median"], 0), f"{f['evals_to_random_best']['reached']}/"
             f"{len(f['seeds'])}", " ".join(fmt(x, 0) if math.isfinite(x) else "-"
                                            for x in f["evals_to_random_best"]["per_seed"])]
            for m, f in ms.items()]
    log(table(["method", "evaluations: median", "seeds that reach it", "per seed"], rows,
              f"== Evaluations to reach random search's final best (median {fmt(target)}) =="))
    log()
    rows = [[m, fmt(f["offspring_mae_median"]["screened"]), fmt(f["offspring_mae_median"]["unscreened"]),
             fmt(f["surrogate_spearman_median"], 2)] for m, f in ms.items() if m.startswith("GA") or
            specs.get(m, {}).get("kind") == "ga"]
    if rows:
        log(table(["method", "screened offspring MAE (median)", "unscreened offspring MAE (median)",
                   "surrogate Spearman (median over refits)"], rows, "== Does screening pay? (GA offspring) =="))
        log()

    targets = {}
    if "GA+surrogate" in ms and "random" in ms:
        reach = ms["GA+surrogate"]["evals_to_random_best"]["median"]
        targets["reach_random_best_in_half"] = {"value": reach, "limit": evaluations / 2,
                                                "met": reach <= evaluations / 2}
        log(f"target 1: GA+surrogate reaches random search's final best within {evaluations // 2} evaluations "
            f"(median): {fmt(reach, 0)} -> {'MET' if reach <= evaluations / 2 else 'NOT MET'}")
    if "GA+surrogate" in ms and "Optuna TPE" in ms:
        ga, tpe = ms["GA+surrogate"]["final_best"]["median"], ms["Optuna TPE"]["final_best"]["median"]
        targets["at_least_as_good_as_tpe"] = {"value": ga, "limit": tpe, "met": ga <= tpe}
        log(f"target 2: GA+surrogate's final best (median) {fmt(ga)} <= Optuna TPE's {fmt(tpe)} -> "
            f"{'MET' if ga <= tpe else 'NOT MET'}")
    fig["targets"] = targets
    log(f"DeepHyper CBO: {'ran' if not dh else 'NOT RUN: ' + dh}")

    out.mkdir(parents=True, exist_ok=True)
    png = out / ("search_efficiency_quick.png" if args.quick else "search_efficiency.png")
    plot(fig, png, f"ElemNet, {settings['train_size']} rows, {settings['epochs']} epochs/candidate: "
                   f"median and min-max over seeds")
    (png.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print(f"\nwrote {png} and {png.with_suffix('.md')}")
    fig["png"] = str(png)
    return fig


if __name__ == "__main__":
    main()
