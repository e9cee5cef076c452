"""Bad input, as a demanding user gives it: every case runs the real `menndl` command in a subprocess (with a time-out)
in a temporary directory of its own, after making what it needs cheaply, and the table says what came back: the exit
status, the line printed on stderr, and whether anything on disk changed. The target for each: exit status 2, one
line `menndl: error: ...` naming the field or file and what is expected, nothing changed on disk.

    python benchmarks/bad_inputs.py [--only WORD] [--timeout SECONDS]

It prints; it asserts nothing (the important cases are tests under tests/).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO, code_version

MENNDL = str(Path(sys.executable).with_name("menndl"))

SYNTHETIC = "run: {name: job, directory: runs}\ntask: {name: synthetic}\nsearch: {population: 4, max_evaluations: 2}\n"
ELEMNET = ("run: {name: job, directory: runs}\ntask: {name: elemnet, data_dir: data, options: {train_size: 20, "
           "val_size: 10, test_size: 10}}\nsearch: {population: 4, max_evaluations: 2}\ntraining: {epochs: 1}\n")
STEM_OPTIONS = {"train_images": 2, "val_images": 2, "test_images": 2, "tile": 64, "simulator": {"image_size": 96}}


@dataclass
class Case:
    input: str  # what the table shows
    args: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the directory first ('x/': a folder)
    needs: tuple[str, ...] = ()  # prepared things copied in first (see Prepared)
    links: dict[str, str] = field(default_factory=dict)  # symbolic links made first: name -> target
    expect: int = 2


def synthetic(**sections) -> str:
    """The synthetic config with `sections` (YAML text per section) replacing or adding sections."""
    lines = {line.split(":")[0]: line for line in SYNTHETIC.splitlines()}
    lines.update({k: f"{k}: {v}" for k, v in sections.items()})
    return "\n".join(lines.values()) + "\n"


def cases() -> list[Case]:
    c = Case
    yaml_name = "c.yaml"
    return [
        # -- the config file itself
        c("`run missing.yaml` (no such file)", ["run", "missing.yaml"]),
        c("`run .` (a directory as config)", ["run", "."]),
        c("`run c.yaml`, a binary file", ["run", yaml_name], {yaml_name: b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"}),
        c("`run c.yaml`, an empty file", ["run", yaml_name], {yaml_name: ""}),
        c("`run c.yaml`, only a comment", ["run", yaml_name], {yaml_name: "# to do\n"}),
        c("`run c.yaml`, a YAML list", ["run", yaml_name], {yaml_name: "- task\n- search\n"}),
        c("`run c.yaml`, malformed YAML", ["run", yaml_name], {yaml_name: "search: [unclosed\n"}),
        c("malformed YAML with `--name x`", ["run", yaml_name, "--name", "x"], {yaml_name: "search: [unclosed\n"}),
        c("malformed YAML with `--set search.seed=1`", ["run", yaml_name, "--set", "search.seed=1"],
          {yaml_name: "search: [unclosed\n"}),
        c("binary config with `--name x`", ["run", yaml_name, "--name", "x"], {yaml_name: b"task:\n\xff\xfe"}),
        c("a config without task.name", ["run", yaml_name], {yaml_name: "search: {population: 4}\n"}),
        # -- --set
        c("`--set 'search.population=['`", ["run", yaml_name, "--set", "search.population=["], {yaml_name: SYNTHETIC}),
        c("`--set search.populaton=4` (unknown key)", ["run", yaml_name, "--set", "search.populaton=4"],
          {yaml_name: SYNTHETIC}),
        c("`--set search` (no value)", ["run", yaml_name, "--set", "search"], {yaml_name: SYNTHETIC}),
        c("`--set search.population.x=4`", ["run", yaml_name, "--set", "search.population.x=4"],
          {yaml_name: SYNTHETIC}),
        c("`--set cluster.ranks_per_candidate=0`", ["run", yaml_name, "--set", "cluster.ranks_per_candidate=0"],
          {yaml_name: SYNTHETIC}),
        # -- run names
        c("`--name ..` (config.yaml in the current directory)", ["run", "config.yaml", "--name", ".."],
          {"config.yaml": SYNTHETIC}),
        c("`--name <tmp>/elsewhere` (an absolute path)", ["run", yaml_name, "--name", "{root}/elsewhere"],
          {yaml_name: SYNTHETIC}),
        c("`--name ''`", ["run", yaml_name, "--name", ""], {yaml_name: SYNTHETIC}),
        c("`--set 'run.name=\"a\\0b\"'` (a NUL)", ["run", yaml_name, "--set", 'run.name="a\\0b"'],
          {yaml_name: SYNTHETIC}),
        c("`--name` of 300 characters", ["run", yaml_name, "--name", "x" * 300], {yaml_name: SYNTHETIC}),
        c("`run.name: ../escape` in the YAML", ["run", yaml_name], {yaml_name: synthetic(run="{name: ../escape}")}),
        # -- tasks and values
        c("unknown task (`task.name: alchemy`)", ["run", yaml_name], {yaml_name: synthetic(task="{name: alchemy}")}),
        c("wrong type (`search.population: ten`)", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: ten, max_evaluations: 2}")}),
        c("wrong type (`search.surrogate: 'yes'`)", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, surrogate: 'yes'}")}),
        c("a section that is no mapping (`training: 12`)", ["run", yaml_name], {yaml_name: synthetic(training="12")}),
        c("negative size (`training.epochs: -3`)", ["run", yaml_name], {yaml_name: synthetic(training="{epochs: -3}")}),
        c("negative size (`task.options.train_size: -5`)", ["run", yaml_name],
          {yaml_name: ELEMNET.replace("train_size: 20", "train_size: -5")}),
        c("unknown task option", ["run", yaml_name], {yaml_name: ELEMNET.replace("train_size: 20", "trian_size: 20")}),
        c("`search.space.depth: [50000000, 50000000]`", ["run", yaml_name],
          {yaml_name: ELEMNET.replace("max_evaluations: 2", "max_evaluations: 2, space: {depth: [%d, %d]}"
                                      % (50_000_000, 50_000_000))}),
        c("`search.space.width: [16, -5]`", ["run", yaml_name],
          {yaml_name: ELEMNET.replace("max_evaluations: 2", "max_evaluations: 2, space: {width: [16, -5]}")}),
        c("`search.space.widht: [16]` (unknown gene)", ["run", yaml_name],
          {yaml_name: ELEMNET.replace("max_evaluations: 2", "max_evaluations: 2, space: {widht: [16]}")}),
        c("`search.population: 1000000000000`", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 1000000000000, max_evaluations: 2}")}),
        c("`search.screen_factor: 1000000000000`", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, screen_factor: 1000000000000}")}),
        c("`search.max_minutes: .inf`", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: null, max_minutes: .inf}")}),
        c("`cluster.candidate_timeout: .inf`", ["run", yaml_name],
          {yaml_name: synthetic(cluster="{candidate_timeout: .inf}")}),
        c("`search.crossover_rate: .nan`", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, crossover_rate: .nan}")}),
        c("`training.eval_batch_size: 1000000000000`", ["run", yaml_name],
          {yaml_name: synthetic(training="{eval_batch_size: 1000000000000}")}),
        c("no end (`max_evaluations: null`, no max_minutes)", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: null}")}),
        c("`search.tournament_size: 8` with population 4", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, tournament_size: 8}")}),
        c("`search.seed_genomes: [missing.json]`", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, seed_genomes: [missing.json]}")}),
        c("`search.seed_genomes: 5`", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, seed_genomes: 5}")}),
        # -- data
        c("data directory under a file (`data_dir: c.yaml/data`)", ["run", yaml_name],
          {yaml_name: ELEMNET.replace("data_dir: data", "data_dir: c.yaml/data")}),
        c("a corrupt data file (`data/elemnet.h5` of garbage)", ["run", yaml_name],
          {yaml_name: ELEMNET, "data/elemnet.h5": b"\x89HDF\r\n\x1a\n but then nothing sensible" * 10}),
        c("`data/elemnet.h5` made with max_abs_enthalpy 3", ["run", yaml_name], {yaml_name: ELEMNET},
          needs=("elemnet_cut3",)),
        c("`data make alchemy`", ["data", "make", "alchemy"]),
        c("`data make elemnet --data-dir c.yaml` (a file)", ["data", "make", "elemnet", "--data-dir", yaml_name],
          {yaml_name: "task: {name: elemnet}\n"}),
        c("`data make elemnet --set x=1` (no --config)", ["data", "make", "elemnet", "--set", "x=1"]),
        c("`data make localization` with `--set task.options.size=100000`",
          ["data", "make", "localization", "--config", yaml_name, "--set", "task.options.size=100000"],
          {yaml_name: "task: {name: localization}\n"}),
        # -- run directories
        c("`resume runs/none` (no such run)", ["resume", "runs/none"]),
        c("`resume` of a run whose config.yaml is empty", ["resume", "runs/x"], {"runs/x/config.yaml": ""}),
        c("`resume` of a run whose config.yaml is a list", ["resume", "runs/x"], {"runs/x/config.yaml": "- 1\n"}),
        c("`run` of another config on a finished run directory", ["run", yaml_name],
          {yaml_name: synthetic(search="{population: 4, max_evaluations: 2, seed: 9}")}, needs=("finished_run",)),
        c("`report runs/none`", ["report", "runs/none"]),
        c("`retrain runs/none`", ["retrain", "runs/none"]),
        c("`retrain RUN --budget inf`", ["retrain", "runs/job", "--budget", "inf"], needs=("finished_run",)),
        c("`baseline alchemy`", ["baseline", "alchemy"]),
        # -- predict
        c("`predict --output RUN/results.hdf5`", ["predict", "runs/r", "one.png", "--output", "runs/r/results.hdf5"],
          needs=("predict_run",)),
        c("`predict --output RUN/results.hdf5 --overwrite`",
          ["predict", "runs/r", "one.png", "--output", "runs/r/results.hdf5", "--overwrite"], needs=("predict_run",)),
        c("`predict --output` a dangling symbolic link", ["predict", "runs/r", "one.png", "--output", "out.h5"],
          needs=("predict_run",), links={"out.h5": "victim/new.h5"}),
        c("`predict --output` a link to a file, `--overwrite`",
          ["predict", "runs/r", "one.png", "--output", "out.h5", "--overwrite"], {"victim.h5": "precious"},
          needs=("predict_run",), links={"out.h5": "victim.h5"}),
        c("`predict --output p.h5` where p.csv exists", ["predict", "runs/r", "one.png", "--output", "p.h5"],
          {"p.csv": "mine\n"}, needs=("predict_run",)),
        c("`predict --output out.txt`", ["predict", "runs/r", "one.png", "--output", "out.txt"],
          needs=("predict_run",)),
        c("`predict --output` an existing directory", ["predict", "runs/r", "one.png", "--output", "d.h5",
                                                        "--overwrite"], {"d.h5/keep": "x"}, needs=("predict_run",)),
        c("`predict` of an empty folder (skipped, exit 1 by design)",
          ["predict", "runs/r", "empty", "--output", "o.h5", "--no-progress"], {"empty/": ""}, needs=("predict_run",),
          expect=1),
        c("`predict --batch-size 0`", ["predict", "runs/r", "one.png", "--output", "o.h5", "--batch-size", "0"],
          needs=("predict_run",)),
        c("`predict` of a run without a network", ["predict", "runs/empty", "one.png", "--output", "o.h5"],
          {"runs/empty/": ""}, needs=("predict_run",)),
        c("`predict` of a missing image (skipped, exit 1 by design)",
          ["predict", "runs/r", "missing.png", "--output", "o.h5", "--no-progress"], needs=("predict_run",), expect=1),
    ] + file_task_cases()


def table(rows: list[list], header: str = "x1,x2,y,split") -> str:
    return header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows)


GOOD_ROWS = [[i % 7, (i * 3) % 5, i % 2, ("train", "train", "train", "val", "test")[i % 5]] for i in range(40)]


def file_task(name: str, **options) -> str:
    """A config of file task `name` with `options` (JSON is YAML), two evaluations."""
    return (f"run: {{name: job, directory: runs}}\ntask: {{name: {name}, options: {json.dumps(options)}}}\n"
            f"search: {{population: 4, max_evaluations: 2}}\ntraining: {{epochs: 1}}\n")


def npz(**arrays) -> bytes:
    import io

    import numpy as np

    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def png(shape: tuple, corrupt: bool = False) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()[:60] if corrupt else out.getvalue()


def file_task_cases() -> list[Case]:
    """Bad data in the user's files of the tabular, composition, images and segmentation tasks."""
    import numpy as np

    c, cfg = Case, "c.yaml"
    tab = dict(path="t.csv", target="y", split="split")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 8, 8)).astype(np.float32)
    masks = rng.integers(0, 2, (30, 8, 8)).astype(np.uint8)
    nan_images = images.copy()
    nan_images[4, 2, 2] = np.nan
    bad_masks = masks.copy()
    bad_masks[3, 1, 1] = 7
    rows = GOOD_ROWS
    return [
        c("tabular: the file is missing", ["run", cfg], {cfg: file_task("tabular", **dict(tab, path="absent.csv"))}),
        c("tabular: no such target column", ["run", cfg], {cfg: file_task("tabular", **dict(tab, target="z")),
                                                          "t.csv": table(rows)}),
        c("tabular: no such feature column", ["run", cfg], {cfg: file_task("tabular", **tab, features=["x1", "x9"]),
                                                           "t.csv": table(rows)}),
        c("tabular: a non-numeric feature", ["run", cfg], {cfg: file_task("tabular", **tab, features=["x1", "x2"]),
                                                          "t.csv": table([["a"] + r[1:] for r in rows])}),
        c("tabular: NaN in a feature", ["run", cfg], {cfg: file_task("tabular", **tab),
                                                     "t.csv": table([r if i != 6 else ["nan"] + r[1:]
                                                                     for i, r in enumerate(rows)])}),
        c("tabular: inf in the target", ["run", cfg], {cfg: file_task("tabular", **tab),
                                                      "t.csv": table([r[:2] + ["inf"] + r[3:] if i == 9 else r
                                                                      for i, r in enumerate(rows)])}),
        c("tabular: a classification target of one class", ["run", cfg],
          {cfg: file_task("tabular", **tab, kind="classification"),
           "t.csv": table([r[:2] + [1] + r[3:] for r in rows])}),
        c("tabular: split values other than train/val/test", ["run", cfg],
          {cfg: file_task("tabular", **tab), "t.csv": table([r[:3] + ["holdout" if r[3] == "test" else r[3]]
                                                             for r in rows])}),
        c("tabular: fewer rows than ranks_per_candidate x 2", ["run", cfg, "--set", "cluster.ranks_per_candidate=8"],
          {cfg: file_task("tabular", **tab), "t.csv": table(rows)}),
        c("tabular: a corrupt Parquet file", ["run", cfg], {cfg: file_task("tabular", **dict(tab, path="t.parquet")),
                                                           "t.parquet": b"PAR1 not really"}),
        c("composition: a formula that cannot be parsed", ["run", cfg],
          {cfg: file_task("composition", **tab), "t.csv": table([[f, r[2], r[3]] for f, r in
                                                                 zip(["NaCl", "Fe2(O3"] + ["SiO2"] * 38, rows)],
                                                                "formula,y,split")}),
        c("composition: no formula column", ["run", cfg],
          {cfg: file_task("composition", **tab), "t.csv": table([[r[0], r[2], r[3]] for r in rows], "x1,y,split")}),
        c("images: NaN in an image", ["run", cfg], {cfg: file_task("images", path="d.npz", labels_path="l.csv"),
                                                   "d.npz": npz(images=nan_images),
                                                   "l.csv": table([[i % 2] for i in range(30)], "label")}),
        c("images: 20 labels for 30 images", ["run", cfg],
          {cfg: file_task("images", path="d.npz", labels_path="l.csv"), "d.npz": npz(images=images),
           "l.csv": table([[i % 2] for i in range(20)], "label")}),
        c("images: a corrupt PNG in the folder", ["run", cfg],
          {cfg: file_task("images", path="f", labels_path="l.csv"), "l.csv": table([[i % 2] for i in range(12)],
                                                                                   "label"),
           **{f"f/{i:02d}.png": png((8, 8), corrupt=i == 5) for i in range(12)}}),
        c("images: images of different shapes in the folder", ["run", cfg],
          {cfg: file_task("images", path="f", labels_path="l.csv"), "l.csv": table([[i % 2] for i in range(12)],
                                                                                   "label"),
           **{f"f/{i:02d}.png": png((8, 8) if i != 3 else (8, 9)) for i in range(12)}}),
        c("images: the labels file is missing", ["run", cfg],
          {cfg: file_task("images", path="d.npz", labels_path="absent.csv"), "d.npz": npz(images=images)}),
        c("segmentation: masks of another shape than their images", ["run", cfg],
          {cfg: file_task("segmentation", path="d.npz"), "d.npz": npz(images=images, masks=masks[:, :4])}),
        c("segmentation: a mask value outside the classes", ["run", cfg],
          {cfg: file_task("segmentation", path="d.npz", classes=2), "d.npz": npz(images=images, masks=bad_masks)}),
        c("segmentation: masks that are not whole numbers", ["run", cfg],
          {cfg: file_task("segmentation", path="d.npz"), "d.npz": npz(images=images, masks=masks * 0.5)}),
        c("segmentation: no `masks` array in the .npz", ["run", cfg],
          {cfg: file_task("segmentation", path="d.npz"), "d.npz": npz(images=images)}),
    ]


class Prepared:
    """What cases need, made once in `cache` and copied into each case's directory."""

    def __init__(self, cache: Path, env: dict):
        self.cache, self.env, self.made = cache, env, {}

    def copy_into(self, name: str, root: Path) -> None:
        if name not in self.made:
            self.made[name] = getattr(self, f"_{name}")(self.cache / name)
        shutil.copytree(self.made[name], root, dirs_exist_ok=True, symlinks=True)

    def _elemnet_cut3(self, where: Path) -> Path:
        from menndl_py.tasks.elemnet.data import make_dataset

        make_dataset(where / "data" / "elemnet.h5", max_abs_enthalpy=3.0, limit=200)
        return where

    def _finished_run(self, where: Path) -> Path:
        where.mkdir(parents=True)
        (where / "first.yaml").write_text(SYNTHETIC)
        subprocess.run([MENNDL, "run", "first.yaml", "--no-progress"], cwd=where, env=self.env, capture_output=True,
                       timeout=300, check=True)
        (where / "first.yaml").unlink()
        return where

    def _predict_run(self, where: Path) -> Path:
        """A stem_defects run directory as a search leaves it (config, results, checkpoint, best/ with a small
        encoder-decoder of seeded random weights) and one image."""
        import numpy as np
        import torch
        from PIL import Image

        from menndl_py import config
        from menndl_py.genome import Genome
        from menndl_py.rundir import RunDir
        from menndl_py.rundir.layout import GENOME, RECORD, WEIGHTS
        from menndl_py.tasks import make_task

        cfg = config.from_dict({"run": {"name": "r", "directory": "runs"},
                                "task": {"name": "stem_defects", "options": STEM_OPTIONS}})
        run = RunDir(where / "runs" / "r")
        run.best.mkdir(parents=True)
        config.save(cfg, run.config)
        run.results.write_text("id,status\n0,ok\n")
        run.checkpoint.write_text(json.dumps({"finished": True}))
        level = {"filters": 4, "kernel": 3, "convs": 1, "activation": "relu", "norm": "none", "down": "max",
                 "up": "nearest", "skip": True, "dropout": 0.0}
        genome = Genome([level], {"learning_rate": 1e-3, "batch_size": 4, "optimizer": "adam", "weight_decay": 0.0})
        (run.best / GENOME).write_text(json.dumps(genome.to_json()))
        torch.manual_seed(0)
        torch.save(make_task("stem_defects", STEM_OPTIONS).space().build(genome).state_dict(), run.best / WEIGHTS)
        names = make_task("stem_defects", STEM_OPTIONS).class_names[1:]  # its calibration, as a search records it
        (run.best / RECORD).write_text(json.dumps({"id": 0, **{f"m:threshold_{n}": 0.5 for n in names},
                                                   "m:smoothing": 1.0}))
        Image.fromarray((np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)).save(where / "one.png")
        return where


def snapshot(root: Path) -> dict:
    """Every path under `root`: a file's digest, a link's target, or 'dir'."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha1(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def changes(before: dict, after: dict) -> str:
    made = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    altered = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = [f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
             for label, names in (("made", made), ("removed", gone), ("changed", altered)) if names]
    return "; ".join(parts) or "no"


def run_case(case: Case, prepared: Prepared, timeout: float, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="menndl-bad-input-") as tmp:
        root = Path(tmp) / "work"
        root.mkdir()
        for name in case.needs:
            prepared.copy_into(name, root)
        for name, content in case.files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith("/"):
                (root / name).mkdir()
            else:
                (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        for name, target in case.links.items():
            (root / name).symlink_to(target)
        args = [a.replace("{root}", str(root)) for a in case.args]
        before = snapshot(Path(tmp))
        start = time.monotonic()
        try:
            out = subprocess.run([MENNDL, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
            status, stderr = str(out.returncode), out.stderr.strip().splitlines()
        except subprocess.TimeoutExpired:
            status, stderr = f"hung > {timeout:g} s", []
        seconds = time.monotonic() - start
        after = snapshot(Path(tmp))
    line = stderr[-1] if stderr else ""
    if len(stderr) > 1:
        line = f"({len(stderr)} lines) {line}"
    changed = changes(before, after)
    ok = status == str(case.expect) and (case.expect != 2 or (len(stderr) == 1 and line.startswith("menndl: error: ")
                                                             and changed == "no"))
    return {"input": case.input, "status": status, "line": line.replace(str(root), "<tmp>"), "changed": changed,
            "ok": ok, "seconds": seconds}


def markdown(rows: list[dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = ["| # | input | exit | stderr | disk changed | as it should |", "|---|---|---|---|---|---|"]
    for n, r in enumerate(rows, 1):
        out.append(f"| {n} | {cell(r['input'])} | {r['status']} | `{cell(r['line'])}` | {cell(r['changed'])} | "
                   f"{'yes' if r['ok'] else '**no**'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose input holds this word")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as hung")
    args = parser.parse_args(argv)
    print(code_version(), flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env = {k: v for k, v in env.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_", "SLURM_"))}
    selected = [c for c in cases() if not args.only or args.only in c.input]
    rows = []
    with tempfile.TemporaryDirectory(prefix="menndl-bad-input-cache-") as cache:
        prepared = Prepared(Path(cache), env)
        for case in selected:
            rows.append(run_case(case, prepared, args.timeout, env))
            print(f"[{len(rows)}/{len(selected)}] {rows[-1]['status']:>3} {rows[-1]['seconds']:5.1f} s  "
                  f"{case.input}", file=sys.stderr, flush=True)
    print(markdown(rows))
    good = sum(r["ok"] for r in rows)
    print(f"\n{good} of {len(rows)} inputs handled as they should be (exit 2 with one line `menndl: error: ...` and "
          f"nothing changed on disk; or the exit status the command documents)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
