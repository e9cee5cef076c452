"""What every task on a user's files shares: its data are the user's file or folder (`task.options.path`), read
in place and never made."""
from __future__ import annotations

from pathlib import Path

from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.tasks.base import Task


class FileTask(Task):
    """A task whose data set is the user's `path`."""

    @property
    def data_path(self) -> Path:
        return Path(self.options.path)

    def make_data(self, share: Solo = Solo()) -> str:
        """Called only when `path` is missing: nothing can make the user's data."""
        raise UserError(f"{self.data_path}: no such file or folder (task.options.path; relative paths are read "
                        f"from the config file's folder)")
