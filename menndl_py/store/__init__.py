"""The run directory: results appended and flushed one by one, a small checkpoint, the best model."""
from menndl_py.store.checkpoint import Checkpoint, read_checkpoint, write_json_atomic
from menndl_py.store.results import ResultStore

__all__ = ["Checkpoint", "ResultStore", "read_checkpoint", "write_json_atomic"]
