"""`menndl data make`: a task's data set, made over the ranks this process was launched with (tasks whose data
maker spreads its work) or in rank 0 alone; one job at a time makes a given file (see tasks.making)."""
from __future__ import annotations

from typing import Optional

from menndl_py.commands.common import say
from menndl_py.config import Config
from menndl_py.engine.transport import mpi
from menndl_py.tasks import make_task
from menndl_py.tasks.making import make_unless_made


def make_data(task_name: str, cfg: Optional[Config], data_dir: Optional[str], force: bool) -> int:
    """Make `task_name`'s data set (its options and data directory from `cfg`, if given) unless it exists."""
    options = cfg.task.options if cfg is not None else {}
    data_dir = data_dir or (cfg.task.data_dir if cfg is not None else None) or "data"
    task = make_task(task_name, options, data_dir)
    share = mpi.share()
    existed = task.data_path.exists()
    summary = make_unless_made(task, share, force, say if share.rank == 0 else lambda text: None)
    if summary is None:
        task.check_data()
    if share.rank == 0:
        say(summary or (f"{task.data_path}: already made (use --force to make it again)" if existed and not force
                        else f"{task.data_path}: made by another process meanwhile; using it"))
    return 0
