"""Chaos: a real 5-rank search (mpirun, groups of 2, ElemNet) killed again and again, each time followed by
`menndl resume`. Kills are of two kinds: SIGKILL of the whole job (mpirun and every rank) and SIGKILL of one
worker rank (which the rest of the job must notice and end by itself). Each kill lands at a random moment
(setup, training, storing). At the end the budget is set to what is stored plus a few, and one last resume
finishes the run.

Prints, per kill and in total: rows stored; rows lost (seen in results.csv before a kill and missing after);
duplicated genome hashes and ids; how long each kill left the job running (for a single-rank kill: until mpirun
exited by itself; target < 60 s); crashed and lost statuses.

    python benchmarks/chaos.py [--quick] [--kills 20] [--rank-kills 5] [--seed 0] [--keep DIR]
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, code_version, table

VENV_BIN = Path(sys.executable).parent
MENNDL = str(VENV_BIN / "menndl")
HANG_LIMIT = 180.0  # seconds after a kill before the benchmark gives up waiting and counts a hang


def env() -> dict:
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1",
             OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=str(REPO))
    e.pop("CI", None)
    return e


def write_config(root: Path, data_dir: Path, evaluations: int) -> Path:
    cfg = {"run": {"name": "chaos", "directory": str(root / "runs")},
           "task": {"name": "elemnet", "data_dir": str(data_dir),
                    "options": {"train_size": 2000, "val_size": 500, "test_size": 500}},
           "search": {"population": 4, "max_evaluations": evaluations, "surrogate_min_results": 4,
                      "screen_factor": 4, "seed": 7, "space": {"depth": [1, 3], "width": [16, 32, 64]}},
           "cluster": {"ranks_per_candidate": 2, "candidate_timeout": 60, "stop_grace": 10},
           "training": {"epochs": 2}}
    path = root / "chaos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def stored(run_dir: Path) -> list[dict]:
    path = run_dir / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        text = fh.read()
    return list(csv.DictReader(text[: text.rfind("\n") + 1].splitlines()))


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def world_rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(item.split(b"=")[1])
    return None


def launch(command: list[str], cwd: Path, log) -> subprocess.Popen:
    return subprocess.Popen(["mpirun", "--oversubscribe", "-np", "5", *command], cwd=cwd, env=env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_tree(job: subprocess.Popen) -> None:
    for pid in descendants(job.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(job: subprocess.Popen, limit: float) -> float | None:
    """Seconds until mpirun and every process under it have exited, or None past `limit` (then killed)."""
    start = time.monotonic()
    tree = descendants(job.pid)
    while time.monotonic() - start < limit:
        job.poll()
        if job.returncode is not None and not any(Path(f"/proc/{p}").exists() and _alive(p) for p in tree):
            return time.monotonic() - start
        time.sleep(0.1)
    kill_tree(job)
    job.wait()
    return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_data(root: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from menndl_py.tasks.elemnet.data import make_dataset

    data_dir = root / "data"
    data_dir.mkdir()
    make_dataset(data_dir / "elemnet.h5", limit=3000)
    return data_dir


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 whole-job kills and 1 single-rank kill")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of the whole job")
    p.add_argument("--rank-kills", type=int, default=5, help="SIGKILLs of one worker rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="work in this directory and keep it (default: a temporary one, removed)")
    args = p.parse_args(argv)
    if args.quick:
        args.kills, args.rank_kills = 4, 1
    print(code_version())
    rng = random.Random(args.seed)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="menndl-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / "runs" / "chaos"
    config = write_config(root, make_data(root), evaluations=100_000)
    kinds = ["job"] * args.kills + ["rank"] * args.rank_kills
    rng.shuffle(kinds)
    seen: dict[str, dict] = {}  # id -> row, every row ever seen before a kill
    lines, hangs, lost_ids = [], [], set()
    with open(root / "chaos.log", "ab") as log:
        for n, kind in enumerate(kinds, 1):
            command = [MENNDL, "resume", str(run_dir)] if run_dir.joinpath("config.yaml").exists() else \
                [MENNDL, "run", str(config)]
            rows_before = len(stored(run_dir))
            job = launch([*command, "--no-progress"], root, log)
            delay = rng.uniform(2.0, 30.0)
            time.sleep(delay)
            if job.poll() is not None:
                lines.append([n, kind, f"{delay:.1f}", "-", f"exited {job.returncode} before the kill", "-", "-"])
                continue
            for row in stored(run_dir):
                seen[row["id"]] = row
            if kind == "job":
                kill_tree(job)
                victim = "all"
            else:
                ranks = {world_rank(pid): pid for pid in descendants(job.pid)}
                workers = sorted(r for r in ranks if r not in (None, 0))
                rank = rng.choice(workers) if workers else None
                victim = f"rank {rank}" if rank is not None else "none found"
                if rank is not None:
                    os.kill(ranks[rank], signal.SIGKILL)
            took = wait_gone(job, HANG_LIMIT)
            after = stored(run_dir)
            ids_after = {r["id"] for r in after}
            lost_now = set(seen) - ids_after
            lost_ids |= lost_now
            hangs.append((kind, took if took is not None else float("inf")))
            lines.append([n, kind, f"{delay:.1f}", victim,
                          f"{took:.1f} s (exit {job.returncode})" if took is not None else f"> {HANG_LIMIT:.0f} s",
                          len(after) - rows_before, len(lost_now)])
        # the last launch: a budget of what is stored plus 4, run to the end
        rows_now = len(stored(run_dir))
        final = subprocess.run(["mpirun", "--oversubscribe", "-np", "5", MENNDL, "run", str(config), "--no-progress",
                                "--set", f"search.max_evaluations={rows_now + 4}"], cwd=root, env=env(),
                               stdout=log, stderr=subprocess.STDOUT, timeout=900)
    after = stored(run_dir)
    ids = [r["id"] for r in after]
    hashes = [r["genome_hash"] for r in after]
    statuses = {s: sum(r["status"] == s for r in after) for s in sorted({r["status"] for r in after})}
    lost_ids |= set(seen) - set(ids)
    changed = [i for i, r in seen.items() if i in set(ids) and next(a for a in after if a["id"] == i) != r]
    print(table(["kill", "kind", "at (s)", "victim", "job gone after", "new rows", "lost"], lines,
                title=f"\n{len(kinds)} kills of a 5-rank job (groups of 2), each followed by a resume"))
    longest = max((h for _, h in hangs), default=0.0)
    longest_rank = max((h for k, h in hangs if k == "rank"), default=0.0)
    print(f"\nfinal launch: exit {final.returncode}; rows {len(after)}; statuses {statuses}")
    print(f"lost rows (seen before a kill, missing after): {len(lost_ids)} (target 0)")
    print(f"rows changed after being stored: {len(changed)}")
    print(f"duplicated genome hashes: {len(hashes) - len(set(hashes))}; duplicated ids: {len(ids) - len(set(ids))} "
          f"(target 0 and 0)")
    print(f"longest time a kill left the job running: {longest:.1f} s (single-rank kills: {longest_rank:.1f} s; "
          f"target < 60 s); hangs past {HANG_LIMIT:.0f} s: {sum(h == float('inf') for _, h in hangs)}")
    print(f"work directory: {root} (log: {root / 'chaos.log'})")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
