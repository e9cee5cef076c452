#!/usr/bin/env python
"""The seed papers' comparison, on our data, beside the published figures.

Yang et al., Comput. Mater. Sci. 151, 278 (2018), homogenization (contrast 50), test MAE % of C11:
3-D CNN 3.10, 2-point statistics + PCA 6.79, rule of mixtures 46.66.
Yang et al., Acta Mater. 166, 335 (2019), localization, test MASE %: contrast 10: CNN 3.07, MKS 10.86;
contrast 50: CNN 5.71, MKS 26.46.

Rows: homogenization (configs/homogenization.yaml), localization at contrast 10 and at contrast 50
(configs/localization.yaml). "CNN" is the network of a search run when one is given (--run-homogenization,
--run-localization10, --run-localization50 RUN_DIR: its network retrained by `menndl retrain` if there is one,
else its best network as the search left it), else the task's hand-designed baseline genome trained by
`menndl_py.commands.baseline.run_baselines` under --budget seconds (one process). The other baselines are fitted on the
same training data and scored on the same test data. "Rule of mixtures" is the better of Voigt and Reuss.
The script reports whether our figures keep the papers' ordering and whether the CNN is within 2× of the
published error; it does not assert.

    python benchmarks/paper_table.py --quick      # tiny volumes, 10 s of training each: under 2 minutes
    python benchmarks/paper_table.py               # the configs' data (5,600 volumes of 21³; 2 × 1,800 MVEs of
                                                   # 21³) and 300 s per network: about 25 minutes on 2 cores
    python benchmarks/paper_table.py --run-localization50 runs/localization
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, code_version  # noqa: E402 (puts this checkout first on sys.path)

PUBLISHED = {
    "homogenization": {"CNN": 3.10, "2-point statistics + PCA": 6.79, "rule of mixtures": 46.66},
    "localization10": {"CNN": 3.07, "MKS": 10.86},
    "localization50": {"CNN": 5.71, "MKS": 26.46},
}
QUICK = {
    "homogenization": {"size": 11, "train_volumes": 48, "val_volumes": 12, "test_volumes": 16},
    "localization": {"size": 13, "window": 11, "train_volumes": 16, "val_volumes": 4, "test_volumes": 4},
}


def row_config(row: str, args, scratch: Path):
    """The config of one row: the run's own when a run is given, else the task's config at the stated scale."""
    from menndl_py.cli import config_of_run, load_config

    run = getattr(args, f"run_{row}")
    if run:
        return config_of_run(run)
    task = "homogenization" if row == "homogenization" else "localization"
    settings = [f"training.time_budget={args.budget}", "training.epochs=1000", "cluster.threads_per_rank=1",
                f"cluster.candidate_timeout={2 * args.budget + 60:g}",
                f"task.data_dir={scratch / 'data' if args.quick else args.data_dir}"]
    if task == "localization":
        settings.append(f"task.options.contrast={row[len('localization'):]}")
    if args.quick:
        settings += [f"task.options.{k}={v}" for k, v in QUICK[task].items()]
        settings.append(f"run.directory={scratch / 'runs'}")
    return load_config(str(REPO / "configs" / f"{task}.yaml"), settings, f"paper-table-{row}")


def searched_network(cfg, task) -> dict:
    """Test figures of a run's network: retrained (`menndl retrain`, final/) if it was, else best/ as the search
    left it; for localization also the MASE of each test MVE."""
    from menndl_py.physics.mks import mase
    from menndl_py.rundir import RunDir
    from menndl_py.rundir.networks import load_network, read_record, score_on_test
    from menndl_py.tasks.microstructure import data as microstructure_data

    run = RunDir(cfg.run_dir)
    space = task.space().restricted(cfg.search.space)
    where = run.network_to_use()
    best = read_record(run.best)
    source = f"search {cfg.run_dir} (evaluation {best['id']}, {best['params']:,} parameters, " \
             f"{best['train_seconds']:.0f} s of training)"
    if where == run.final:
        final = read_record(where)
        test = {k[5:]: v for k, v in final.items() if k.startswith("test_")}
        source += f", retrained {final['train_seconds']:.0f} s ({final['epochs']} epochs)"
    else:
        test = run.read_run_json().get("best_test") or \
            score_on_test(task, where, space, cfg.training.eval_batch_size, print)
    out = {"source": source, "test": test[task.metric]}
    if task.name == "localization":
        _, model, _ = load_network(where, space)
        got = microstructure_data.read(task.data_path, "test", ("volumes", "strain"))
        per_mve = mase(task.predict_fields(model, got["volumes"]), got["strain"])
        out["test_mase_per_mve"] = [round(float(v), 3) for v in per_mve]
    return out


def figures(row: str, args, scratch: Path) -> dict:
    from menndl_py.commands.baseline import run_baselines
    from menndl_py.commands.common import ensure_data
    from menndl_py.tasks import make_task

    cfg = row_config(row, args, scratch)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    o = task.options
    scale = {"size": o.size, "volumes": {s: getattr(o, f"{s}_volumes") for s in ("train", "val", "test")},
             "contrast": o.contrast}
    if task.name == "localization":
        scale["window"] = o.window
    start = time.monotonic()
    if getattr(args, f"run_{row}"):
        ensure_data(task)
        cnn = searched_network(cfg, task)
        others = task.other_baselines(task.load("train"), {"test": task.load("test")})
    else:
        results = run_baselines(cfg)
        (name, row_cnn), = [(k, v) for k, v in results.items() if k in task.baseline_genomes()]
        cnn = {"source": f"{name}, {row_cnn.get('epochs')} epochs in {cfg.training.time_budget:g} s "
                         f"[{row_cnn['status']}]", "test": row_cnn.get(f"test_{task.metric}", float("nan"))}
        others = {k: v for k, v in results.items() if k not in task.baseline_genomes()}
    ours = {"CNN": cnn["test"]}
    if task.name == "homogenization":
        ours["2-point statistics + PCA"] = others["2-point statistics + PCA + polynomial ridge"]["test_mae_pct"]
        voigt, reuss = (others[f"rule of mixtures ({b})"]["test_mae_pct"] for b in ("Voigt", "Reuss"))
        ours["rule of mixtures"] = min(voigt, reuss)
        extra = {"voigt": voigt, "reuss": reuss}
    else:
        mks = others["MKS first-order localization"]
        ours["MKS"] = mks["test_mase"]
        extra = {"mks_" + k[5:]: v for k, v in mks.items() if k.startswith("test_mase_")}
    published = PUBLISHED[row]
    order = sorted(published, key=published.get)
    return {"ours": ours, "published": published, "scale": scale, "cnn": cnn, "extra": extra,
            "same_ordering": all(v == v for v in ours.values()) and sorted(ours, key=ours.get) == order,
            "cnn_within_2x": bool(ours["CNN"] <= 2 * published["CNN"]),
            "seconds": round(time.monotonic() - start, 1)}


def print_table(result: dict, unit: dict) -> None:
    for row, r in result.items():
        print(f"\n{row}: test {unit[row]} (%)   scale {json.dumps(r['scale'])}")
        print(f"  {'method':28s} {'published':>10s} {'ours':>10s}")
        for method, value in r["published"].items():
            print(f"  {method:28s} {value:10.2f} {r['ours'][method]:10.2f}")
        print(f"  CNN: {r['cnn']['source']}")
        if r["extra"]:
            print("  also: " + ", ".join(f"{k} {v:.2f}" for k, v in r["extra"].items()))
        if "test_mase_per_mve" in r["cnn"]:
            per = sorted(r["cnn"]["test_mase_per_mve"])
            print(f"  CNN MASE per test MVE: min {per[0]:.2f}, median {per[len(per) // 2]:.2f}, max {per[-1]:.2f} "
                  f"over {len(per)} MVEs")
        print(f"  same ordering as published: {r['same_ordering']}; CNN within 2x of published: "
              f"{r['cnn_within_2x']}  ({r['seconds']} s)")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny data and 10 s per network (under 2 minutes)")
    p.add_argument("--budget", type=float, help="training seconds of each hand-designed CNN (default 300; quick 10)")
    p.add_argument("--data-dir", default="data", help="where the data sets are (made if missing)")
    for row in PUBLISHED:
        p.add_argument(f"--run-{row}", metavar="RUN_DIR", help=f"take the {row} CNN from this search run")
    p.add_argument("--rows", nargs="+", choices=list(PUBLISHED), default=list(PUBLISHED))
    args = p.parse_args(argv)
    args.budget = args.budget or (10.0 if args.quick else 300.0)

    import torch

    torch.set_num_threads(1)
    print(code_version())
    result = {}
    with tempfile.TemporaryDirectory(prefix="paper-table-") as scratch:
        for row in args.rows:
            result[row] = figures(row, args, Path(scratch))
    print_table(result, {row: "MAE" if row == "homogenization" else "MASE" for row in result})
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
