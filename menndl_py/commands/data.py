"""`menndl data make`: a task's data set, made over the ranks this process was launched with (tasks whose data
maker spreads its work) or in rank 0 alone."""
from __future__ import annotations

from typing import Optional

from menndl_py.commands.common import say
from menndl_py.config import Config
from menndl_py.engine.transport import mpi
from menndl_py.tasks import make_task


def make_data(task_name: str, cfg: Optional[Config], data_dir: Optional[str], force: bool) -> int:
    """Make `task_name`'s data set (its options and data directory from `cfg`, if given) unless it exists."""
    options = cfg.task.options if cfg is not None else {}
    data_dir = data_dir or (cfg.task.data_dir if cfg is not None else None) or "data"
    task = make_task(task_name, options, data_dir)
    share = mpi.share()
    if task.data_path.exists() and not force:
        task.check_data()
        if share.rank == 0:
            say(f"{task.data_path}: already made (use --force to make it again)")
        return 0
    if task.parallel_data:
        summary = task.make_data(share)
    elif share.rank == 0:
        summary = task.make_data()
    if share.rank == 0:
        say(summary)
    return 0
