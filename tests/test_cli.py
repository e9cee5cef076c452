"""Bad input on the command line: one line on stderr, exit status 2, no traceback, nothing damaged."""
import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml
from launchers import MENNDL, menndl, one_line_error


def synthetic_config(tmp: Path, **search) -> dict:
    return {"run": {"name": "job", "directory": str(tmp / "runs")}, "task": {"name": "synthetic"},
            "search": {"population": 4, "max_evaluations": 10, **search}}


@pytest.mark.parametrize("text, expected", [
    ("search: [unclosed", "malformed YAML at line 1"),
    ("search:\n  populaton: 10\n", "search.populaton: unknown key"),
    ("search:\n  population: ten\n", "search.population: must be an integer >= 2, got 'ten'"),
    ("cluster:\n  ranks_per_candidate: 0\n", "cluster.ranks_per_candidate: must be an integer >= 1, got 0"),
    ("task:\n  name: alchemy\n", "task.name: unknown task 'alchemy'"),
    ("task:\n  options:\n    train_size: -5\n", "task.options.train_size: must be an integer >= 1, got -5"),
    ("training: 12\n", "training: must be a mapping, got 12"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, expected):
    (tmp_path / "c.yaml").write_text(text)
    message = one_line_error(menndl("run", "c.yaml", cwd=tmp_path))
    assert expected in message
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path):
    assert "nowhere.yaml: no such config file" in one_line_error(menndl("run", "nowhere.yaml", cwd=tmp_path))


@pytest.mark.slow
def test_corrupt_data_file_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "elemnet.h5").write_bytes(b"\x89HDF\r\n\x1a\n but then nothing sensible " * 10)
    cfg = {"run": {"directory": str(tmp_path / "runs")}, "task": {"name": "elemnet", "data_dir": "data"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    message = one_line_error(menndl("run", "c.yaml", cwd=tmp_path))
    assert "data/elemnet.h5" in message and "menndl data make elemnet" in message


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_run_directory_of_another_config_is_refused_and_left_intact(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(synthetic_config(tmp_path, seed=1)))
    first = menndl("run", "a.yaml", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs" / "job"
    before = {p.name: _digest(p) for p in run_dir.iterdir() if p.is_file()}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(synthetic_config(tmp_path, seed=2)))
    message = one_line_error(menndl("run", "b.yaml", cwd=tmp_path))
    assert "runs/job: holds a run of another configuration" in message
    assert {p.name: _digest(p) for p in run_dir.iterdir() if p.is_file()} == before
    again = menndl("run", "a.yaml", "--no-progress", cwd=tmp_path)  # the same config: nothing left to do
    assert again.returncode == 0 and "already finished" in again.stdout
    assert {p.name: _digest(p) for p in run_dir.iterdir() if p.is_file()} == before


def test_resume_of_a_directory_that_is_no_run(tmp_path):
    assert "is runs/none a run directory?" in one_line_error(menndl("resume", "runs/none", cwd=tmp_path))


def test_set_overrides_are_validated_too(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(synthetic_config(tmp_path)))
    message = one_line_error(menndl("run", "a.yaml", "--set", "search.mutation_rate=2", cwd=tmp_path))
    assert message == "search.mutation_rate: must be a number >= 0.0 and <= 1.0, got 2.0"


def test_tasks_lists_the_tasks(tmp_path):
    out = menndl("tasks", cwd=tmp_path)
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["elemnet", "homogenization", "localization",
                                                                   "stem_defects", "synthetic"]


@pytest.mark.slow
def test_usr1_stops_a_serial_run_with_status_3_and_it_resumes(tmp_path):
    import csv
    import json
    import signal
    import time

    cfg = synthetic_config(tmp_path, max_evaluations=30)
    cfg["task"]["options"] = {"seconds": 0.2}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    results = tmp_path / "runs" / "job" / "results.csv"
    job = subprocess.Popen([MENNDL, "run", "a.yaml", "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (results.exists() and len(results.read_text().splitlines()) > 5):
            time.sleep(0.1)
        job.send_signal(signal.SIGUSR1)
        stdout, _ = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == 3 and "stopped by SIGUSR1" in stdout
    with open(results) as fh:
        before = list(csv.DictReader(fh))
    assert 5 <= len(before) < 30
    assert json.loads((tmp_path / "runs" / "job" / "checkpoint.json").read_text())["finished"] is False
    again = menndl("run", "a.yaml", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with open(results) as fh:
        after = list(csv.DictReader(fh))
    assert after[: len(before)] == before
    assert sorted(int(r["id"]) for r in after) == list(range(30))


@pytest.mark.slow
def test_a_run_starts_from_its_seed_genomes_and_a_bad_seed_is_one_line(tmp_path):
    import csv
    import json
    import random

    from menndl_py.tasks import make_task

    seed = make_task("synthetic").space().sample(random.Random(5))
    (tmp_path / "seed.json").write_text(json.dumps(seed.to_json()))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(synthetic_config(tmp_path, max_evaluations=4,
                                                                     seed_genomes=["seed.json"])))
    out = menndl("run", "a.yaml", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "runs" / "job" / "results.csv") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["id"]))
    assert rows[0]["origin"] == "seed" and json.loads(rows[0]["genome"]) == json.loads(seed.canonical())
    assert {r["origin"] for r in rows[1:]} == {"random"}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(synthetic_config(tmp_path, seed_genomes=["missing.json"])))
    assert one_line_error(menndl("run", "b.yaml", cwd=tmp_path)).startswith(
        "search.seed_genomes[0]: cannot read missing.json")


def test_data_make_set_needs_a_config(tmp_path):
    assert one_line_error(menndl("data", "make", "localization", "--set", "task.options.contrast=10", cwd=tmp_path)) \
        == "--set: needs --config (it overrides the config's keys)"
