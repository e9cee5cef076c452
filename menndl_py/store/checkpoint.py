"""Small JSON files written atomically: a reader sees the old or the new file, never half of one."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from menndl_py.errors import UserError


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data))  # json.dumps uses the C encoder; json.dump to a file does not
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({exc})") from None
