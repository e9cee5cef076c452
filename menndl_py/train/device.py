"""Where a rank computes: its GPU (by node-local rank) or the CPU, and how many CPU threads it takes."""
from __future__ import annotations

import os
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
    """CPU threads per rank: the configured number, or this process's cores shared among the node's ranks."""
    threads = threads_per_rank or max(1, len(os.sched_getaffinity(0)) // max(ranks_on_node, 1))
    torch.set_num_threads(threads)
    return threads
