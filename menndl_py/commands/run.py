"""`menndl run` and `menndl resume`: set up the run directory, the data and the ranks, hand over to the serial or
MPI transport, then score the best network on the test split.

With MENNDL_LAUNCH_FILE set (by the Slurm batch scripts), rank 0 writes into that file the run directory and the
number of rows stored when this launch began, so that the script can tell whether the launch stored any."""
from __future__ import annotations

import os
import socket
import statistics
import sys
from pathlib import Path

import torch

from menndl_py import config as config_module
from menndl_py.commands.common import describe, ensure_data, format_baselines, record_ensemble, say, task_of
from menndl_py.config import Config
from menndl_py.engine.evaluator import Evaluator
from menndl_py.engine.master import Master
from menndl_py.engine.signals import EXIT_STOPPED, StopRequest
from menndl_py.engine.transport import mpi
from menndl_py.engine.transport.serial import run_serial
from menndl_py.errors import UserError
from menndl_py.rundir import Checkpoint, RunDir, RunLock, empty_state, read_checkpoint
from menndl_py.rundir.networks import read_genome, read_record, score_on_test
from menndl_py.search import make_search
from menndl_py.search.seeds import seed_genomes
from menndl_py.tasks.base import Task
from menndl_py.train.device import pick_device, set_threads
from menndl_py.train.group import HorovodGroup, LocalGroup

LAUNCH_FILE = "MENNDL_LAUNCH_FILE"


def prepare_run_dir(cfg: Config, resume: bool) -> str:
    """Create the run directory with its first checkpoint, or check that it holds a run of this config (a damaged
    or missing checkpoint is rebuilt, with a warning). Returns "new", "resume", or "finished" (as the checkpoint
    says; the caller checks that against the budget, which may have been extended)."""
    run = RunDir(cfg.run_dir)
    damage = []
    checkpoint = read_checkpoint(run.checkpoint, warn=damage.append)
    for line in damage:
        warn(line)
    if checkpoint is None and not run.results.exists():
        run.path.mkdir(parents=True, exist_ok=True)
        config_module.save(cfg, run.config)
        _write_snapshot(run, empty_state(cfg.fingerprint()))  # from now on this directory is this config's
        return "new"
    if checkpoint is None:
        damage.append(f"{run.checkpoint}: missing; rebuilt from the results (genomes that were in flight are not "
                      f"sent again, the time budget restarts)")
        warn(damage[-1])
        checkpoint = empty_state()
    fingerprint = checkpoint["fingerprint"] or _saved_fingerprint(run)
    if fingerprint != cfg.fingerprint():
        raise UserError(f"{run.path}: holds a run of another configuration; choose another run.name "
                        f"or use 'menndl resume {run.path}'")
    if damage:  # the master reads what was rebuilt
        _write_snapshot(run, {**checkpoint, "fingerprint": fingerprint})
    return "finished" if checkpoint["finished"] else "resume"


def _write_snapshot(run: RunDir, state: dict) -> None:
    checkpoint = Checkpoint(run.checkpoint, state["seq"])
    checkpoint.snapshot(state)
    checkpoint.close()


def _saved_fingerprint(run: RunDir) -> str:
    """The fingerprint of the config saved in a run directory whose checkpoint was lost."""
    try:
        return config_module.load(run.config).fingerprint()
    except UserError:
        raise UserError(f"{run.path}: holds results but neither a readable checkpoint nor a readable "
                        f"{run.config.name}: cannot tell which configuration made it") from None


def warn(text: str) -> None:
    print(f"menndl: warning: {text}", file=sys.stderr, flush=True)


def scheduler_facts() -> dict:
    keys = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE",
            "SLURM_GPUS_PER_TASK", "SLURM_RESTART_COUNT")
    return {k.lower(): os.environ[k] for k in keys if k in os.environ}


def write_run_json(cfg: Config, task: Task, **extra) -> None:
    RunDir(cfg.run_dir).update_run_json(task=task.name, metric=f"val_{task.metric}", unit=task.unit,
                                        higher_is_better=task.higher_is_better, fingerprint=cfg.fingerprint(),
                                        objectives=list(cfg.search.objectives), latency_per=list(task.latency_per),
                                        **extra)


def space_of(cfg: Config, task: Task):
    return task.space().restricted(cfg.search.space)


def setup(cfg: Config, resume: bool, lock: RunLock, n_groups: int, progress: bool) -> tuple[str, Task, Master]:
    """Rank 0's work before any other rank starts: take the run directory's lock, check or create the run
    directory, open and check what it holds (the master, ready), make the data. Returns what to do ("new",
    "resume" or "finished"; a finished run's master is closed already). Raises UserError."""
    task = task_of(cfg)
    if cfg.search.keep_top and not task.ensembled:
        raise UserError(f"search.keep_top: task {task.name} makes no ensembles: {task.not_ensembled}")
    seed_genomes(cfg.search.seed_genomes, task.baseline_genomes(), space_of(cfg, task), cfg.search.seed_sweep)
    new = not cfg.run_dir.exists()
    if new:  # missing or bad data leaves no run directory behind
        ensure_data(task, cfg.cluster.ranks_per_candidate)
    lock.acquire()
    state = prepare_run_dir(cfg, resume)
    master = make_master(cfg, task, n_groups, progress)
    if state == "finished" and master.done:
        master.abandon()
        return state, task, master
    if state == "finished":
        say(f"{cfg.run_dir}: finished, but the budget has been extended: continuing it")
        state = "resume"
    config_module.save(cfg, RunDir(cfg.run_dir).config)  # the budget may have been changed
    if os.environ.get(LAUNCH_FILE):
        Path(os.environ[LAUNCH_FILE]).write_text(f"{cfg.run_dir.resolve()}\n{len(master.store.rows)}\n")
    if not new:
        ensure_data(task, cfg.cluster.ranks_per_candidate)
    return state, task, master


def make_master(cfg: Config, task: Task, n_groups: int, progress: bool = True, **options) -> Master:
    """The master of `cfg`'s search (`options`: Master's own, e.g. its clock)."""
    search = make_search(cfg.search, space_of(cfg, task), task.higher_is_better, task.baseline_genomes(),
                         promotion=cfg.training.rungs is not None)
    return Master(cfg, task, search, n_groups=n_groups, progress=progress, **options)


def search(cfg: Config, resume: bool = False, progress: bool = True) -> int:
    """Run (or resume) the search of `cfg` on whatever ranks this process was launched with. Returns the exit
    status: 0, or EXIT_STOPPED when a signal stopped it early (resumable). The run directory is locked by rank 0
    for as long as this runs."""
    StopRequest.install()
    lock = RunLock(RunDir(cfg.run_dir).lock)
    try:
        comm = mpi.world()
        if comm is None or comm.size == 1:
            return _search_serial(cfg, resume, progress, lock)
        return _search_mpi(comm, cfg, resume, progress, lock)
    finally:
        lock.release()


def _search_serial(cfg: Config, resume: bool, progress: bool, lock: RunLock) -> int:
    state, task, master = setup(cfg, resume, lock, 1, progress)
    if state == "finished":
        say(f"{cfg.run_dir}: this run is already finished")
        return 0
    try:
        say(f"{'resuming' if state == 'resume' else 'starting'} {cfg.run_dir} in one process")
        threads = set_threads(cfg.cluster.threads_per_rank, 1)
        write_run_json(cfg, task, world_size=1, groups=1, ranks_per_candidate=1, hosts=[socket.gethostname()],
                       threads_per_rank=threads, scheduler=scheduler_facts(), finished=False)
        run_serial(master, Evaluator(cfg, task, LocalGroup(), pick_device(0)))
    finally:
        master.close()
    return finish(cfg, task, master)


def _search_mpi(comm, cfg: Config, resume: bool, progress: bool, lock: RunLock) -> int:
    k = cfg.cluster.ranks_per_candidate
    kept = {}  # rank 0's task and master, from its setup

    def rank0_setup() -> str:
        state, kept["task"], kept["master"] = setup(cfg, resume, lock, (comm.size - 1) // k, progress)
        return state

    state = mpi.handshake(comm, k, rank0_setup)
    task = kept["task"] if comm.rank == 0 else task_of(cfg)
    if state == "finished":
        if comm.rank == 0:
            say(f"{cfg.run_dir}: this run is already finished")
        return 0
    if comm.rank == 0:
        master = kept["master"]
        try:
            layout = mpi.make_layout(comm, k)
            threads = set_threads(cfg.cluster.threads_per_rank, layout.ranks_on_node)
            hosts = layout.hosts
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            plural = "s" * (layout.n_groups != 1)
            say(f"{'resuming' if state == 'resume' else 'starting'} {cfg.run_dir}: {comm.size} ranks = master + "
                f"{layout.n_groups} group{plural} of {k}{' (Horovod)' if k > 1 else ''}, {threads} "
                f"thread{'s' * (threads != 1)} per rank")
            write_run_json(cfg, task, world_size=comm.size, groups=layout.n_groups, ranks_per_candidate=k,
                           hosts=sorted(set(hosts)), ranks_per_node={h: hosts.count(h) for h in sorted(set(hosts))},
                           gpus_per_rank=min(gpus, 1), threads_per_rank=threads, scheduler=scheduler_facts(),
                           finished=False)
            mpi.master_loop(comm, layout, master, cfg.cluster.stop_grace)
        finally:
            master.close()
        return finish(cfg, task, master)
    layout = mpi.make_layout(comm, k)
    threads = set_threads(cfg.cluster.threads_per_rank, layout.ranks_on_node)
    group = HorovodGroup(layout.group) if k > 1 else LocalGroup()  # a group of one rank has nothing to reduce
    interrupted = mpi.stop_requested_of(comm, layout)
    mpi.worker_loop(comm, layout, lambda: Evaluator(cfg, task, group, pick_device(layout.local_rank), interrupted))
    return 0


def say_front(task: Task, master: Master) -> list[int]:
    """Print the Pareto front at the top rung, a network each; returns its ids."""
    front = master.run.member_ids(master.run.pareto)
    per, what = task.latency_per
    rows = {row["id"]: row for row in master.store.rows if row["rung"] == master.ladder.top}
    parts = [f"id {i}: {task.metric} {rows[i]['fitness']:.4g}" +
             (f", {rows[i]['m:latency'] * per:.3g} s per {what}" if rows[i].get("m:latency") is not None else "") +
             f", {rows[i]['params']:,} parameters" for i in front if i in rows]
    say(f"Pareto front at the top rung ({', '.join(master.objectives.names)}): {len(front)} networks in "
        f"{master.run.pareto}" + "".join(f"\n  {p}" for p in parts))
    return front


def say_ensemble(cfg: Config, task: Task, run: RunDir) -> dict:
    """Record the ensemble of the networks in ensemble/ (`search.keep_top`) in ensemble.json, which `menndl predict
    --network ensemble` reads, and print it."""
    record = record_ensemble(cfg, task, run.ensemble, run.ensemble_record)
    say(f"ensemble of the {len(record['members'])} best at the top rung (ids {', '.join(map(str, record['members']))}"
        f"): validation {task.metric} {record[f'val_{task.metric}']:.4f} {task.unit}, test {task.metric} "
        f"{record[f'test_{task.metric}']:.4f} {task.unit}; 'menndl predict --network ensemble' uses it")
    return record


def finish(cfg: Config, task: Task, master: Master) -> int:
    """Score the best network on the test split and print it; record how the run ended. Returns the exit status."""
    run = RunDir(cfg.run_dir)
    finished = master.done and not master.stopping
    n = master.first_rung_rows  # new genomes: with rungs, each may have a row per rung
    if master.stopping:
        say(f"stopped by {master.stopping} after {n} evaluations; "
            f"{len(master.in_flight)} in flight will be sent again by 'menndl resume {cfg.run_dir}'")
    summary = {"finished": finished, "evaluations": n}
    if master.rungs is not None and master.best is not None:
        rung, unit = master.best[2], master.rungs.unit
        say(f"{len(master.store.rows)} trainings over {len(master.rungs.budgets)} rungs; the best reached rung "
            f"{rung} ({master.rungs.budgets[rung]:g} {unit} of training, the top is {master.rungs.budgets[-1]:g})")
        summary.update(trainings=len(master.store.rows), best_rung=rung)
    if master.exhausted:
        say(f"stopped early: {master.exhausted}")
    if master.objectives.many:
        summary["front"] = say_front(task, master)
    if master.handling_seconds:
        summary["master_ms_per_result"] = {
            "median": 1e3 * statistics.median(master.handling_seconds),
            "p95": 1e3 * sorted(master.handling_seconds)[int(0.95 * (len(master.handling_seconds) - 1))]}
    if master.best is not None and run.has_trained_network() and master.stopping:
        say("test-split scoring skipped: the job is stopping and must end in the scheduler's window "
            "(the resumed run scores it at its end)")
    if master.best is not None and (master.stopping or not run.has_trained_network()):  # or tasks that train nothing
        say(f"best of {n} evaluations: id {master.best[1]}, {task.metric} {master.best[0]:.4g} {task.unit}")
        summary.update(best_id=master.best[1], best_val=master.best[0])
    elif master.best is not None:
        test = score_on_test(task, run.best, space_of(cfg, task), cfg.training.eval_batch_size, say,
                             cfg.training.precision)
        summary.update(best_id=master.best[1], best_val=master.best[0], best_test=test)
        record = read_record(run.best)
        extra = {m: record[f"m:{m}"] for m in task.result_metrics if isinstance(record.get(f"m:{m}"), float)}
        say(f"best of {n} evaluations: id {master.best[1]}, {record['params']:,} parameters")
        say(f"  architecture: {describe(read_genome(run.best).to_json())}")
        say(f"  validation {task.metric} {master.best[0]:.4f} {task.unit}, "
            f"test {task.metric} {test[task.metric]:.4f} {task.unit}")
        if extra:  # the task's own checks of every trained network (EBSD: its experimental patterns)
            say("  " + ", ".join(f"{m} {v:.4f}" for m, v in extra.items()))
        if len(RunDir.member_ids(run.ensemble)) > 1:
            summary["ensemble"] = say_ensemble(cfg, task, run)
        baselines = run.read_baselines()
        if baselines:
            rows = {f"menndl_py search (best of {n})":
                    {f"val_{task.metric}": master.best[0], f"test_{task.metric}": test[task.metric], **extra,
                     "budget": f"{master.elapsed:.0f} s of search, {master.n_groups} groups"}, **baselines}
            print(format_baselines(rows, task.metric, task.unit), flush=True)
    else:
        failures = {}
        for row in master.store.rows:
            failures[row["status"]] = failures.get(row["status"], 0) + 1
        say(f"no candidate succeeded in {n} evaluations: {failures}; first message: "
            f"{master.store.rows[0]['message'] if master.store.rows else '-'}")
    write_run_json(cfg, task, **summary)
    return EXIT_STOPPED if master.stopping else 0
