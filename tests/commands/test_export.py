"""`menndl export`: a run's network as ONNX, TorchScript or a state dict, each loaded elsewhere (onnxruntime and
`torch.jit.load` in a process that cannot import menndl_py; `torch.load(weights_only=True)` into the space's
`build` of the genome in the JSON beside it) giving the run's network's outputs; the run's evaluations as an Optuna
journal; bad calls as one line, exit status 2, nothing written."""
import json
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from launchers import menndl, one_line_error

from menndl_py import cli, config
from menndl_py.commands import export as export_module
from menndl_py.commands.run import search
from menndl_py.genome import Genome
from menndl_py.rundir import RunDir
from menndl_py.rundir.networks import load_network
from menndl_py.rundir.results import read_rows
from menndl_py.tasks import make_task
from menndl_py.tasks.elemnet.data import ELEMENTS

STEM = {"task": {"name": "stem_defects", "options": {"train_images": 4, "val_images": 3, "test_images": 2, "tile": 64,
                                                     "simulator": {"image_size": 96}}},
        "search": {"space": {"depth": [2, 2], "filters": [4], "convs": [1], "kernel": [3], "dropout": [0.1],
                             "skip": [True]}},
        "training": {"epochs": 1, "eval_batch_size": 4}}
ELEMNET = {"task": {"name": "elemnet", "options": {"train_size": 600, "val_size": 300, "test_size": 300}},
           "search": {"space": {"depth": [1, 2], "width": [16, 32], "inputs": ["magpie"], "batch_norm": [True],
                                "batch_size": [64]}},
           "training": {"epochs": 1}}
RUNGS = {"task": {"name": "synthetic", "options": {"failure_rate": 0.3}},
         "search": {"population": 4, "max_evaluations": 10},
         "training": {"rungs": {"unit": "epochs", "min_budget": 1, "max_budget": 4, "eta": 2}}}
LOAD_ELSEWHERE = """
import sys
sys.modules["menndl_py"] = None  # what is loaded here must not need it
import numpy as np, onnxruntime, torch
x = torch.from_numpy(np.load("x.npy"))
np.save("onnx.npy", onnxruntime.InferenceSession("m.onnx").run(None, {"input": x.numpy()})[0])
with torch.no_grad():
    np.save("torchscript.npy", torch.jit.load("m.torchscript")(x).numpy())
"""


def make_run(root, name, data_dir, raw):
    cfg = config.from_dict({**raw, "run": {"name": name, "directory": str(root / "runs")},
                            "task": {**raw["task"], "data_dir": str(data_dir)},
                            "search": {"population": 2, "max_evaluations": 2, "seed": 3, "seed_genomes": [],
                                       **raw["search"]}})
    assert search(cfg, progress=False) == 0
    return cfg.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, elemnet_data_dir):
    """A tiny real search of each kind, in this process: STEM (an encoder–decoder with a skip and dropout),
    ElemNet (its magpie descriptor stage holds a buffer), and a synthetic one with rungs and failures."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    return {"stem": make_run(root, "stem", root / "data", STEM),
            "elemnet": make_run(root, "elemnet", elemnet_data_dir, ELEMNET),
            "rungs": make_run(root, "rungs", root / "data", RUNGS)}


def export(*args, cwd, monkeypatch, capsys) -> tuple[int, str]:
    """`menndl export ARGS` in this process, from `cwd`: (exit status, stderr)."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = cli.main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def inputs(run_dir) -> np.ndarray:
    """Real inputs of the run's task: validation images (whole, not the training tiles), or compositions."""
    cfg = config.load(RunDir(run_dir).config)
    x, _ = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir).load("val")
    return np.ascontiguousarray(x[:40])


@pytest.mark.parametrize("kind", ["stem", "elemnet"])
def test_each_format_loaded_elsewhere_gives_the_runs_outputs(runs, kind, tmp_path, monkeypatch, capsys):
    run_dir = runs[kind]
    for fmt in export_module.NETWORK_FORMATS:
        code, err = export(run_dir, "--format", fmt, "--output", tmp_path / f"m.{fmt}", cwd=tmp_path,
                           monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err
    x = inputs(run_dir)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-c", LOAD_ELSEWHERE], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr

    facts = json.loads((tmp_path / "m.state-dict.json").read_text())
    task = make_task(facts["task"]["name"], facts["task"]["options"])
    rebuilt = task.space().build(Genome.from_json(facts["genome"]))
    rebuilt.load_state_dict(torch.load(tmp_path / "m.state-dict", weights_only=True))
    genome, model, record = load_network(RunDir(run_dir).best, task.space())
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        outputs = {"state-dict": rebuilt.eval()(torch.from_numpy(x)).numpy(),
                   **{fmt: np.load(tmp_path / f"{fmt}.npy") for fmt in ("onnx", "torchscript")}}
    assert expected.shape[0] == len(x) and np.abs(expected).max() > 1e-3
    for fmt, got in outputs.items():
        assert got.shape == expected.shape, fmt
        assert np.abs(got - expected).max() <= 1e-5, fmt

    assert facts["genome"] == genome.to_json() and facts["network"] == "best" and facts["id"] == record["id"]
    assert facts["metric"]["validation"] == record["fitness"] == record[f"val_{task.metric}"]
    assert facts["metric"]["test"] == json.loads(RunDir(run_dir).run_json.read_text())["best_test"][task.metric]
    if kind == "stem":  # any batch, any height and width (multiples of 2 for two levels): as AtomAI takes them
        assert facts["input"]["shape"] == [None, 1, None, None] and facts["output"]["shape"] == [None, 5, None, None]
        assert facts["class_names"] == list(task.class_names) and expected.shape == (len(x), 5, 96, 96)
        assert "zero mean and unit standard deviation" in facts["input"]["normalisation"]
        assert "threshold_dopant" in facts["result"]
    else:
        assert facts["input"]["shape"] == [None, 86] and facts["output"]["shape"] == [None, 1]
        assert facts["input"]["columns"] == list(ELEMENTS) and "class_names" not in facts
        assert any(name.endswith("descriptors") for name, _ in rebuilt.named_buffers())


def test_the_optuna_journal_has_a_trial_per_evaluation_id(runs, tmp_path, monkeypatch, capsys):
    for kind in ("rungs", "stem"):
        code, err = export(runs[kind], "--format", "optuna-journal", "--output", tmp_path / kind, cwd=tmp_path,
                           monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "rungs")))
    study = optuna.load_study(study_name="rungs", storage=storage)
    rows = read_rows(RunDir(runs["rungs"]).results)
    top = {}
    for row in rows:
        if row["rung"] >= top.get(row["id"], {"rung": -1})["rung"]:
            top[row["id"]] = row
    assert len(rows) > len(top) == 10 == len(study.trials)  # promoted candidates have a row per rung
    ok = {i: row["fitness"] for i, row in top.items() if row["status"] == "ok"}
    assert 0 < len(ok) < len(top)  # some failed
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.best_value == min(ok.values())
    assert [t.state == optuna.trial.TrialState.COMPLETE for t in study.trials] == [i in ok for i in sorted(top)]
    for trial in study.trials:
        mine = [row for row in rows if row["id"] == trial.number]
        assert trial.intermediate_values == {r["rung"]: r["fitness"] for r in mine if r["status"] == "ok"}
        assert trial.user_attrs["rung"] == max(r["rung"] for r in mine)
        assert trial.params["depth"] == len(json.loads(trial.user_attrs["genome"])["layers"])
        assert trial.duration.total_seconds() >= 0
    assert max(len(t.intermediate_values) for t in study.trials) > 1

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "stem")))
    study = optuna.load_study(study_name="stem", storage=storage)
    fitness = [row["fitness"] for row in read_rows(RunDir(runs["stem"]).results)]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and len(study.trials) == 2
    assert study.best_value == max(fitness) and study.user_attrs["metric"] == "defect_f1"
    assert study.best_trial.params["layer1.filters"] == 4 and study.best_trial.intermediate_values == {}


@pytest.mark.parametrize("args, expected", [
    (["nowhere", "--format", "onnx", "--output", "m.onnx"], "nowhere: not a run directory (no config.yaml)"),
    (["RUNS/rungs", "--format", "onnx", "--output", "m.onnx"],
     "RUNS/rungs/best/genome.json: missing; the run has no trained network yet"),
    (["RUNS/stem", "--format", "onnx", "--output", "m.onnx", "--network", "final"],
     "RUNS/stem/final: no retrained network; 'menndl retrain RUNS/stem' makes it"),
    (["RUNS/stem", "--format", "pickle", "--output", "m.pkl"],
     "--format: must be one of onnx, torchscript, state-dict, optuna-journal, got 'pickle'"),
    (["RUNS/stem", "--format", "onnx", "--output", "m.onnx", "--network", "worst"],
     "--network: must be best, final or the id of a Pareto front or ensemble member, got 'worst'"),
    (["RUNS/stem", "--format", "optuna-journal", "--output", "j", "--network", "best"],
     "--network: chooses the network of the formats onnx, torchscript, state-dict, not of optuna-journal"),
    (["RUNS/stem", "--format", "onnx", "--output", "here"],
     "here: exists; choose another --output or pass --overwrite"),
    (["RUNS/stem", "--format", "onnx", "--output", "beside"],
     "beside.json (the JSON written beside --output): exists; choose another --output or pass --overwrite"),
    (["RUNS/stem", "--format", "onnx", "--output", "folder", "--overwrite"],
     "folder: is a directory; choose another --output"),
    (["RUNS/stem", "--format", "torchscript", "--output", "RUNS/stem/report/m.pt", "--overwrite"],
     "--output RUNS/stem/report/m.pt: inside the run directory ABS/stem, which holds only what a search wrote; "
     "write exports elsewhere"),
])
def test_bad_calls_are_one_line_and_write_nothing(runs, tmp_path, monkeypatch, capsys, args, expected):
    (tmp_path / "RUNS").symlink_to(runs["stem"].parent)
    (tmp_path / "here").write_text("mine")
    (tmp_path / "beside.json").write_text("mine")
    (tmp_path / "folder").mkdir()
    before = sorted(tmp_path.iterdir())
    code, err = export(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err == f"menndl: error: {expected.replace('ABS', str(runs['stem'].parent.resolve()))}\n"
    assert sorted(tmp_path.iterdir()) == before and (tmp_path / "here").read_text() == "mine"
    assert not (runs["stem"] / "report").exists()


def test_the_command_line_entry_point(tmp_path):
    assert one_line_error(menndl("export", "nowhere", "--format", "onnx", "--output", "m.onnx", cwd=tmp_path)) == \
        "nowhere: not a run directory (no config.yaml)"


def test_an_export_whose_outputs_differ_when_loaded_is_refused_and_not_kept(runs, tmp_path, monkeypatch, capsys):
    load = export_module.LOAD["state-dict"]
    monkeypatch.setitem(export_module.LOAD, "state-dict",
                        lambda *args: (lambda x: load(*args)(x).detach() + 1e-3))
    code, err = export(runs["elemnet"], "--format", "state-dict", "--output", "m.pt", cwd=tmp_path,
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.startswith("menndl: error: --format state-dict: the exported network, loaded back, "
                                        "gives outputs (3, 1) that differ from the network's (3, 1) by 0.001")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_both_files(runs, tmp_path, monkeypatch, capsys):
    (tmp_path / "m.pt").write_text("old")
    (tmp_path / "m.pt.json").write_text("old")
    code, err = export(runs["elemnet"], "--format", "state-dict", "--output", "m.pt", "--overwrite", cwd=tmp_path,
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "m.pt.json").read_text())["format"] == "state-dict"
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)) == set(
        load_network(RunDir(runs["elemnet"]).best, make_task("elemnet").space())[1].state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"]


def test_the_retrained_network_is_taken_unless_best_is_asked_for(runs, tmp_path, monkeypatch, capsys):
    run = RunDir(tmp_path / "run")
    shutil.copytree(runs["elemnet"], run.path, symlinks=True)
    shutil.copytree(run.best, run.final)
    record = json.loads((run.final / "result.json").read_text())
    (run.final / "result.json").write_text(json.dumps({"genome_hash": record["genome_hash"], "val_mae": 0.25,
                                                       "test_mae": 0.5, "curve": [{"epoch": 1}]}))
    for args, network, metric in ([], "final", {"validation": 0.25, "test": 0.5}),\
            (["--network", "best"], "best", {"validation": record["fitness"]}):
        code, err = export(run.path, "--format", "state-dict", "--output", f"{network}.pt", *args, cwd=tmp_path,
                           monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err
        facts = json.loads((tmp_path / f"{network}.pt.json").read_text())
        assert facts["network"] == network and facts["metric"].items() >= metric.items()
        assert "curve" not in facts["result"]
