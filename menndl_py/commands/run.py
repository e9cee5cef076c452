"""`menndl run` and `menndl resume`: set up the run directory, the data and the ranks, hand over to the serial or
MPI transport, then score the best network on the test split."""
from __future__ import annotations

import os
import socket
import statistics

import torch

from menndl_py import config as config_module
from menndl_py.commands.common import describe, ensure_data, format_baselines, say, task_of
from menndl_py.config import Config
from menndl_py.engine.evaluator import Evaluator
from menndl_py.engine.master import Master
from menndl_py.engine.signals import EXIT_STOPPED, StopRequest
from menndl_py.engine.transport import mpi
from menndl_py.engine.transport.serial import run_serial
from menndl_py.errors import UserError
from menndl_py.rundir import RunDir, read_checkpoint
from menndl_py.rundir.networks import read_genome, read_record, score_on_test
from menndl_py.search import make_search
from menndl_py.search.seeds import seed_genomes
from menndl_py.tasks.base import Task
from menndl_py.train.device import pick_device, set_threads
from menndl_py.train.group import HorovodGroup, LocalGroup


def prepare_run_dir(cfg: Config, resume: bool) -> str:
    """Create the run directory, or check that it holds an unfinished run of this config. Returns what to do."""
    run = RunDir(cfg.run_dir)
    checkpoint = read_checkpoint(run.checkpoint)
    if checkpoint is None:
        if resume and run.results.exists():
            raise UserError(f"{run.checkpoint}: missing; cannot resume this run")
        run.path.mkdir(parents=True, exist_ok=True)
        config_module.save(cfg, run.config)
        return "new"
    if checkpoint["fingerprint"] != cfg.fingerprint():
        raise UserError(f"{run.path}: holds a run of another configuration; choose another run.name "
                        f"or use 'menndl resume {run.path}'")
    if checkpoint["finished"]:
        return "finished"
    config_module.save(cfg, run.config)  # the budget may have been changed
    return "resume"


def scheduler_facts() -> dict:
    keys = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE",
            "SLURM_GPUS_PER_TASK", "SLURM_RESTART_COUNT")
    return {k.lower(): os.environ[k] for k in keys if k in os.environ}


def write_run_json(cfg: Config, task: Task, **extra) -> None:
    RunDir(cfg.run_dir).update_run_json(task=task.name, metric=f"val_{task.metric}", unit=task.unit,
                                        higher_is_better=task.higher_is_better, fingerprint=cfg.fingerprint(), **extra)


def space_of(cfg: Config, task: Task):
    return task.space().restricted(cfg.search.space)


def setup(cfg: Config, resume: bool) -> tuple[str, Task]:
    """Rank 0's checks before any other rank starts work; raises UserError."""
    task = task_of(cfg)
    seed_genomes(cfg.search.seed_genomes, task.baseline_genomes(), space_of(cfg, task))
    state = prepare_run_dir(cfg, resume)
    if state != "finished":
        ensure_data(task)
    return state, task


def make_master(cfg: Config, task: Task, n_groups: int, progress: bool = True, **options) -> Master:
    """The master of `cfg`'s search (`options`: Master's own, e.g. its clock)."""
    search = make_search(cfg.search, space_of(cfg, task), task.higher_is_better, task.baseline_genomes())
    return Master(cfg, task, search, n_groups=n_groups, progress=progress, **options)


def search(cfg: Config, resume: bool = False, progress: bool = True) -> int:
    """Run (or resume) the search of `cfg` on whatever ranks this process was launched with. Returns the exit
    status: 0, or EXIT_STOPPED when a signal stopped it early (resumable)."""
    StopRequest.install()
    comm = mpi.world()
    if comm is None or comm.size == 1:
        return _search_serial(cfg, resume, progress)
    return _search_mpi(comm, cfg, resume, progress)


def _search_serial(cfg: Config, resume: bool, progress: bool) -> int:
    state, task = setup(cfg, resume)
    if state == "finished":
        say(f"{cfg.run_dir}: this run is already finished")
        return 0
    say(f"{'resuming' if state == 'resume' else 'starting'} {cfg.run_dir} in one process")
    threads = set_threads(cfg.cluster.threads_per_rank, 1)
    write_run_json(cfg, task, world_size=1, groups=1, ranks_per_candidate=1, hosts=[socket.gethostname()],
                   threads_per_rank=threads, scheduler=scheduler_facts(), finished=False)
    master = make_master(cfg, task, 1, progress)
    try:
        run_serial(master, Evaluator(cfg, task, LocalGroup(), pick_device(0)))
    finally:
        master.close()
    return finish(cfg, task, master)


def _search_mpi(comm, cfg: Config, resume: bool, progress: bool) -> int:
    k = cfg.cluster.ranks_per_candidate
    kept = {}  # rank 0's task, from its setup

    def rank0_setup() -> str:
        state, kept["task"] = setup(cfg, resume)
        return state

    state = mpi.handshake(comm, k, rank0_setup)
    task = kept["task"] if comm.rank == 0 else task_of(cfg)
    if state == "finished":
        if comm.rank == 0:
            say(f"{cfg.run_dir}: this run is already finished")
        return 0
    layout = mpi.make_layout(comm, k)
    threads = set_threads(cfg.cluster.threads_per_rank, layout.ranks_on_node)
    if comm.rank == 0:
        hosts = layout.hosts
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        say(f"{'resuming' if state == 'resume' else 'starting'} {cfg.run_dir}: {comm.size} ranks = master + "
            f"{layout.n_groups} groups of {k} (Horovod), {threads} threads per rank")
        write_run_json(cfg, task, world_size=comm.size, groups=layout.n_groups, ranks_per_candidate=k,
                       hosts=sorted(set(hosts)), ranks_per_node={h: hosts.count(h) for h in sorted(set(hosts))},
                       gpus_per_rank=min(gpus, 1), threads_per_rank=threads, scheduler=scheduler_facts(),
                       finished=False)
        master = make_master(cfg, task, layout.n_groups, progress)
        try:
            mpi.master_loop(comm, layout, master, cfg.cluster.stop_grace)
        finally:
            master.close()
        return finish(cfg, task, master)
    group = HorovodGroup(layout.group)
    interrupted = mpi.stop_requested_of(comm, layout)
    mpi.worker_loop(comm, layout, lambda: Evaluator(cfg, task, group, pick_device(layout.local_rank), interrupted))
    return 0


def finish(cfg: Config, task: Task, master: Master) -> int:
    """Score the best network on the test split and print it; record how the run ended. Returns the exit status."""
    run = RunDir(cfg.run_dir)
    finished = master.done and not master.stopping
    n = len(master.store.rows)
    if master.stopping:
        say(f"stopped by {master.stopping} after {n} evaluations; "
            f"{len(master.in_flight)} in flight will be sent again by 'menndl resume {cfg.run_dir}'")
    summary = {"finished": finished, "evaluations": n}
    if master.exhausted:
        say(f"stopped early: {master.exhausted}")
    if master.handling_seconds:
        summary["master_ms_per_result"] = {
            "median": 1e3 * statistics.median(master.handling_seconds),
            "p95": 1e3 * sorted(master.handling_seconds)[int(0.95 * (len(master.handling_seconds) - 1))]}
    if master.best is not None and not run.has_trained_network():  # tasks that train nothing
        say(f"best of {n} evaluations: id {master.best[1]}, {task.metric} {master.best[0]:.4g} {task.unit}")
        summary.update(best_id=master.best[1], best_val=master.best[0])
    elif master.best is not None:
        test = score_on_test(task, run.best, space_of(cfg, task), cfg.training.eval_batch_size, say)
        summary.update(best_id=master.best[1], best_val=master.best[0], best_test=test)
        say(f"best of {n} evaluations: id {master.best[1]}, {read_record(run.best)['params']:,} parameters")
        say(f"  architecture: {describe(read_genome(run.best).to_json())}")
        say(f"  validation {task.metric} {master.best[0]:.4f} {task.unit}, "
            f"test {task.metric} {test[task.metric]:.4f} {task.unit}")
        baselines = run.read_baselines()
        if baselines:
            rows = {f"menndl_py search (best of {n})":
                    {f"val_{task.metric}": master.best[0], f"test_{task.metric}": test[task.metric]}, **baselines}
            print(format_baselines(rows, task.metric, task.unit), flush=True)
    else:
        failures = {}
        for row in master.store.rows:
            failures[row["status"]] = failures.get(row["status"], 0) + 1
        say(f"no candidate succeeded in {n} evaluations: {failures}; first message: "
            f"{master.store.rows[0]['message'] if master.store.rows else '-'}")
    write_run_json(cfg, task, **summary)
    return EXIT_STOPPED if master.stopping else 0
