"""Start, resume and finish a search: set up the run directory, the data and the ranks, then hand over to
the serial or MPI transport."""
from __future__ import annotations

import json
import os
import socket
import statistics

import torch

from menndl_py import config as config_module
from menndl_py.cluster import mpi
from menndl_py.cluster.master import Master
from menndl_py.cluster.serial import run_serial
from menndl_py.cluster.signals import EXIT_STOPPED, StopRequest
from menndl_py.cluster.worker import Evaluator, pick_device, set_threads
from menndl_py.config import Config
from menndl_py.errors import UserError
from menndl_py.predict import network_record
from menndl_py.search.seeds import seed_genomes
from menndl_py.store import read_checkpoint, write_json_atomic
from menndl_py.tasks import make_task
from menndl_py.tasks.base import Task
from menndl_py.train.group import HorovodGroup, LocalGroup
from menndl_py.train.trainer import score


def say(text: str) -> None:
    print(f"[menndl] {text}", flush=True)


def prepare_run_dir(cfg: Config, resume: bool) -> str:
    """Create the run directory, or check that it holds an unfinished run of this config. Returns what to do."""
    run_dir = cfg.run_dir
    checkpoint = read_checkpoint(run_dir / "checkpoint.json")
    if checkpoint is None:
        if resume and (run_dir / "results.csv").exists():
            raise UserError(f"{run_dir}/checkpoint.json: missing; cannot resume this run")
        run_dir.mkdir(parents=True, exist_ok=True)
        config_module.save(cfg, run_dir / "config.yaml")
        return "new"
    if checkpoint["fingerprint"] != cfg.fingerprint():
        raise UserError(f"{run_dir}: holds a run of another configuration; choose another run.name "
                        f"or use 'menndl resume {run_dir}'")
    if checkpoint["finished"]:
        return "finished"
    config_module.save(cfg, run_dir / "config.yaml")  # the budget may have been changed
    return "resume"


def ensure_data(task: Task) -> None:
    if not task.data_path.exists():
        say(f"making the {task.name} data set (first use): {task.data_path}")
        say(task.make_data())
    task.check_data()


def scheduler_facts() -> dict:
    keys = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_GPUS_PER_TASK",
            "SLURM_RESTART_COUNT")
    return {k.lower(): os.environ[k] for k in keys if k in os.environ}


def write_run_json(cfg: Config, task: Task, **extra) -> None:
    path = cfg.run_dir / "run.json"
    facts = json.loads(path.read_text()) if path.exists() else {}
    facts.update(task=task.name, metric=f"val_{task.metric}", unit=task.unit,
                 higher_is_better=task.higher_is_better, fingerprint=cfg.fingerprint(), **extra)
    write_json_atomic(path, facts)


def setup(cfg: Config, resume: bool) -> tuple[str, Task]:
    """Rank 0's checks before any other rank starts work; raises UserError."""
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    seed_genomes(cfg.search.seed_genomes, task.baseline_genomes(), task.space().restricted(cfg.search.space))
    state = prepare_run_dir(cfg, resume)
    if state != "finished":
        ensure_data(task)
    return state, task


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
    threads = set_threads(cfg, 1)
    write_run_json(cfg, task, world_size=1, groups=1, ranks_per_candidate=1, hosts=[socket.gethostname()],
                   threads_per_rank=threads, scheduler=scheduler_facts(), finished=False)
    master = Master(cfg, task, n_groups=1, progress=progress)
    try:
        run_serial(master, Evaluator(cfg, task, LocalGroup(), pick_device(0)))
    finally:
        master.close()
    return finish(cfg, task, master)


def _search_mpi(comm, cfg: Config, resume: bool, progress: bool) -> int:
    k = cfg.cluster.ranks_per_candidate
    setup_error = None
    if comm.rank == 0:
        try:
            mpi.check_geometry(comm.size, k)
            state, task = setup(cfg, resume)
        except UserError as exc:
            setup_error, state = str(exc), None
        for rank in range(1, comm.size):
            comm.send((setup_error, state), dest=rank, tag=mpi.TAG_SETUP)
    else:
        (setup_error, state), _, _ = mpi.receive(comm, 0, mpi.TAG_SETUP)
    if setup_error:
        raise UserError(setup_error)
    if state == "finished":
        if comm.rank == 0:
            say(f"{cfg.run_dir}: this run is already finished")
        return 0
    layout = mpi.make_layout(comm, k)
    threads = set_threads(cfg, layout.ranks_on_node)
    hosts = comm.gather(socket.gethostname(), root=0)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if comm.rank == 0:
        say(f"{'resuming' if state == 'resume' else 'starting'} {cfg.run_dir}: {comm.size} ranks = master + "
            f"{layout.n_groups} groups of {k} (Horovod), {threads} threads per rank")
        write_run_json(cfg, task, world_size=comm.size, groups=layout.n_groups, ranks_per_candidate=k,
                       hosts=sorted(set(hosts)), ranks_per_node={h: hosts.count(h) for h in sorted(set(hosts))},
                       gpus_per_rank=min(gpus, 1), threads_per_rank=threads, scheduler=scheduler_facts(),
                       finished=False)
        master = Master(cfg, task, n_groups=layout.n_groups, progress=progress)
        try:
            mpi.master_loop(comm, layout, master, cfg.cluster.stop_grace)
        finally:
            master.close()
        return finish(cfg, task, master)
    group = HorovodGroup(layout.group)
    task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    if layout.is_leader:  # the master's stop message, or this rank's own signal
        def interrupted() -> bool:
            return StopRequest.requested() or comm.iprobe(source=0, tag=mpi.TAG_STOP)
    else:
        interrupted = StopRequest.requested
    mpi.worker_loop(comm, layout, lambda: Evaluator(cfg, task, group, pick_device(layout.local_rank), interrupted))
    return 0


def finish(cfg: Config, task: Task, master: Master) -> int:
    """Score the best network on the test split and print it; record how the run ended. Returns the exit status."""
    finished = master.done and not master.stopping
    if master.stopping:
        say(f"stopped by {master.stopping} after {len(master.store.rows)} evaluations; "
            f"{len(master.in_flight)} in flight will be sent again by 'menndl resume {cfg.run_dir}'")
    summary = {"finished": finished, "evaluations": len(master.store.rows)}
    if master.exhausted:
        say(f"stopped early: {master.exhausted}")
    if master.handling_seconds:
        summary["master_ms_per_result"] = {
            "median": 1e3 * statistics.median(master.handling_seconds),
            "p95": 1e3 * sorted(master.handling_seconds)[int(0.95 * (len(master.handling_seconds) - 1))]}
    if master.best is not None and not (cfg.run_dir / "best" / "model.pt").exists():  # tasks that train nothing
        say(f"best of {len(master.store.rows)} evaluations: id {master.best[1]}, "
            f"{task.metric} {master.best[0]:.4g} {task.unit}")
        summary.update(best_id=master.best[1], best_val=master.best[0])
    elif master.best is not None:
        test = test_metrics(cfg, task)
        summary.update(best_id=master.best[1], best_val=master.best[0], best_test=test)
        result = json.loads((cfg.run_dir / "best" / "result.json").read_text())
        genome = json.loads((cfg.run_dir / "best" / "genome.json").read_text())
        say(f"best of {len(master.store.rows)} evaluations: id {master.best[1]}, {result['params']:,} parameters")
        say(f"  architecture: {describe(genome)}")
        say(f"  validation {task.metric} {master.best[0]:.4f} {task.unit}, "
            f"test {task.metric} {test[task.metric]:.4f} {task.unit}")
        baselines = cfg.run_dir / "baselines.json"
        if baselines.exists():
            from menndl_py.baseline import format_baselines

            rows = {f"menndl_py search (best of {len(master.store.rows)})":
                    {f"val_{task.metric}": master.best[0], f"test_{task.metric}": test[task.metric]},
                    **json.loads(baselines.read_text())}
            print(format_baselines(rows, task.metric, task.unit), flush=True)
    else:
        failures = {}
        for row in master.store.rows:
            failures[row["status"]] = failures.get(row["status"], 0) + 1
        say(f"no candidate succeeded in {len(master.store.rows)} evaluations: {failures}; first message: "
            f"{master.store.rows[0]['message'] if master.store.rows else '-'}")
    write_run_json(cfg, task, **summary)
    return EXIT_STOPPED if master.stopping else 0


def test_metrics(cfg: Config, task: Task) -> dict:
    """Test metrics of the run's best network, read with its own calibration (see `Task.load_calibration`)."""
    best = cfg.run_dir / "best"
    from menndl_py.genome import Genome

    genome = Genome.from_json(json.loads((best / "genome.json").read_text()))
    model = task.space().restricted(cfg.search.space).build(genome)
    model.load_state_dict(torch.load(best / "model.pt", weights_only=True))
    note = task.load_calibration(network_record(best))
    if note:
        say(f"{best / 'result.json'}: {note}")
    x, y = (torch.as_tensor(a) for a in task.load("test"))
    return score(model, task, x, y, LocalGroup(), cfg.training.eval_batch_size)


def describe(genome: dict) -> str:
    """A compact one-line architecture: layer genes, then training genes."""
    def short(layer: dict) -> str:
        return "/".join(k if v is True else str(v) for k, v in layer.items() if v not in (False, 0))

    layers = " > ".join(short(layer) for layer in genome["layers"])
    training = ", ".join(f"{k}={v}" for k, v in genome["training"].items())
    return f"[{len(genome['layers'])} layers] {layers} | {training}"
