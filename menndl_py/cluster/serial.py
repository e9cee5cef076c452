"""The same master and worker logic in one process: laptops, tests, and the default without a launcher."""
from __future__ import annotations

from menndl_py.cluster.master import Master
from menndl_py.cluster.worker import Evaluator


def run_serial(master: Master, evaluator: Evaluator) -> None:
    while (work := master.next_work(group=0)) is not None:
        master.on_result(evaluator.evaluate(work))
