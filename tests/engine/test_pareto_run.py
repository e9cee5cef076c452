"""A search on several objectives, end to end in one process: every result timed once, the front's networks kept
(and mended after a crash), the default network, the report's front, and a front member chosen by id."""
import csv
import json

import pytest
import torch

from menndl_py import cli, config
from menndl_py.commands.run import search
from menndl_py.genome import Genome
from menndl_py.rundir import RunDir
from menndl_py.rundir.networks import save_network, settle_members, stage_network


def dominated(a, b) -> bool:
    return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))


@pytest.fixture(scope="module")
def run(tmp_path_factory, elemnet_data_dir):
    """ElemNet on 600 compounds, 12 networks over 3 rungs of epochs, on MAE, latency and parameters; a latency
    limit no network meets, so the default network is the fastest at the top rung."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pareto")
    cfg = config.from_dict({
        "run": {"name": "pareto", "directory": str(root / "runs")},
        "task": {"name": "elemnet", "data_dir": str(elemnet_data_dir),
                 "options": {"train_size": 600, "val_size": 300, "test_size": 300}},
        "search": {"population": 4, "max_evaluations": 12, "seed": 1, "surrogate_min_results": 4,
                   "space": {"depth": [1, 3], "width": [16, 32, 64, 128], "batch_size": [64]},
                   "objectives": ["metric", "latency", "parameters"], "max_latency": 1e-12},
        "training": {"epochs": 4, "rungs": {"unit": "epochs", "min_budget": 1, "max_budget": 4, "eta": 2}}})
    assert search(cfg, progress=False) == 0
    return cfg


def rows(cfg):
    with open(cfg.run_dir / "results.csv") as fh:
        return list(csv.DictReader(fh))


def test_each_network_is_timed_once_and_keeps_its_latency_at_every_rung(run):
    latency = {}
    for row in rows(run):
        assert row["status"] == "ok"
        assert float(row["m:latency"]) > 0
        assert latency.setdefault(row["id"], row["m:latency"]) == row["m:latency"]
    assert len(latency) == 12


def test_the_run_keeps_a_network_per_member_of_the_front_at_the_top_rung(run):
    top = [r for r in rows(run) if r["rung"] == "2"]
    scores = {int(r["id"]): (-float(r["fitness"]), -float(r["m:latency"]), -float(r["params"])) for r in top}
    front = sorted(i for i, v in scores.items() if not any(dominated(v, w) for w in scores.values()))
    assert front and RunDir.member_ids(RunDir(run.run_dir).pareto) == front
    for work_id in front:
        record = json.loads((RunDir(run.run_dir).pareto / str(work_id) / "result.json").read_text())
        assert record["id"] == work_id and record["rung"] == 2


def test_the_default_network_is_the_fastest_when_none_meets_the_latency_limit(run):
    top = [r for r in rows(run) if r["rung"] == "2"]
    fastest = min(top, key=lambda r: (float(r["m:latency"]), int(r["id"])))
    record = json.loads((RunDir(run.run_dir).best / "result.json").read_text())
    assert len(top) >= 2 and record["id"] == int(fastest["id"])
    # (whether the fastest is also the most accurate here depends on timings; test_pareto.py's unit test of
    # Objectives.preference and of the ladder's leader holds cases where they differ)


def test_the_report_draws_the_front(run):
    assert cli.main(["report", str(run.run_dir)]) == 0
    report = RunDir(run.run_dir).report
    assert (report / "pareto_front.png").stat().st_size > 10_000
    summary = (report / "summary.md").read_text()
    assert f"## Pareto front: {len(RunDir.member_ids(RunDir(run.run_dir).pareto))} networks" in summary
    assert "seconds per 10,000 compositions" in summary


def test_a_front_member_is_exported_by_id_and_a_missing_one_is_one_line(run, tmp_path, capsys):
    member = RunDir.member_ids(RunDir(run.run_dir).pareto)[0]
    out = tmp_path / "member.pt"
    assert cli.main(["export", str(run.run_dir), "--format", "state-dict", "--output", str(out),
                     "--network", str(member)]) == 0
    assert json.loads(out.with_name("member.pt.json").read_text())["genome"] == json.loads(
        (RunDir(run.run_dir).pareto / str(member) / "genome.json").read_text())
    capsys.readouterr()
    assert cli.main(["export", str(run.run_dir), "--format", "state-dict", "--output", str(tmp_path / "x.pt"),
                     "--network", "99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no front or ensemble member 99999" in err


def test_after_a_crash_only_the_front_is_kept_and_a_staged_member_is_installed(tmp_path):
    run = RunDir(tmp_path)
    genome = Genome([{"width": 8}], {})
    weights = {"w": torch.zeros(2)}
    for work_id in (1, 2, 3):
        save_network(run.pareto / str(work_id), genome, weights, {"id": work_id})
    stage_network(run.pareto / "4", genome, weights, {"id": 4})  # stored, then the job died
    stage_network(run.pareto / "5", genome, weights, {"id": 5})  # died before its row was stored
    settle_members(run.pareto, [1, 4])
    assert run.member_ids(run.pareto) == [1, 4]
    assert json.loads((run.pareto / "4" / "result.json").read_text())["id"] == 4
    assert sorted(p.name for p in run.pareto.iterdir() if p.is_dir() and not p.is_symlink()) == sorted(
        p.resolve().name for p in (run.pareto / "1", run.pareto / "4"))


def test_a_front_member_is_retrained_by_id(run, capsys):
    member = RunDir.member_ids(RunDir(run.run_dir).pareto)[-1]
    assert cli.main(["retrain", str(run.run_dir), "--budget", "2", "--epochs", "1", "--network", str(member)]) == 0
    final = RunDir(run.run_dir).final
    assert json.loads((final / "result.json").read_text())["source"] == str(member)
    kept = RunDir(run.run_dir).pareto / str(member) / "genome.json"
    assert (final / "genome.json").read_text() == kept.read_text()
    capsys.readouterr()
    assert cli.main(["retrain", str(run.run_dir), "--network", "best"]) == 2
    assert capsys.readouterr().err.strip() == \
        "menndl: error: --network: must be the id of one of the run's evaluations, got 'best'"


def test_any_evaluation_is_retrained_by_id_and_on_from_its_kept_state(run, capsys):
    rundir = RunDir(run.run_dir)
    stored = {int(r["id"]): r["genome"] for r in rows(run)}
    others = sorted(set(stored) - set(rundir.member_ids(rundir.pareto)))
    with_state = sorted(int(p.stem) for p in rundir.states.glob("*.pt"))
    assert with_state and set(with_state) <= set(others)
    # from scratch: the genome stored in results.csv
    assert cli.main(["retrain", str(run.run_dir), "--budget", "2", "--epochs", "1", "--network", str(others[0])]) == 0
    assert json.loads((rundir.final / "result.json").read_text())["source"] == str(others[0])
    assert Genome.from_json(json.loads((rundir.final / "genome.json").read_text())).canonical() == stored[others[0]]
    # on from a candidate's kept training state: its first epoch starts where the search left it
    args = ["retrain", str(run.run_dir), "--budget", "30", "--epochs", "1", "--network", str(with_state[0])]
    assert cli.main(args) == 0
    scratch = json.loads((rundir.final / "result.json").read_text())
    assert cli.main(args + ["--warm-start"]) == 0
    warm = json.loads((rundir.final / "result.json").read_text())
    assert warm["warm_start"] and warm["source"] == str(with_state[0]) and warm["genome_hash"] == scratch["genome_hash"]
    assert warm["curve"][0]["train_loss"] < scratch["curve"][0]["train_loss"]
    capsys.readouterr()
    assert cli.main(["retrain", str(run.run_dir), "--network", "99999"]) == 2
    assert capsys.readouterr().err.strip().endswith("results.csv: no evaluation 99999")
    # its state gone (as once it can no longer be promoted), or damaged: one-line errors
    state = rundir.states / f"{with_state[0]}.pt"
    kept = state.read_bytes()
    try:
        state.unlink()
        assert cli.main(args + ["--warm-start"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"keeps no weights of network {with_state[0]}" in err
        for damaged in (kept[:len(kept) // 2], b"", b"not a state" * 9):  # truncated, empty, not a torch file
            state.write_bytes(damaged)
            assert cli.main(args + ["--warm-start"]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"{state}: not a training state that can be read (" in err
    finally:
        state.write_bytes(kept)
