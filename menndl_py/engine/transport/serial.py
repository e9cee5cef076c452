"""The same master and worker logic in one process: laptops, tests, and the default without a launcher."""
from __future__ import annotations

import time

from menndl_py.engine.evaluator import Evaluator
from menndl_py.engine.master import Master
from menndl_py.engine.signals import StopRequest


def run_serial(master: Master, evaluator: Evaluator) -> None:
    work = master.next_work(group=0)
    while work is not None:
        result = evaluator.evaluate(work)
        start = time.perf_counter()
        master.on_result(result)
        if StopRequest.requested():
            master.stop(StopRequest.signal_name)
        work = master.next_work(group=0)
        master.handling_seconds.append(time.perf_counter() - start)
        while master.catch_up():  # after the reply, as the MPI master does when idle
            pass
