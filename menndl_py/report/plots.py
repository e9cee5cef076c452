"""Report of a run directory: PNG plots and `summary.md` in `<run>/report/`."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from menndl_py.errors import UserError  # noqa: E402
from menndl_py.records import STORED_STATUSES, Status  # noqa: E402
from menndl_py.rundir.layout import RunDir  # noqa: E402
from menndl_py.rundir.results import complete_lines  # noqa: E402
from menndl_py.search.pareto import Objectives, pareto_front  # noqa: E402

STATUS_COLORS = dict(zip(map(str, STORED_STATUSES), ("#2ca02c", "#7f7f7f", "#d62728", "#ff7f0e", "#9467bd", "#8c564b",
                                                      "#e377c2", "#17becf"), strict=True))
BEST_PLACE = 0  # matplotlib: the legend where it hides the least
OTHER_COLOR = "#17becf"
NUMERIC_COLUMNS = ("id", "rung", "budget", "fitness", "predicted", "params", "depth", "group", "submit_time",
                   "start_time", "end_time", "train_seconds", "m:latency")
GROWTH = (0.25, 0.5, 0.75, 1.0)  # the Pareto front is drawn as it stood at these shares of the run's time
TOP_COLUMNS = ("id", "fitness", "params", "depth", "train_seconds", "status")


def make_report(run_dir: str | Path) -> Path:
    """Write the five plots and `summary.md` into `run_dir/report/` and return that directory."""
    run = RunDir(run_dir)
    df = read_results(run.results)
    sur = read_surrogate(run.surrogate_csv)
    meta = run.read_run_json()
    hib = bool(meta.get("higher_is_better", False))
    label = _metric_label(meta)
    out = run.report
    out.mkdir(parents=True, exist_ok=True)
    plot_best_so_far_evaluations(df, hib, label, out / "best_so_far_evaluations.png")
    plot_best_so_far_time(df, hib, label, out / "best_so_far_time.png")
    plot_worker_utilization(df, out / "worker_utilization.png")
    plot_fitness_vs_params(df, hib, label, out / "fitness_vs_params.png")
    plot_surrogate(df, sur, label, out / "surrogate_predicted_vs_actual.png")
    if len(meta.get("objectives", ["metric"])) > 1:
        plot_pareto(df, meta, label, out / "pareto_front.png")
    (out / "summary.md").write_text(format_summary(df, sur, meta, run.path.name))
    return out


# ----------------------------------------------------------------------------------------------------- reading

def read_results(path: Path) -> pd.DataFrame:
    """The results file in completion order (file order), numeric columns coerced (bad cells become NaN);
    UserError if missing or empty. A last line without its newline is a row still being written and is left out.
    """
    if not path.is_file():
        raise UserError(f"no results file: {path}")
    text = complete_lines(path.read_bytes()).decode(errors="replace")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if df.empty:
        raise UserError(f"no evaluations in {path}")
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    df["status"] = df["status"].str.strip().replace("", "unknown") if "status" in df else "unknown"
    df.loc[df["status"] != Status.OK, "fitness"] = np.nan
    df.loc[~np.isfinite(df["fitness"]), "fitness"] = np.nan
    df = df[df["id"].notna()].reset_index(drop=True)
    if df.empty:
        raise UserError(f"no evaluations in {path}")
    df["rung"] = df["rung"].fillna(0)  # tables from before promotion: every row is rung 0
    return df


def ranked(df: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """The ok rows, best first: the highest rung first (with promotion, a candidate trained longer ranks above
    one trained less), then by fitness."""
    ok = df[df["fitness"].notna()]
    return ok.sort_values(["rung", "fitness", "id"], ascending=[False, not higher_is_better, True], kind="stable")


def read_surrogate(path: Path) -> pd.DataFrame:
    """The surrogate's refit log (empty frame with the `refit` and `spearman` columns if absent or unreadable)."""
    try:
        sur = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError):
        sur = pd.DataFrame()
    for col in ("refit", "spearman"):
        sur[col] = pd.to_numeric(sur[col], errors="coerce") if col in sur else pd.Series(dtype=float)
    return sur


# -------------------------------------------------------------------------------------------------- computing

def cost_axis(meta: dict) -> tuple[str, float, str]:
    """(column, scale, label) of the cost a Pareto front is drawn against: the latency per the task's unit
    (run.json's `latency_per`) if it is an objective, else the parameter count."""
    if "latency" in meta.get("objectives", ()):
        per, what = meta.get("latency_per", (1.0, "sample"))
        return "m:latency", float(per), f"inference seconds per {what}"
    return "params", 1.0, "trainable parameters"


def front_rows(df: pd.DataFrame, meta: dict, until: float = math.inf) -> pd.DataFrame:
    """The Pareto front (over the run's objectives) of the ok rows at the highest rung reached, among those ended
    by `until`; sorted by cost."""
    objectives = Objectives(meta.get("objectives", ["metric"]), bool(meta.get("higher_is_better", False)))
    ok = df[df["fitness"].notna() & (df["rung"] == df["rung"].max()) & (df["end_time"] <= until)]
    vectors = {i: objectives.vector(r["fitness"], {"latency": r.get("m:latency"), "parameters": r["params"]})
               for i, r in ok.iterrows()}
    vectors = {i: v for i, v in vectors.items() if v is not None and all(map(math.isfinite, v))}
    column = cost_axis(meta)[0]
    return ok.loc[pareto_front(vectors)].sort_values([column, "id"])


def best_so_far(df: pd.DataFrame, higher_is_better: bool) -> pd.Series:
    """Best fitness after each row (in row order); NaN until the first ok result, failures keep the best."""
    fit = df["fitness"].astype(float)
    best = fit.cummax() if higher_is_better else fit.cummin()
    return best.ffill()


def utilization(df: pd.DataFrame) -> tuple[float, dict[int, float]]:
    """(overall, per group) busy fraction: busy time / (groups x span), span = first start to last end."""
    timed = df.dropna(subset=["group", "start_time", "end_time"])
    if timed.empty:
        return math.nan, {}
    span = timed["end_time"].max() - timed["start_time"].min()
    busy = (timed["end_time"] - timed["start_time"]).clip(lower=0).groupby(timed["group"].astype(int)).sum()
    if span <= 0:
        return math.nan, {int(g): math.nan for g in busy.index}
    overall = float(busy.sum() / (len(busy) * span))
    return overall, {int(g): float(b / span) for g, b in busy.items()}


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation of paired values (NaN with fewer than 3 pairs or a constant side)."""
    pair = pd.DataFrame({"a": a, "b": b}).dropna()
    if len(pair) < 3 or pair["a"].nunique() < 2 or pair["b"].nunique() < 2:
        return math.nan
    return float(pair["a"].rank().corr(pair["b"].rank()))


def _start_clock(df: pd.DataFrame) -> float:
    """The time origin: the first submit_time (else start or end time)."""
    for col in ("submit_time", "start_time", "end_time"):
        if df[col].notna().any():
            return float(df[col].min())
    return math.nan


def _metric_label(meta: dict) -> str:
    metric = meta.get("metric") or "fitness"
    unit = meta.get("unit")
    return f"{metric} ({unit})" if unit else str(metric)


def _direction(hib: bool) -> str:
    return "higher is better" if hib else "lower is better"


def _color(status: str) -> str:
    return STATUS_COLORS.get(status, OTHER_COLOR)


def _note(ax, text: str) -> None:
    """Write text in the middle of empty axes and drop their meaningless y ticks."""
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.35")


# ---------------------------------------------------------------------------------------------------- plotting

def _mark_failures(ax, x: pd.Series, status: pd.Series) -> list:
    """Tick marks along the x axis for failed evaluations; returns legend handles."""
    handles = []
    for kind in sorted(set(status) - {Status.OK}):
        xs = x[status == kind]
        if xs.empty:
            continue
        ax.plot(xs, np.full(len(xs), 0.03), "|", transform=ax.get_xaxis_transform(), color=_color(kind),
                markersize=12, markeredgewidth=2)
        handles.append(Line2D([], [], ls="", marker="|", color=_color(kind), markersize=12, markeredgewidth=2,
                              label=f"failed: {kind} ({len(xs)})"))
    return handles


def _best_so_far_plot(x: pd.Series, best: pd.Series, status: pd.Series, hib: bool, label: str,
                      xlabel: str, title: str, path: Path) -> None:
    """Step line of the best so far, failures ticked along the x axis, or a note if nothing succeeded."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    handles = []
    if best.notna().any():
        handles += ax.step(x, best, where="post", color="C0", lw=2, label="best so far")
    else:
        _note(ax, "no successful evaluations")
    handles += _mark_failures(ax, x, status)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"best {label}\n({_direction(hib)})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc=BEST_PLACE, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_best_so_far_evaluations(df: pd.DataFrame, hib: bool, label: str, path: Path) -> None:
    """Best fitness so far against the number of evaluations completed; failures ticked on the x axis."""
    x = pd.Series(np.arange(1, len(df) + 1), index=df.index)
    _best_so_far_plot(x, best_so_far(df, hib), df["status"], hib, label, "evaluations completed",
                      f"Best so far by evaluation ({len(df)} evaluations)", path)


def plot_best_so_far_time(df: pd.DataFrame, hib: bool, label: str, path: Path) -> None:
    """Best fitness so far against wall-clock minutes since the first submit."""
    done = df[df["end_time"].notna()].sort_values("end_time", kind="stable")
    x = (done["end_time"] - _start_clock(df)) / 60.0
    _best_so_far_plot(x, best_so_far(done, hib), done["status"], hib, label,
                      "wall-clock minutes since first submit", "Best so far by wall-clock time", path)


def plot_worker_utilization(df: pd.DataFrame, path: Path) -> None:
    """One bar row per worker group: busy intervals coloured by status, gaps are idle."""
    overall, per_group = utilization(df)
    timed = df.dropna(subset=["group", "start_time", "end_time"])
    groups = sorted(per_group)
    row = {g: i for i, g in enumerate(groups)}
    fig, ax = plt.subplots(figsize=(9, min(max(2.5, 0.4 * len(groups) + 1.5), 20)))
    if timed.empty:
        _note(ax, "no timed evaluations")
    t0 = _start_clock(df)
    kinds = sorted(set(timed["status"]), key=lambda s: (s != Status.OK, s))
    for kind in kinds:
        part = timed[timed["status"] == kind]
        ax.barh([row[int(g)] for g in part["group"]], (part["end_time"] - part["start_time"]) / 60.0,
                left=(part["start_time"] - t0) / 60.0, height=0.7, color=_color(kind), label=kind,
                edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"group {g} ({per_group[g]:.0%})" for g in groups] if len(groups) <= 40 else [])
    ax.invert_yaxis()
    ax.set_xlabel("wall-clock minutes since first submit")
    ax.set_ylabel("worker group (busy fraction)")
    title = "Worker utilization"
    if not math.isnan(overall):
        span = (timed["end_time"].max() - timed["start_time"].min()) / 60.0
        title += f": {overall:.1%} busy over {len(groups)} groups ({span:.1f} min span)"
    ax.set_title(title)
    if not timed.empty:
        ax.legend(handles=[Patch(color=_color(k), label=k) for k in kinds], loc="upper left",
                  bbox_to_anchor=(1.01, 1), fontsize=8, title="status")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fitness_vs_params(df: pd.DataFrame, hib: bool, label: str, path: Path) -> None:
    """Fitness of ok results against parameter count (log x), the best one starred."""
    ok = df[df["fitness"].notna() & (df["params"] > 0)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if ok.empty:
        _note(ax, "no successful evaluations with a parameter count")
    else:
        ax.scatter(ok["params"], ok["fitness"], s=18, alpha=0.6, color="C0", label=f"ok results ({len(ok)})")
        best = ranked(ok, hib).iloc[0]
        ax.scatter([best["params"]], [best["fitness"]], s=220, marker="*", color="C3", edgecolor="black",
                   zorder=3, label=f"best: id {int(best['id'])}, {best['fitness']:.4g}, "
                                   f"{int(best['params']):,} params")
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc=BEST_PLACE)
    _save_against_cost(fig, ax, "trainable parameters", f"{label}\n({_direction(hib)})",
                       "Fitness against model size", path)


def plot_pareto(df: pd.DataFrame, meta: dict, label: str, path: Path) -> None:
    """The metric against the cost (latency, else parameters; log x) of every ok result, the Pareto front at the
    highest rung, and how that front grew (as it stood at GROWTH shares of the run's time)."""
    hib = bool(meta.get("higher_is_better", False))
    column, scale, cost_label = cost_axis(meta)
    ok = df[df["fitness"].notna() & df[column].notna()]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if ok.empty:
        _note(ax, "no successful evaluations with the objectives measured")
    else:
        top = ok[ok["rung"] == ok["rung"].max()]
        if len(top) < len(ok):
            lower = ok[ok["rung"] < ok["rung"].max()]
            ax.scatter(lower[column] * scale, lower["fitness"], s=10, alpha=0.35, color="0.6",
                       label=f"lower rungs ({len(lower)})")
        ax.scatter(top[column] * scale, top["fitness"], s=18, alpha=0.7, color="C0",
                   label=f"{'top rung' if len(top) < len(ok) else 'results'} ({len(top)})")
        t0, t1 = _start_clock(df), float(df["end_time"].max())
        for share in GROWTH:
            front = front_rows(df, meta, t0 + share * (t1 - t0))
            if front.empty:
                continue
            last = share == GROWTH[-1]
            ax.step(front[column] * scale, front["fitness"], where="post", color="C3" if last else "C1",
                    alpha=1.0 if last else 0.25 + 0.5 * share, lw=2.0 if last else 1.0, marker="o" if last else None,
                    label=f"front ({len(front)} networks)" if last else f"front at {share:.0%} of the time")
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc=BEST_PLACE)
    _save_against_cost(fig, ax, cost_label, f"{label}\n({_direction(hib)})", "Pareto front: accuracy against cost",
                       path)


def _save_against_cost(fig, ax, cost: str, ylabel: str, title: str, path: Path) -> None:
    """Label a plot of the metric against a cost on a log scale, save it and close it."""
    ax.set_xlabel(f"{cost} (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_surrogate(df: pd.DataFrame, sur: pd.DataFrame, label: str, path: Path) -> None:
    """Surrogate prediction against actual fitness (y = x line), plus Spearman per refit if refits exist."""
    pair = df[df["fitness"].notna() & df["predicted"].notna()]
    refits = sur.dropna(subset=["refit"])
    fig, axes = plt.subplots(1, 2 if len(refits) else 1, figsize=(12 if len(refits) else 6.5, 5), squeeze=False)
    ax = axes[0, 0]
    if pair.empty:
        _note(ax, "no predicted genome finished ok" if df["predicted"].notna().any()
              else "surrogate made no predictions")
        ax.set_xticks([])
        ax.set_title("Surrogate: predicted vs actual")
    else:
        rho = spearman(pair["predicted"], pair["fitness"])
        ax.scatter(pair["fitness"], pair["predicted"], s=18, alpha=0.7, color="C0")
        lo = float(min(pair["fitness"].min(), pair["predicted"].min()))
        hi = float(max(pair["fitness"].max(), pair["predicted"].max()))
        ax.plot([lo, hi], [lo, hi], "--", color="0.4", lw=1, label="y = x")
        ax.legend(fontsize=8, loc="upper left")
        rho_text = "n/a" if math.isnan(rho) else f"{rho:.2f}"
        ax.set_title(f"Surrogate: predicted vs actual (Spearman {rho_text}, n = {len(pair)})")
    ax.set_xlabel(f"actual {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.grid(alpha=0.3)
    if len(refits):
        ax2 = axes[0, 1]
        scored = refits.dropna(subset=["spearman"])
        if scored.empty:
            _note(ax2, "no refit was scored (needs 3 later results)")
        else:
            ax2.plot(scored["refit"], scored["spearman"], "o-", color="C1")
            ax2.set_title(f"Spearman per refit (median {scored['spearman'].median():.2f})")
        ax2.axhline(0, color="0.4", lw=1)
        ax2.set_ylim(-1.05, 1.05)
        ax2.set_xlabel("refit")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_ylabel("Spearman: predictions vs next results")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------- summary

def _cell(value, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if spec == "int":
        return f"{int(value):,}"
    return format(value, spec)


def format_summary_table(df: pd.DataFrame, higher_is_better: bool, n: int = 10) -> str:
    """Markdown table of the n best ok results (id, fitness, params, depth, train_seconds, status)."""
    ok = ranked(df, higher_is_better).head(n)
    if ok.empty:
        return "(no successful evaluations)"
    specs = {"id": "int", "rung": "int", "fitness": ".6g", "params": "int", "depth": "int", "train_seconds": ".1f",
             "status": ""}
    names = TOP_COLUMNS[:1] + ("rung",) * bool(df["rung"].max() > 0) + TOP_COLUMNS[1:]  # with promotion
    lines = ["| rank | " + " | ".join(names) + " |", "|---:|" + "---:|" * (len(names) - 1) + "---|"]
    for rank, (_, r) in enumerate(ok.iterrows(), 1):
        lines.append(f"| {rank} | " + " | ".join(_cell(r.get(c, math.nan), specs[c]) for c in names) + " |")
    return "\n".join(lines)


def _genome_block(text) -> str:
    try:
        return json.dumps(json.loads(text), indent=2)
    except (TypeError, ValueError):
        return str(text)


def _ensemble_section(meta: dict) -> list[str]:
    """The lines on the ensemble (`search.keep_top`) that the search scored when it ended, beside best/, if any."""
    ensemble = meta.get("ensemble")
    if not ensemble:
        return []
    metric = next(k.removeprefix("val_") for k in ensemble if k.startswith("val_"))
    best_test = (meta.get("best_test") or {}).get(metric)
    rows = [("best/", meta.get("best_val"), best_test),
            ("ensemble", ensemble[f"val_{metric}"], ensemble[f"test_{metric}"])]
    return ["", f"## Ensemble: {len(ensemble['members'])} networks", "",
            f"ids {', '.join(map(str, ensemble['members']))} (best first); `menndl predict --network ensemble` runs "
            f"it.", "", f"| | validation {metric} | test {metric} |", "|---|---:|---:|"] + \
        [f"| {name} | {_cell(val, '.4f')} | {_cell(test, '.4f')} |" for name, val, test in rows]


def format_summary(df: pd.DataFrame, sur: pd.DataFrame, meta: dict, name: str = "run") -> str:
    """The Markdown text of `summary.md`."""
    hib = bool(meta.get("higher_is_better", False))
    unit = meta.get("unit") or ""
    out = [f"# MENNDL run report: {name}", ""]
    out.append(f"- task: {meta.get('task', 'unknown')}")
    out.append(f"- metric: {meta.get('metric') or 'fitness'}" + (f" ({unit})" if unit else "")
               + f", {_direction(hib)}")
    if "finished" in meta:
        out.append("- state: " + ("finished" if meta["finished"] else "in progress"))

    counts = df["status"].value_counts()
    statuses = [s for s in STATUS_COLORS if s in counts] + sorted(set(counts.index) - set(STATUS_COLORS))
    trainings = f", {len(df)} trainings (rungs 0 to {int(df['rung'].max())})" if df["rung"].max() > 0 else ""
    out += ["", f"## Evaluations: {df['id'].nunique()}{trainings}", "", "| status | count |", "|---|---:|"]
    out += [f"| {s} | {int(counts[s])} |" for s in statuses]

    out += ["", "## Best", ""]
    ok = df[df["fitness"].notna()]
    if ok.empty:
        out.append("No successful evaluations.")
    else:
        best = ranked(df, hib).iloc[0]
        rung = f", rung {int(best['rung'])}" if df["rung"].max() > 0 else ""
        out.append(f"- fitness: {best['fitness']:.6g}" + (f" {unit}" if unit else "")
                   + f" (id {int(best['id'])}{rung})")
        out.append(f"- depth: {_cell(best['depth'], 'int')}")
        out.append(f"- params: {_cell(best['params'], 'int')}")
        if best.get("genome"):
            out += ["", "```json", _genome_block(best["genome"]), "```"]

    out += _ensemble_section(meta)
    out += ["", "## Top 10", "", format_summary_table(df, hib, 10)]

    plots = ["best_so_far_evaluations", "best_so_far_time", "worker_utilization", "fitness_vs_params",
             "surrogate_predicted_vs_actual"]
    if len(meta.get("objectives", ["metric"])) > 1:
        column, scale, cost_label = cost_axis(meta)
        front = front_rows(df, meta)
        out += ["", f"## Pareto front: {len(front)} networks ({', '.join(meta['objectives'])})", "",
                f"| id | {meta.get('metric') or 'fitness'} | {cost_label} | params |", "|---:|---:|---:|---:|"]
        out += [f"| {int(r['id'])} | {r['fitness']:.4g} | {r[column] * scale:.4g} | {int(r['params']):,} |"
                for _, r in front.iterrows()]
        plots.append("pareto_front")

    overall, per_group = utilization(df)
    out += ["", "## Utilization", ""]
    if math.isnan(overall):
        out.append("No timed evaluations.")
    else:
        out += [f"Overall: {overall:.1%} busy ({len(per_group)} groups).", "", "| group | busy |", "|---:|---:|"]
        out += [f"| {g} | {u:.1%} |" for g, u in sorted(per_group.items())]

    out += ["", "## Surrogate", ""]
    scored = sur["spearman"].dropna()
    pair = df[df["fitness"].notna() & df["predicted"].notna()]
    rho = spearman(pair["predicted"], pair["fitness"])
    out.append("- Spearman per refit, median: "
               + (f"{scored.median():.3f} over {len(scored)} scored refits" if len(scored) else "n/a")
               + f" ({len(sur)} refits)")
    out.append("- Spearman predicted vs actual, overall: "
               + ("n/a" if math.isnan(rho) else f"{rho:.3f}") + f" ({len(pair)} predicted results)")

    out += ["", "## Throughput", ""]
    t0 = _start_clock(df)
    minutes = (df["end_time"].max() - t0) / 60.0
    if np.isfinite(minutes) and minutes > 0:
        out.append(f"{len(df) / minutes:.2f} evaluations per minute ({len(df)} in {minutes:.1f} minutes).")
    else:
        out.append("n/a (no time span).")

    out += ["", "## Plots", ""]
    out += [f"![{p}]({p}.png)" for p in plots]
    return "\n".join(out) + "\n"
