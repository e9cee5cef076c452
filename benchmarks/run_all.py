#!/usr/bin/env python
"""Run the benchmarks and write their figures to RESULTS.md, with the exact commands and the machine's facts.

Each benchmark runs as its own process (`python benchmarks/<name>.py [--quick] --out <dir>` where it takes --out);
its printed output is kept in `<out>/<name>.txt` with the command, the time it took and when it ran, so that a
later call with `--only` re-runs some and keeps the others. RESULTS.md is then assembled from every kept output and
links the PNG plots found in `<out>`.

    python benchmarks/run_all.py                      # everything, full size (about 2 hours on 2 cores)
    python benchmarks/run_all.py --only scale,search_efficiency
    python benchmarks/run_all.py --quick --out /tmp/b # a smoke run of everything (minutes)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, code_version  # noqa: E402 (puts this checkout first on sys.path)

HERE = Path(__file__).resolve().parent
# name: (what it measures, takes --out)
BENCHMARKS = {
    "search_efficiency": ("menndl (GA, SVM surrogate, asynchronous promotion) and its ablations against random "
                          "search, random + ASHA, Optuna TPE + Hyperband and DeepHyper CBO + successive halving on "
                          "the same ElemNet work: best-so-far validation MAE against training CPU-seconds", True),
    "scale": ("a discrete-event simulation of the real master objects up to 18,000 worker groups, and a real "
              "mpirun sweep from 3 to 65 ranks", True),
    "master_overhead": ("the master's time per result (store, tell, ask, checkpoint) and its growth with history",
                        False),
    "utilization": ("worker utilization of the asynchronous loop against a generational one", False),
    "trainer_overhead": ("menndl's Trainer against a plain PyTorch training loop, and in fp32 against bf16", False),
    "precision": ("the quick start's hand-made MLP trained in fp32 and in bf16 for the same epochs: MAEs and time",
                  False),
    "predict_throughput": ("`menndl predict` against a plain PyTorch inference loop", False),
    "stem_simulator": ("STEM image simulator speed", False),
    "ebsd_simulator": ("EBSD pattern simulator speed at 60 and 128 px, and its noise and contrast against the "
                       "experimental nickel patterns", False),
    "crystal_graph_data": ("crystal-graph data maker speed: EMT-labelled alloys per second per core, relaxed and "
                           "unrelaxed", False),
    "stem_detection": ("a STEM network's defect F1, argmax against calibrated detection thresholds", False),
    "stem_ceiling": ("the defect F1 an ideal observer reaches on the STEM images against Fourier filtering's", False),
    "localization_ceiling": ("what the 11³ window leaves out on our MVEs: linear models and the hand-designed CNN on "
                             "the 11³ window against the whole 21³ MVE, per microstructure family", False),
    "elasticity_solver": ("FFT elasticity solver: seconds per 51³ sample", False),
    "paper_table": ("the homogenization and localization papers' comparison, on our data", False),
}


def machine_facts() -> dict:
    import torch

    facts = {"host": platform.node(), "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
             "python": platform.python_version(), "torch": torch.__version__, "os": platform.platform(),
             "cuda": torch.cuda.is_available()}
    try:
        model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        facts["cpu"] = model[0] if model else facts["cpu"]
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        facts["memory_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return facts


def run_one(name: str, quick: bool, out: Path, timeout: float) -> dict:
    script = HERE / f"{name}.py"
    command = [sys.executable, str(script.relative_to(REPO))] + (["--quick"] if quick else [])
    if BENCHMARKS[name][1]:
        command += ["--out", str(out)]
    print(f"== {name}: {' '.join(command)}", flush=True)
    start, when = time.monotonic(), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        text, status = proc.stdout + (f"\n[stderr]\n{proc.stderr[-3000:]}" if proc.returncode else ""), proc.returncode
    except subprocess.TimeoutExpired as exc:
        text, status = f"{exc.stdout or ''}\n[timed out after {timeout:g} s]", -1
    record = {"name": name, "command": " ".join(command[1:]).replace(str(out), "<out>"), "quick": quick,
              "seconds": round(time.monotonic() - start, 1), "when": when, "load_before": round(load, 2),
              "status": status, "output": text.strip()}
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(text.strip() + f"\n== {name}: exit {status} in {record['seconds']:.0f} s\n", flush=True)
    return record


def write_results(out: Path, target: Path) -> None:
    facts = machine_facts()
    lines = ["# Benchmark results", "",
             f"Written by `python benchmarks/run_all.py` on {facts['host']}: {facts['cpus']} × {facts['cpu']}, "
             f"{facts.get('memory_gib', '?')} GiB, CUDA {'yes' if facts['cuda'] else 'no'}; Python {facts['python']}, "
             f"torch {facts['torch']}; {facts['os']}. {code_version()}.", "",
             "Each section is one benchmark's own printed output, with the command that reproduces it (run from the "
             "repository root with the project's Python). Wall-clock figures on a shared machine move with its load "
             "(the load average before each run is given); the ratios are measured within one command.", ""]
    for name, (what, _) in BENCHMARKS.items():
        path = out / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        lines += [f"## {name}", "", what + ".", "",
                  f"`python {r['command']}` ({'quick' if r['quick'] else 'full'} run, {r['when']}, "
                  f"{r['seconds']:.0f} s, load average {r['load_before']} before, exit {r['status']}"
                  + (f"; {r['note']}" if r.get("note") else "") + ")", "",
                  "```", r["output"], "```", ""]
        for png in sorted(out.glob(f"{name}*.png")):
            rel = os.path.relpath(png, target.parent)
            lines += [f"![{png.stem}]({rel})", ""]
    target.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's short mode")
    p.add_argument("--only", help="comma-separated names (default: all): " + ", ".join(BENCHMARKS))
    p.add_argument("--out", default=str(HERE / "results"), help="where outputs and plots go")
    p.add_argument("--results", help="the markdown file to write (default: benchmarks/RESULTS.md, or "
                                     "<out>/RESULTS.md with --quick)")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per benchmark")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else [n for n in BENCHMARKS if (HERE / f"{n}.py").exists()]
    unknown = [n for n in names if n not in BENCHMARKS or not (HERE / f"{n}.py").exists()]
    if unknown:
        print(f"run_all: unknown benchmark(s) {', '.join(unknown)} (expected among: {', '.join(BENCHMARKS)})",
              file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    failed = [n for n in names if run_one(n, args.quick, out, args.timeout)["status"] != 0]
    target = Path(args.results) if args.results else (out / "RESULTS.md" if args.quick else HERE / "RESULTS.md")
    write_results(out, target)
    print(f"run_all: wrote {target}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
