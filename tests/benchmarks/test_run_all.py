"""benchmarks/run_all.py --quick: every benchmark runs in its short mode and RESULTS.md gathers their figures."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["scale", "search_efficiency", "utilization", "trainer_overhead", "predict_throughput", "stem_simulator",
         "elasticity_solver", "localization_ceiling"]


@pytest.mark.slow
def test_quick_run_writes_results_with_commands_and_plots(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--only", ",".join(SMOKE), "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = (tmp_path / "RESULTS.md").read_text()
    for name in SMOKE:
        assert f"## {name}\n" in results
        assert f"`python benchmarks/{name}.py --quick" in results
    assert "exit 0)" in results and "exit 1)" not in results
    assert "target" in results.lower()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert any(p.startswith("search_efficiency") for p in pngs) and any(p.startswith("scale") for p in pngs), pngs
    assert all(f"]({p})" in results for p in pngs if p.startswith(("scale", "search_efficiency")))


def test_an_unknown_benchmark_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/run_all.py", "--only", "nonsense", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nonsense" in done.stderr
