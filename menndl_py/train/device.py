"""Where a rank computes: its GPU (by node-local rank) or the CPU, and how many CPU threads it takes."""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch


def pick_device(local_rank: int) -> torch.device:
    """One GPU per rank, chosen by node-local rank, when CUDA exists; the CPU otherwise."""
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def set_threads(threads_per_rank: Optional[int], ranks_on_node: int) -> int:
    """CPU threads per rank: the configured number, or this process's cores shared among the node's ranks. Says
    so on stderr when the launcher bound this process to fewer CPUs than it is to run threads (Open MPI binds each
    rank to one core when it starts two or fewer): the threads would then share those CPUs."""
    cpus = os.sched_getaffinity(0)
    threads = threads_per_rank or max(1, len(cpus) // max(ranks_on_node, 1))
    if threads > len(cpus):
        print(f"[menndl] cluster.threads_per_rank is {threads}, but the launcher bound this process to "
              f"{len(cpus)} CPU{'s' * (len(cpus) > 1)} ({','.join(map(str, sorted(cpus)))}), which its threads "
              f"will share: launch with 'mpirun --bind-to none' or 'srun --cpus-per-task={threads}'",
              file=sys.stderr, flush=True)
    torch.set_num_threads(threads)
    return threads
