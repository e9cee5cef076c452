"""What several commands share: messages, the task's data made on first use, ensembles recorded, output files
checked, one-line descriptions."""
from __future__ import annotations

from pathlib import Path

from menndl_py import config as config_module
from menndl_py.config import Config
from menndl_py.engine.transport import mpi
from menndl_py.errors import UserError
from menndl_py.rundir.layout import RunDir, write_json_atomic
from menndl_py.rundir.networks import kept_networks
from menndl_py.tasks import make_task
from menndl_py.tasks.base import Task
from menndl_py.tasks.making import make_unless_made
from menndl_py.train.device import pick_device, set_threads
from menndl_py.train.ensemble import Ensemble
from menndl_py.train.group import HorovodGroup, LocalGroup
from menndl_py.train.trainer import score_split


def say(text: str) -> None:
    print(f"[menndl] {text}", flush=True)


def task_of(cfg: Config) -> Task:
    return make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)


def opened_run(run_dir) -> tuple[RunDir, Config, Task]:
    """(RunDir, its config, its task) of a finished or running search; UserError if `run_dir` is not one."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"{run_dir}: not a run directory (no {run.config.name})")
    cfg = config_module.load(run.config)
    return run, cfg, task_of(cfg)


def launched_group(cfg: Config) -> tuple:
    """The ranks this command was launched on as one group that trains a network data-parallel (Horovod over all
    of them; this process alone without a launcher), with this rank's CPU threads and device."""
    share = mpi.share()
    group = HorovodGroup(share.comm) if share.size > 1 else LocalGroup()
    return group, set_threads(cfg.cluster.threads_per_rank, share.ranks_on_node), pick_device(share.local_rank)


def group_words(group, threads: int) -> str:
    """'2 ranks with Horovod, 1 thread each' or '2 threads': who trains, in words."""
    each = f"{threads} thread{'s' * (threads != 1)}"
    return f"{group.size} ranks with Horovod, {each} each" if group.size > 1 else each


def ensure_data(task: Task, ranks: int = 1) -> None:
    """Make the task's data set in this process if it is missing (or wait for the job making it); check it, and
    that each split leaves every rank of a group of `ranks` enough rows."""
    if not task.data_path.exists():
        say(f"making the {task.name} data set (first use): {task.data_path}")
        say(make_unless_made(task, say=say) or f"{task.data_path}: made by another process meanwhile; using it")
    task.check_data()
    task.check_shards(ranks)


def record_ensemble(cfg: Config, task: Task, kept: Path, record_path: Path, **facts) -> dict:
    """Calibrate and score the ensemble of the networks in `kept` (ensemble/ or final_ensemble/) and write what
    `menndl predict` reads of it to `record_path`: its members, best first, `facts`, its calibration and scores."""
    networks = kept_networks(kept, task.space().restricted(cfg.search.space), task.higher_is_better)
    ensemble = Ensemble(task, [(genome, model) for _, genome, model in networks])
    batch, precision = cfg.training.eval_batch_size, cfg.training.precision
    record = {"members": [work_id for work_id, _, _ in networks], **facts,
              "calibration": task.calibration_of(ensemble, batch)}
    for split in ("val", "test"):
        record[f"{split}_{task.metric}"] = score_split(ensemble, task, split, batch, precision)[task.metric]
    write_json_atomic(record_path, record)
    return record


def check_output(files: list[tuple[Path, str]], run_dir: Path, overwrite: bool, writes: str) -> None:
    """UserError unless every file of `files` ((path, how the message names it beside the path), --output first)
    may be written: neither a symbolic link (dangling or not) nor a directory, neither there unless `overwrite`,
    and --output not inside `run_dir` nor any other run directory, which hold only what a search wrote (`writes`
    names what the command writes, for the message)."""
    for target, what in files:
        if target.is_symlink():
            raise UserError(f"{target}{what}: is a symbolic link; outputs are written as new files, not through "
                            f"links: choose another --output")
        if target.is_dir():
            raise UserError(f"{target}{what}: is a directory; choose another --output")
        if target.exists() and not overwrite:
            raise UserError(f"{target}{what}: exists; choose another --output or pass --overwrite")
    path, source = files[0][0], Path(run_dir).resolve()
    for directory in path.resolve().parents:
        run = RunDir(directory)
        if directory == source or (run.config.is_file() and (run.results.is_file() or run.checkpoint.is_file())):
            raise UserError(f"--output {path}: inside the run directory {directory}, which holds only what a "
                            f"search wrote; write {writes} elsewhere")


def describe(genome: dict) -> str:
    """A compact one-line architecture: layer genes, then training genes."""
    def short(layer: dict) -> str:
        return "/".join(k if v is True else str(v) for k, v in layer.items() if v not in (False, 0))

    layers = " > ".join(short(layer) for layer in genome["layers"])
    training = ", ".join(f"{k}={v}" for k, v in genome["training"].items())
    return f"[{len(genome['layers'])} layers] {layers} | {training}"


def format_baselines(results: dict[str, dict], metric: str, unit: str) -> str:
    """A table of baselines (name → {'val_<metric>', 'test_<metric>', 'status'}), one row each; a column of
    'experimental_<metric>' too when a row has one (a task's real-data check)."""
    def cell(v) -> str:
        return f"{v:12.4f}" if isinstance(v, float) else f"{'-':>12s}"

    splits = {"val": "val", "test": "test"}
    if any(f"experimental_{metric}" in row for row in results.values()):
        splits["experimental"] = "exp"
    heads = " ".join(f"{label + ' ' + metric:>12s}" for label in splits.values())
    lines = [f"{'baseline':44s} {heads}  ({unit})  budget"]
    for name, row in results.items():
        status = f"  [{row['status']}]" if row.get("status", "ok") != "ok" else ""
        budget = row.get("budget") or (f"fit in {row['fit_seconds']:.0f} s" if "fit_seconds" in row else "")
        if "seconds_per_pattern" in row:
            budget = f"{1000 * row['seconds_per_pattern']:.2f} ms per pattern"
        cells = " ".join(cell(row.get(f"{split}_{metric}")) for split in splits)
        lines.append(f"{name:44s} {cells}  {budget}{status}".rstrip())
    return "\n".join(lines)
