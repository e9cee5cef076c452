"""Inference latency of a network on its own device: seconds per sample of a fixed batch, after warm-up, the median
of the runs timed in a window (a candidate's latency needs no training, and its weights do not change it).

The window is half a second however fast the network, so that a burst of other work on the node (the master
writing its files, another process) covers only some of the runs: the median then ignores it. A network slower
than the window is timed MIN_RUNS times."""
from __future__ import annotations

import copy
import statistics
import time

import torch

from menndl_py.train.device import laid_out

WARMUP, MIN_RUNS, MAX_RUNS, WINDOW = 2, 3, 400, 0.5  # runs are timed for WINDOW seconds, MIN_RUNS to MAX_RUNS


@torch.no_grad()
def seconds_per_sample(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """The median time of `model(batch)` divided by the batch's length, run as `menndl predict` runs it: on a copy
    of the model laid out for inference on the batch's device (eval mode, batch normalisations folded), so that the
    model itself is left as it was."""
    device = batch.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = laid_out(copy.deepcopy(model), device, inference=True)
    for _ in range(WARMUP):
        model(batch)
    sync()
    times, start = [], time.perf_counter()
    while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.perf_counter() - start < WINDOW):
        t = time.perf_counter()
        model(batch)
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / len(batch)
