"""A rank's CPU threads: a launcher's binding that would make them share fewer CPUs is said, in one line. A network
laid out on the CPU: 2-D convolutions channels-last, the same outputs; 3-D ones as they were; for inference, batch
normalisations folded into the convolutions before them, the same outputs."""
import copy
import os
import subprocess
import sys

import torch
import torch.nn as nn

from menndl_py.train.device import laid_out

SET_THREADS = """
import os, sys
os.sched_setaffinity(0, {cpus})
from menndl_py.train.device import set_threads
print(set_threads({threads}, 1))
"""


def threads_in(cpus: set, threads):
    done = subprocess.run([sys.executable, "-c", SET_THREADS.format(cpus=cpus, threads=threads)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout), done.stderr


def test_threads_past_the_binding_are_said_in_one_line():
    n, err = threads_in({0}, 2)
    assert n == 2
    assert err == ("[menndl] cluster.threads_per_rank is 2, but the launcher bound this process to 1 CPU (0), which "
                   "its threads will share: launch with 'mpirun --bind-to none' or 'srun --cpus-per-task=2'\n")
    assert threads_in(set(range(os.cpu_count())), 1) == (1, "")
    assert threads_in({0}, None) == (1, "")  # by default a rank takes the CPUs it is bound to


def test_a_2d_conv_net_runs_channels_last_on_the_cpu_with_the_same_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    x = torch.randn(5, 3, 16, 16)
    nhwc = laid_out(copy.deepcopy(net), torch.device("cpu"))
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc[0].weight.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), net(x), rtol=1e-5, atol=1e-5)


def test_a_3d_conv_net_keeps_its_layout():
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Flatten())
    laid_out(net, torch.device("cpu"))
    assert net[0].weight.is_contiguous()
    assert net(torch.randn(2, 1, 5, 5, 5)).shape == (2, 4 * 27)


def trained_statistics(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """`net` after a few training-mode passes, so its batch normalisations hold statistics of their own."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x)
    return net.eval()


def test_for_inference_each_batch_norm_after_a_convolution_is_folded_into_it_with_the_same_outputs():
    torch.manual_seed(0)
    x2, x3 = torch.randn(6, 3, 16, 16) * 2 + 1, torch.randn(4, 1, 6, 6, 6)
    net2 = trained_statistics(nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ELU(), nn.Dropout2d(0.1)),
        nn.MaxPool2d(2), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)), x2)
    net3 = trained_statistics(nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.Flatten()), x3)
    for net, x in ((net2, x2), (net3, x3)):
        folded = laid_out(copy.deepcopy(net).train(), torch.device("cpu"), inference=True)
        assert not folded.training
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    kinds = [type(m).__name__ for m in laid_out(copy.deepcopy(net2), torch.device("cpu"), True).modules()]
    assert kinds.count("BatchNorm2d") == 1 and kinds.count("Identity") == 1  # the one after a pool stays
    batchwise = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with torch.no_grad():
        expected = batchwise(x2)
        torch.testing.assert_close(laid_out(batchwise, torch.device("cpu"), inference=True)(x2), expected)
    assert isinstance(batchwise[1], nn.BatchNorm2d)  # it has no statistics to fold: it keeps normalising by the batch's
