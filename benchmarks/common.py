"""What the benchmark scripts share: this checkout's menndl_py first on the path, and its version."""
import os
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


def table(header: list[str], rows: list[list], title: str = "") -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = [title] if title else []
    for n, r in enumerate(cells):
        out.append(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            out.append("|".join("-" * (w + 2) for w in widths))
    return "\n".join(out)


def machine_load() -> str:
    """The load averages the figures were measured under."""
    return "machine load (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
