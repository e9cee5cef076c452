"""Where a rank computes: its GPU (by node-local rank) or the CPU, how many CPU threads it takes, in what
floating-point precision (`training.precision`), and how a network's weights are laid out there."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Optional

import torch

from menndl_py.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(local_rank: int) -> torch.device:
    """One GPU per rank, chosen by node-local rank, when CUDA exists; the CPU otherwise."""
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def laid_out(model: torch.nn.Module, device: torch.device, inference: bool = False) -> torch.nn.Module:
    """`model` moved to `device`; on a CPU its 2-D convolutions' weights channels-last (NHWC), which oneDNN trains
    1.1-1.6x and runs 1.25-1.74x faster than PyTorch's NCHW here (`benchmarks/channels_last.py`). For inference
    only (`menndl predict`), each batch normalisation that follows a convolution is first folded into it (the
    model is put in eval mode): the same outputs to float rounding, 1.1-1.2x faster on EBSD's networks."""
    if inference:
        _fold_batch_norms(model.eval())
    model.to(device)
    if device.type == "cpu" and not any(p.dim() == 5 for p in model.parameters()):  # 3-D nets have no NHWC here
        model.to(memory_format=torch.channels_last)
    return model


def _fold_batch_norms(model: torch.nn.Module) -> None:
    """Fold every batch normalisation that directly follows a convolution in a container into that convolution's
    weights and bias, in place, leaving an identity in its place (eval mode: its running statistics; one that
    keeps none normalises by each batch's own and stays)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = ((torch.nn.Conv1d, torch.nn.BatchNorm1d), (torch.nn.Conv2d, torch.nn.BatchNorm2d),
             (torch.nn.Conv3d, torch.nn.BatchNorm3d))
    for container in list(model.modules()):
        children = list(container.named_children())
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
            if any(type(conv) is c and type(norm) is n for c, n in pairs) and norm.running_mean is not None:
                setattr(container, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(container, norm_name, torch.nn.Identity())


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


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The dtype that `precision` (training.precision) autocasts to on `device`: None for fp32 (no autocast);
    UserError when this torch cannot autocast to it there."""
    if precision == "fp32":
        return None
    dtype = AUTOCAST_DTYPES[precision]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # where a dtype is not supported, autocast warns and stays off
        try:
            with torch.autocast(device.type, dtype=dtype):
                able = torch.is_autocast_enabled(device.type)
        except RuntimeError:  # no autocast on this device type, or (CUDA) no bf16 on this GPU
            able = False
    if not able:
        raise UserError(f"training.precision: {precision} is not supported on {device} by torch {torch.__version__}; "
                        f"use fp32")
    return dtype


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """The context a forward pass runs in: torch.autocast to `dtype` (from `autocast_dtype`), or none."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
