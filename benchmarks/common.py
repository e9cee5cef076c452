"""What the benchmark scripts share: this checkout's menndl_py first on the path, and its version."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # measure this checkout's menndl_py, whatever the environment has installed


def code_version() -> str:
    import menndl_py

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"menndl_py from {Path(menndl_py.__file__).parent} (git {commit or 'unknown'})"
