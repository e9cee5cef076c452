"""Inference latency of a network on its own device: seconds per sample of a fixed batch, after warm-up, the median
of several timed runs (a candidate's latency needs no training, and its weights do not change it)."""
from __future__ import annotations

import statistics
import time

import torch

WARMUP, RUNS, MIN_RUNS, SECONDS = 2, 7, 3, 2.0  # timed runs stop after SECONDS once MIN_RUNS are done


@torch.no_grad()
def seconds_per_sample(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """The median time of `model(batch)` in eval mode, divided by the batch's length (the model's mode is kept)."""
    device = batch.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    training = model.training
    model.eval()
    try:
        for _ in range(WARMUP):
            model(batch)
        sync()
        times, start = [], time.perf_counter()
        while len(times) < RUNS and (len(times) < MIN_RUNS or time.perf_counter() - start < SECONDS):
            t = time.perf_counter()
            model(batch)
            sync()
            times.append(time.perf_counter() - t)
    finally:
        model.train(training)
    return statistics.median(times) / len(batch)
