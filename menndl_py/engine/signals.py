"""Preemption: SIGUSR1 (Slurm's `--signal=B:USR1@120`, forwarded to the step) or SIGTERM asks a search to stop.

The master stops handing out work and tells the groups to stop; a group abandons its candidate at its next
agreement point; what finished is stored, what was abandoned stays in flight and is sent again on resume.
"""
from __future__ import annotations

import signal
from typing import Optional

EXIT_STOPPED = 3  # `menndl run` stopped early by a signal; the run can be resumed


class StopRequest:
    """Records the first stop signal this process receives."""

    signal_name: Optional[str] = None

    @classmethod
    def install(cls) -> None:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, cls._handle)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        cls.signal_name = cls.signal_name or signal.Signals(signum).name

    @classmethod
    def requested(cls) -> bool:
        return cls.signal_name is not None
