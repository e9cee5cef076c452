"""A rank's CPU threads: a launcher's binding that would make them share fewer CPUs is said, in one line."""
import os
import subprocess
import sys

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
