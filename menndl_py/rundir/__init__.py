"""The run directory and its only reader and writer: the layout, results (CSV durable, HDF5 derived), the
checkpoint, the lock, the networks (best/ and final/, written whole) and their scoring on the test split."""
from menndl_py.rundir.checkpoint import Checkpoint, empty_state, read_checkpoint
from menndl_py.rundir.layout import RunDir, write_json_atomic
from menndl_py.rundir.lock import RunLock
from menndl_py.rundir.results import ResultStore

__all__ = ["Checkpoint", "ResultStore", "RunDir", "RunLock", "empty_state", "read_checkpoint", "write_json_atomic"]
