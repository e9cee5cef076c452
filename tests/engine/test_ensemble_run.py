"""`search.keep_top`, end to end in one process: the run keeps the networks of the K best at the top rung (each
with the weights its row was scored with), scores and records their ensemble when the search ends, and `menndl
predict --network ensemble` averages them; `menndl retrain --network ensemble` trains each again; config and usage
errors."""
import csv
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from launchers import MENNDL, mpi_env

from menndl_py import config
from menndl_py.commands.run import make_master, search
from menndl_py.errors import UserError
from menndl_py.rundir import RunDir
from menndl_py.rundir.networks import kept_networks, load_network
from menndl_py.tasks import make_task
from menndl_py.tasks.elemnet.data import fractions
from menndl_py.train.trainer import score_split

KEEP = 2
OPTIONS = {"train_size": 600, "val_size": 300, "test_size": 300}


@pytest.fixture(scope="module")
def run(tmp_path_factory, elemnet_data_dir):
    """ElemNet on 600 compounds, 12 networks over 3 rungs of epochs, keeping the 2 best at the top rung."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ensemble")
    cfg = config.from_dict({
        "run": {"name": "ens", "directory": str(root / "runs")},
        "task": {"name": "elemnet", "data_dir": str(elemnet_data_dir), "options": OPTIONS},
        "search": {"population": 4, "max_evaluations": 12, "seed": 1, "surrogate_min_results": 4, "keep_top": KEEP,
                   "space": {"depth": [1, 3], "width": [16, 32, 64, 128], "batch_size": [64]}},
        "training": {"epochs": 4, "rungs": {"unit": "epochs", "min_budget": 1, "max_budget": 4, "eta": 2}}})
    assert search(cfg, progress=False) == 0
    return cfg


def top_rung(cfg) -> dict[int, float]:
    with open(cfg.run_dir / "results.csv") as fh:
        return {int(r["id"]): float(r["fitness"]) for r in csv.DictReader(fh) if r["rung"] == "2" and r["fitness"]}


def test_the_run_keeps_the_networks_of_the_k_best_at_the_top_rung_with_their_scored_weights(run):
    top = top_rung(run)
    assert len(top) > KEEP  # so that some were left out
    best = sorted(top, key=top.get)[:KEEP]
    kept = RunDir(run.run_dir).ensemble
    assert RunDir.member_ids(kept) == sorted(best)
    assert sorted(p.name for p in kept.iterdir() if not p.is_symlink()) == \
        sorted((kept / str(i)).resolve().name for i in best)  # the members' own directories, no leftover
    task = make_task("elemnet", OPTIONS, run.task.data_dir)
    for work_id in best:
        _, model, record = load_network(kept / str(work_id), task.space())
        assert record["id"] == work_id and record["rung"] == 2
        assert score_split(model, task, "val", 4096)["mae"] == pytest.approx(top[work_id], rel=1e-4)


def test_a_member_stored_but_not_yet_installed_when_the_job_died_is_installed_on_resume(run, tmp_path):
    """The job died after storing a top-rung row and staging its network, before putting it in place."""
    copy = config.from_dict({**run.to_dict(), "run": {"name": "ens", "directory": str(tmp_path)}})
    shutil.copytree(run.run_dir, copy.run_dir, symlinks=True)
    kept = RunDir(copy.run_dir).ensemble
    member = RunDir.member_ids(kept)[0]
    staged = (kept / str(member)).resolve()
    (kept / str(member)).unlink()  # the link, as before install_network
    (kept / ".99-staged-0123456789ab").mkdir()  # and a save's leftover of no stored row
    make_master(copy, make_task("elemnet", OPTIONS, run.task.data_dir), 1, progress=False).abandon()
    assert RunDir.member_ids(kept) == RunDir.member_ids(RunDir(run.run_dir).ensemble)
    assert (kept / str(member)).resolve() == staged
    assert sorted(p.name for p in kept.iterdir() if not p.is_symlink()) == \
        sorted((kept / str(i)).resolve().name for i in RunDir.member_ids(kept))


def test_the_ensemble_is_recorded_with_its_scores_when_the_search_ends(run):
    top = top_rung(run)
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    assert record["members"] == sorted(top, key=top.get)[:KEEP]  # best first
    task = make_task("elemnet", OPTIONS, run.task.data_dir)
    networks = kept_networks(RunDir(run.run_dir).ensemble, task.space(), task.higher_is_better)
    for split in ("val", "test"):
        x, y = (torch.as_tensor(a) for a in task.load(split))
        with torch.no_grad():
            mean = torch.stack([model(x)[:, 0] for _, _, model in networks]).mean(0)
        assert record[f"{split}_mae"] == pytest.approx(float((mean - y).abs().mean()), rel=1e-4)
    summary = json.loads((run.run_dir / "run.json").read_text())
    assert summary["ensemble"]["members"] == record["members"]


def test_predict_with_the_ensemble_averages_its_networks(run, tmp_path):
    formulas = ["NaCl", "Fe2O3", "LiFePO4", "SiO2"]
    pd.DataFrame({"formula": formulas}).to_csv(tmp_path / "in.csv", index=False)
    done = subprocess.run([MENNDL, "predict", str(run.run_dir), "in.csv", "--output", "out.csv", "--network",
                           "ensemble", "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=mpi_env())
    assert done.returncode == 0, done.stderr
    task = make_task("elemnet", OPTIONS, run.task.data_dir)
    networks = kept_networks(RunDir(run.run_dir).ensemble, task.space(), task.higher_is_better)
    x = torch.as_tensor(np.stack([fractions(f) for f in formulas]))
    with torch.no_grad():
        expected = torch.stack([model(x)[:, 0] for _, _, model in networks]).mean(0).numpy()
    predicted = pd.read_csv(tmp_path / "out.csv").filter(like="predicted").iloc[:, 0].to_numpy()
    assert np.allclose(predicted, expected, atol=1e-5)


def test_predict_names_what_is_missing_when_a_run_has_no_ensemble(run, tmp_path):
    (tmp_path / "in.csv").write_text("formula\nNaCl\n")
    record = run.run_dir / "ensemble.json"
    saved = record.read_text()
    record.unlink()
    try:
        done = subprocess.run([MENNDL, "predict", str(run.run_dir), "in.csv", "--output", "out.csv", "--network",
                               "ensemble"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=mpi_env())
    finally:
        record.write_text(saved)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"menndl: error: {record}: missing; a search with search.keep_top (2 or more) writes it when it ends"]


def test_retraining_the_ensemble_trains_each_member_again_and_predict_averages_those(run, tmp_path):
    copy = tmp_path / "ens"
    shutil.copytree(run.run_dir, copy, symlinks=True)
    (tmp_path / "in.csv").write_text("formula\nNaCl\nFe2O3\nLiFePO4\n")
    done = subprocess.run([MENNDL, "predict", str(copy), "in.csv", "--output", "none.csv", "--network",
                           "final_ensemble"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"menndl: error: {copy / 'final_ensemble.json'}: missing; 'menndl "
                                                f"retrain {copy} --network ensemble' writes it"]
    done = subprocess.run([MENNDL, "retrain", str(copy), "--network", "ensemble", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300, env=mpi_env())
    assert done.returncode == 0, done.stderr
    searched = json.loads((copy / "ensemble.json").read_text())
    record = json.loads((copy / "final_ensemble.json").read_text())
    assert sorted(record["members"]) == sorted(searched["members"]) and not record["warm_start"]
    task = make_task("elemnet", OPTIONS, run.task.data_dir)
    ours = RunDir(copy)
    for work_id in searched["members"]:
        genome, model, result = load_network(ours.final_ensemble / str(work_id), task.space())
        old_genome, old_model, _ = load_network(ours.ensemble / str(work_id), task.space())
        assert genome == old_genome and result["epochs"] == 2 and result["source"] == str(work_id)
        assert result["fitness"] == pytest.approx(score_split(model, task, "val", 4096)["mae"], rel=1e-4)
        assert not torch.equal(next(model.parameters()), next(old_model.parameters()))
    networks = kept_networks(ours.final_ensemble, task.space(), task.higher_is_better)
    x, y = (torch.as_tensor(a) for a in task.load("val"))
    with torch.no_grad():
        assert record["val_mae"] == pytest.approx(float((torch.stack([m(x)[:, 0] for _, _, m in networks]).mean(0)
                                                         - y).abs().mean()), rel=1e-4)
        expected = torch.stack([m(torch.as_tensor(np.stack([fractions(f) for f in ("NaCl", "Fe2O3", "LiFePO4")])))
                                [:, 0] for _, _, m in networks]).mean(0).numpy()
    done = subprocess.run([MENNDL, "predict", str(copy), "in.csv", "--output", "out.csv", "--network",
                           "final_ensemble", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=mpi_env())
    assert done.returncode == 0, done.stderr
    predicted = pd.read_csv(tmp_path / "out.csv").filter(like="predicted").iloc[:, 0].to_numpy()
    assert np.allclose(predicted, expected, atol=1e-5)


@pytest.mark.parametrize("settings, message", [
    ({"search": {"keep_top": 1}}, "search.keep_top: 0 (no ensemble) or at least 2 networks, got 1 (best/ keeps the "
                                  "best)"),
    ({"search": {"keep_top": 3, "objectives": ["metric", "latency"]}},
     "search.keep_top: one objective only (with several, the run keeps the Pareto front's networks in pareto/)"),
])
def test_keep_top_errors(settings, message):
    with pytest.raises(UserError) as caught:
        config.from_dict(settings)
    assert str(caught.value) == message


def test_keep_top_leaves_the_fingerprint_alone():
    assert config.from_dict({"search": {"keep_top": 4}}).fingerprint() == config.from_dict({}).fingerprint()


def test_a_task_whose_outputs_cannot_be_averaged_refuses_keep_top_before_any_work(tmp_path):
    (tmp_path / "c.yaml").write_text(f"run: {{name: kt, directory: {tmp_path / 'runs'}}}\n"
                                     f"task: {{name: crystal_graph, data_dir: {tmp_path / 'data'}}}\n"
                                     f"search: {{keep_top: 3}}\n")
    done = subprocess.run([MENNDL, "run", str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=300,
                          env=mpi_env())
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["menndl: error: search.keep_top: task crystal_graph makes no "
                                                "ensembles: each network reads the structures with its own "
                                                "neighbour cutoff"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
