"""Tests of menndl_py.report.plots: plots written and readable, summary facts, utilization arithmetic."""

import json
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from menndl_py.errors import UserError  # noqa: E402
from menndl_py.report.plots import (  # noqa: E402
    best_so_far,
    format_summary_table,
    make_report,
    read_results,
    utilization,
)

PNGS = ("best_so_far_evaluations.png", "best_so_far_time.png", "worker_utilization.png",
        "fitness_vs_params.png", "surrogate_predicted_vs_actual.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 24 evaluations in completion order; fitness only for ok rows. Lowest fitness is id 17, highest is id 4.
STATUSES = ["ok", "ok", "refused", "ok", "ok", "error", "ok", "ok", "timeout", "ok", "ok", "oom",
            "ok", "ok", "nonfinite", "ok", "ok", "ok", "error", "ok", "ok", "refused", "ok", "ok"]
FITNESS = {0: 0.52, 1: 0.47, 3: 0.61, 4: 0.91, 6: 0.30, 7: 0.33, 9: 0.21, 10: 0.25, 12: 0.19, 13: 0.44,
           15: 0.12, 16: 0.09, 17: 0.0412, 19: 0.06, 20: 0.07, 22: 0.05, 23: 0.08}
T0 = 1_700_000_000.0


def genome_json(i):
    return json.dumps({"layers": [{"type": "conv", "filters": 16 * (1 + i % 4)}, {"type": "dense", "units": 64}],
                       "optimizer": {"lr": 1e-3}})


def build_rows(statuses=STATUSES, fitness=FITNESS, groups=3):
    """Rows as the master writes them: each group runs its jobs back to back with small idle gaps."""
    rng = np.random.default_rng(7)
    clock = {g: T0 + 2.0 * g for g in range(groups)}
    rows = []
    for i, status in enumerate(statuses):
        g = i % groups
        submit = clock[g]
        start = submit + 1.0
        duration = 0.5 if status == "refused" else 30.0 + 10.0 * (i % 5)
        end = start + duration
        clock[g] = end + 3.0
        fit = fitness.get(i) if status == "ok" else None
        predicted = None if i < 6 or i % 4 == 1 or fit is None else round(fit + 0.08 * rng.standard_normal(), 4)
        rows.append({
            "id": i, "genome_hash": f"{i:016x}", "parents": "" if i < 6 else f"{i - 6};{i - 5}",
            "origin": "random" if i < 6 else "offspring", "status": status, "fitness": fit,
            "predicted": predicted, "screened": int(predicted is not None),
            "params": 1000 * (i + 1) ** 2 if status != "refused" else None,
            "flops": 5000 * (i + 1) ** 2, "depth": 2 + i % 6, "group": g if status != "refused" else None,
            "host": f"node{g:02d}", "ranks": 2, "submit_time": submit, "start_time": start, "end_time": end,
            "train_seconds": duration - 2.0 if status == "ok" else None, "epochs": 5 if status == "ok" else 0,
            "m:val_mae": fit, "message": "" if status == "ok" else f"{status}: something, with a comma",
            "genome": genome_json(i),
            "curve": json.dumps([{"epoch": 1, "train_loss": 1.0, "seconds": 3.0}]) if status == "ok" else "[]",
        })
    return rows


def write_run(path, rows, meta=None, surrogate=None):
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    run = {"task": "formation_energy", "metric": "val_mae", "unit": "eV/atom", "higher_is_better": False,
           "world_size": 7, "groups": 3, "finished": False}
    run.update(meta or {})
    (path / "run.json").write_text(json.dumps(run))
    if surrogate is not None:
        pd.DataFrame(surrogate).to_csv(path / "surrogate.csv", index=False)
    return path


SURROGATE = [
    {"refit": 1, "n_results": 6, "n_train": 4, "fit_seconds": 0.02, "spearman": 0.4, "n_scored": 4},
    {"refit": 2, "n_results": 12, "n_train": 8, "fit_seconds": 0.03, "spearman": 0.8, "n_scored": 5},
    {"refit": 3, "n_results": 18, "n_train": 13, "fit_seconds": 0.03, "spearman": 0.6, "n_scored": 4},
    {"refit": 4, "n_results": 22, "n_train": 16, "fit_seconds": 0.04, "spearman": None, "n_scored": 2},
]


@pytest.fixture
def figure_titles(monkeypatch):
    """Record the axes titles and texts of every figure saved, keyed by file name."""
    seen = {}
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        seen[str(fname).rsplit("/", 1)[-1]] = [ax.get_title() for ax in self.axes] + [
            t.get_text() for ax in self.axes for t in ax.texts]
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def summary_section(text, heading):
    """Lines of one `## heading` section of summary.md."""
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def status_counts(text):
    return {s: int(n) for s, n in re.findall(r"^\| (\w+) \| (\d+) \|$", summary_section(text, "Evaluations"), re.M)}


def assert_valid_pngs(report):
    for name in PNGS:
        path = report / name
        assert path.is_file(), name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name


def test_all_plots_written_and_readable(tmp_path, figure_titles):
    run = write_run(tmp_path / "run1", build_rows(), surrogate=SURROGATE)
    report = make_report(run)
    assert report == run / "report"
    assert_valid_pngs(report)
    assert (report / "summary.md").is_file()
    assert set(figure_titles) == set(PNGS)
    assert any("Spearman per refit (median 0.60)" in t for t in figure_titles["surrogate_predicted_vs_actual.png"])
    # make_report closes every figure it opens
    assert matplotlib.pyplot.get_fignums() == []


def test_summary_best_lower_is_better(tmp_path):
    text = (make_report(write_run(tmp_path / "low", build_rows(), surrogate=SURROGATE)) / "summary.md").read_text()
    best = summary_section(text, "Best")
    assert "- fitness: 0.0412 eV/atom (id 17)" in best
    assert "- depth: 7" in best  # 2 + 17 % 6
    assert f"- params: {1000 * 18 ** 2:,}" in best
    assert json.loads(re.search(r"```json\n(.*?)```", best, re.S).group(1)) == json.loads(genome_json(17))
    assert "task: formation_energy" in text and "val_mae (eV/atom), lower is better" in text
    assert "state: in progress" in text
    top = summary_section(text, "Top 10").strip().splitlines()
    assert top[2].startswith("| 1 | 17 | 0.0412 |") and top[3].startswith("| 2 | 22 | 0.05 |")
    assert len(top) == 12  # header, rule, 10 rows


def test_summary_best_higher_is_better(tmp_path):
    run = write_run(tmp_path / "high", build_rows(), meta={"higher_is_better": True, "finished": True})
    text = (make_report(run) / "summary.md").read_text()
    assert "- fitness: 0.91 eV/atom (id 4)" in summary_section(text, "Best")
    assert "higher is better" in text and "state: finished" in text
    assert summary_section(text, "Top 10").strip().splitlines()[2].startswith("| 1 | 4 | 0.91 |")


def test_summary_shows_the_ensemble_beside_the_best(tmp_path):
    meta = {"higher_is_better": True, "best_val": 0.7393, "best_test": {"defect_f1": 0.563, "mean_iou": 0.4},
            "ensemble": {"members": [0, 22, 11], "calibration": {}, "val_defect_f1": 0.7269,
                         "test_defect_f1": 0.6214}}
    text = (make_report(write_run(tmp_path / "ens", build_rows(), meta=meta)) / "summary.md").read_text()
    assert summary_section(text, "Ensemble: 3 networks").strip().splitlines() == [
        "ids 0, 22, 11 (best first); `menndl predict --network ensemble` runs it.", "",
        "| | validation defect_f1 | test defect_f1 |", "|---|---:|---:|",
        "| best/ | 0.7393 | 0.5630 |", "| ensemble | 0.7269 | 0.6214 |"]
    assert "## Ensemble" not in (make_report(write_run(tmp_path / "none", build_rows())) / "summary.md").read_text()


def test_status_counts(tmp_path):
    text = (make_report(write_run(tmp_path / "r", build_rows())) / "summary.md").read_text()
    assert status_counts(text) == {"ok": 17, "refused": 2, "error": 2, "nonfinite": 1, "timeout": 1, "oom": 1}
    assert "## Evaluations: 24" in text


def test_utilization_hand_computed():
    df = pd.DataFrame({
        "group": [0, 1, 0, np.nan, 2.0],
        "start_time": [100.0, 102.0, 112.0, 105.0, 104.0],
        "end_time": [110.0, 106.0, 120.0, 105.5, 104.0],
    })
    overall, per_group = utilization(df)
    # span 100..120 = 20 s; busy: group 0 = 10 + 8, group 1 = 4, group 2 = 0; the row without a group is ignored
    assert per_group == {0: pytest.approx(18 / 20), 1: pytest.approx(4 / 20), 2: 0.0}
    assert overall == pytest.approx(22 / (3 * 20))


def test_utilization_figure_and_summary_match(tmp_path, figure_titles):
    rows = build_rows(statuses=["ok", "ok", "error"], fitness={0: 1.0, 1: 2.0}, groups=2)
    for row, (group, start, end) in zip(rows, [(0, 100.0, 110.0), (1, 102.0, 106.0), (0, 112.0, 120.0)]):
        row.update(group=group, submit_time=start - 1.0, start_time=start, end_time=end)
    report = make_report(write_run(tmp_path / "tiny", rows))
    assert utilization(read_results(tmp_path / "tiny" / "results.csv")) == (
        pytest.approx(0.55), {0: pytest.approx(0.9), 1: pytest.approx(0.2)})
    assert "55.0% busy over 2 groups" in figure_titles["worker_utilization.png"][0]
    util = summary_section((report / "summary.md").read_text(), "Utilization")
    assert "Overall: 55.0% busy (2 groups)" in util
    assert "| 0 | 90.0% |" in util and "| 1 | 20.0% |" in util


def test_surrogate_spearman_in_summary(tmp_path):
    rows = build_rows()
    text = (make_report(write_run(tmp_path / "s", rows, surrogate=SURROGATE)) / "summary.md").read_text()
    pairs = [(r["predicted"], r["fitness"]) for r in rows if r["predicted"] is not None]
    expected = spearmanr(*zip(*pairs)).statistic
    section = summary_section(text, "Surrogate")
    assert f"overall: {expected:.3f} ({len(pairs)} predicted results)" in section
    assert "median: 0.600 over 3 scored refits (4 refits)" in section


def test_best_so_far_ignores_failures():
    df = pd.DataFrame({"fitness": [np.nan, 0.5, np.nan, 0.7, 0.3, np.nan]})
    assert best_so_far(df, False).tolist()[1:] == [0.5, 0.5, 0.5, 0.3, 0.3]
    assert math.isnan(best_so_far(df, False)[0])
    assert best_so_far(df, True).tolist()[1:] == [0.5, 0.5, 0.7, 0.7, 0.7]


def test_zero_ok_results(tmp_path, figure_titles):
    statuses = ["refused", "error", "oom", "timeout", "nonfinite", "error"]
    run = write_run(tmp_path / "bad", build_rows(statuses=statuses, fitness={}))
    report = make_report(run)
    assert_valid_pngs(report)
    text = (report / "summary.md").read_text()
    assert "No successful evaluations." in text
    assert "(no successful evaluations)" in summary_section(text, "Top 10")
    assert status_counts(text) == {"refused": 1, "error": 2, "nonfinite": 1, "timeout": 1, "oom": 1}
    assert "surrogate made no predictions" in figure_titles["surrogate_predicted_vs_actual.png"]
    assert "no successful evaluations" in figure_titles["best_so_far_evaluations.png"]


def test_missing_optional_inputs_and_empty_cells(tmp_path, figure_titles):
    """No surrogate.csv, a sparse run.json, NaN params/depth/predicted on ok rows: still a report."""
    rows = build_rows()
    for row in rows[:5]:
        row.update(params=None, depth=None, predicted=None, train_seconds=None)
    run = write_run(tmp_path / "sparse", rows)
    (run / "run.json").write_text(json.dumps({"metric": "val_acc", "higher_is_better": True}))
    report = make_report(run)
    assert_valid_pngs(report)
    text = (report / "summary.md").read_text()
    assert "- fitness: 0.91 (id 4)" in text and "- depth: \n" in text
    assert "Spearman per refit, median: n/a (0 refits)" in text
    surrogate = figure_titles["surrogate_predicted_vs_actual.png"]
    assert len(surrogate) == 1 and surrogate[0].startswith("Surrogate: predicted vs actual (Spearman")  # one panel
    assert "evaluations per minute" in text


def test_format_summary_table(tmp_path):
    df = read_results(write_run(tmp_path / "r", build_rows()) / "results.csv")
    table = format_summary_table(df, higher_is_better=True, n=3).splitlines()
    assert len(table) == 5
    assert [int(line.split("|")[2]) for line in table[2:]] == [4, 3, 0]
    assert table[2] == f"| 1 | 4 | 0.91 | {1000 * 25:,} | 6 | 68.0 | ok |"
    assert format_summary_table(df, higher_is_better=False).splitlines()[2].startswith("| 1 | 17 | 0.0412 |")


def test_missing_results_raises_user_error(tmp_path):
    write_run(tmp_path / "r", build_rows())
    (tmp_path / "r" / "results.csv").unlink()
    with pytest.raises(UserError, match="results.csv"):
        make_report(tmp_path / "r")


def test_header_only_results_raises_user_error(tmp_path):
    run = write_run(tmp_path / "r", build_rows())
    header = (run / "results.csv").read_text().splitlines()[0]
    (run / "results.csv").write_text(header + "\n")
    with pytest.raises(UserError, match="results.csv"):
        make_report(run)


def test_row_being_written_is_left_out(tmp_path):
    """An in-progress run whose last line has no newline yet: that row is skipped, the rest reported."""
    run = write_run(tmp_path / "r", build_rows())
    text = (run / "results.csv").read_text()
    (run / "results.csv").write_text(text[:-150])
    summary = (make_report(run) / "summary.md").read_text()
    assert "## Evaluations: 23" in summary and "(id 17)" in summary


def test_with_promotion_the_best_is_at_the_highest_rung(tmp_path):
    rows = build_rows()
    for row in rows:
        row["rung"] = 0
    rows.append({**rows[9], "rung": 1, "fitness": 0.15, "m:val_mae": 0.15})  # id 9 trained on: 0.21 -> 0.15
    text = (make_report(write_run(tmp_path / "rungs", rows)) / "summary.md").read_text()
    assert "## Evaluations: 24, 25 trainings (rungs 0 to 1)" in text
    assert "- fitness: 0.15 eV/atom (id 9, rung 1)" in summary_section(text, "Best")  # not id 17's 0.0412 at rung 0
    top = summary_section(text, "Top 10").strip().splitlines()
    assert top[0].startswith("| rank | id | rung | fitness |") and top[2].startswith("| 1 | 9 | 1 | 0.15 |")
