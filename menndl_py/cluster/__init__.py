"""Execution: the master's bookkeeping, the worker groups' evaluator, and the serial and MPI transports."""
