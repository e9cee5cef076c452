"""train.latency: a network's inference time per sample, its mode kept, timed enough runs and no more."""
import time

import torch

from menndl_py.train import latency


class Counted(torch.nn.Module):
    """A linear layer that counts its calls (and can take its time)."""

    def __init__(self, pause: float = 0.0):
        super().__init__()
        self.layer, self.pause, self.calls = torch.nn.Linear(4, 2), pause, 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.pause)
        return self.layer(x)


def test_a_fast_network_is_timed_many_times_and_its_mode_is_kept():
    model = Counted().train()
    seconds = latency.seconds_per_sample(model, torch.zeros(8, 4))
    assert seconds > 0 and model.training
    assert latency.MIN_RUNS < model.calls - latency.WARMUP <= latency.MAX_RUNS


def test_a_network_slower_than_the_window_is_timed_the_fewest_times():
    model = Counted(pause=latency.WINDOW).eval()
    seconds = latency.seconds_per_sample(model, torch.zeros(5, 4))
    assert model.calls == latency.WARMUP + latency.MIN_RUNS and not model.training
    assert seconds >= latency.WINDOW / 5
