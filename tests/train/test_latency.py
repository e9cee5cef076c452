"""train.latency: a network's inference time per sample, as `menndl predict` runs it (on a folded copy, the network
itself left alone), timed enough runs and no more."""
import time

import torch

from menndl_py.train import latency


class Counted(torch.nn.Module):
    """A linear layer that counts the calls of it and of its copies (and can take its time)."""

    calls = 0

    def __init__(self, pause: float = 0.0):
        super().__init__()
        self.layer, self.pause = torch.nn.Linear(4, 2), pause
        Counted.calls = 0

    def forward(self, x):
        Counted.calls += 1
        time.sleep(self.pause)
        return self.layer(x)


def test_a_fast_network_is_timed_many_times_and_its_mode_is_kept():
    model = Counted().train()
    seconds = latency.seconds_per_sample(model, torch.zeros(8, 4))
    assert seconds > 0 and model.training
    assert latency.MIN_RUNS < Counted.calls - latency.WARMUP <= latency.MAX_RUNS


def test_a_network_slower_than_the_window_is_timed_the_fewest_times():
    model = Counted(pause=latency.WINDOW).eval()
    seconds = latency.seconds_per_sample(model, torch.zeros(5, 4))
    assert Counted.calls == latency.WARMUP + latency.MIN_RUNS and not model.training
    assert seconds >= latency.WINDOW / 5


def test_the_timed_network_has_its_batch_normalisations_folded_and_the_network_itself_is_unchanged():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).train()
    model(torch.randn(8, 1, 12, 12))  # running statistics of its own
    before = {k: v.clone() for k, v in model.state_dict().items()}
    normalised = []
    model[1].register_forward_hook(lambda *_: normalised.append(1))  # copied with the module, gone when folded
    assert latency.seconds_per_sample(model, torch.zeros(4, 1, 12, 12)) > 0
    assert not normalised
    assert model.training and isinstance(model[1], torch.nn.BatchNorm2d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and before.keys() == \
        model.state_dict().keys()
