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
    ("search:\n  population: ten\n", "search.population: must be an integer >= 2 and <= 100000, got 'ten'"),
    ("cluster:\n  ranks_per_candidate: 0\n", "cluster.ranks_per_candidate: must be an integer >= 1 and <= 4096, "
                                             "got 0"),
    ("task:\n  name: alchemy\n", "task.name: unknown task 'alchemy'"),
    ("task:\n  name: elemnet\n  options:\n    train_size: -5\n",
     "task.options.train_size: must be an integer >= 1, got -5"),
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
    assert [line.split()[0] for line in out.stdout.splitlines()] == [
        "composition", "crystal_graph", "ebsd", "elemnet", "homogenization", "images", "localization", "segmentation",
        "stem_defects", "synthetic", "tabular"]


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


def _tree(root: Path) -> dict:
    """Every file under `root` and its digest (directories as None): what 'nothing changed on disk' compares."""
    return {str(p.relative_to(root)): _digest(p) if p.is_file() else None for p in sorted(root.rglob("*"))}


LONG = "x" * 300


@pytest.mark.parametrize("args, expected", [
    (["--name", ".."], "run.name: must be a single directory name, got '..': it names no directory of its own"),
    (["--name", "/tmp/anywhere"], "run.name: must be a single directory name, got '/tmp/anywhere': it holds a '/'"),
    (["--name", ""], "run.name: must be a single directory name, got '': it names no directory of its own"),
    (["--name", "a/../../b"], "run.name: must be a single directory name, got 'a/../../b': it holds a '/'"),
    (["--set", "run.name=.."], "run.name: must be a single directory name, got '..': it names no directory of its own"),
    (["--set", 'run.name="a\\0b"'], "run.name: must not hold a NUL character, got 'a\\x00b'"),
    (["--set", 'run.name="a\\nb"'], "run.name: must be a single directory name, got 'a\\nb': it holds a control "
                                    "character"),
    (["--name", LONG], f"run.name: must be a single directory name, got '{'x' * 59}... (302 characters): it is 300 "
                       f"bytes long, more than 255"),
])
def test_a_run_name_is_one_directory_under_the_runs_directory(tmp_path, args, expected):
    # '--name ..' overwrote the config.yaml of the current directory, '/abs' wrote anywhere, '' made runs/ the run;
    # a NUL or 300 characters were tracebacks
    cfg = synthetic_config(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = _tree(tmp_path)
    assert one_line_error(menndl("run", "config.yaml", *args, cwd=tmp_path)) == expected
    assert _tree(tmp_path) == before


def test_a_run_name_in_the_config_file_is_checked_the_same_way(tmp_path):
    cfg = synthetic_config(tmp_path)
    cfg["run"]["name"] = "../escape"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert one_line_error(menndl("run", "c.yaml", cwd=tmp_path)) == \
        "run.name: must be a single directory name, got '../escape': it holds a '/'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("text, args, expected", [
    (None, ["--set", "search.population=["], "--set 'search.population=[': malformed YAML at line 1, column 2: "
                                             "expected the node content, but found '<stream end>'"),
    ("search: [unclosed", ["--name", "x"], "c.yaml: malformed YAML at line 1, column 18: expected ',' or ']', but got "
                                           "'<stream end>'"),
    ("search: [unclosed", ["--set", "search.seed=1"], "c.yaml: malformed YAML at line 1, column 18: expected ',' or "
                                                      "']', but got '<stream end>'"),
    ("- 1\n- 2\n", ["--name", "x"], "c.yaml: must be a mapping of sections (run, task, search, ...), got [1, 2]"),
    ("", ["--set", "task.name=synthetic"], "c.yaml: empty; a config must hold at least task.name (e.g. 'task: "
                                           "{name: elemnet}')"),
    (None, ["--set", "search"], "--set 'search': expected section.key=value"),
    (None, ["--set", "search.=4"], "--set 'search.=4': expected section.key=value"),
    (None, ["--set", "search.population.x=4"], "--set 'search.population.x=4': population is not a section"),
    (None, ["--set", "search.popluation=4"], "search.popluation: unknown key (expected one of: algorithm, population, "
                                             "max_evaluations, max_minutes, crossover_rate, mutation_rate, "
                                             "tournament_size, surrogate, screen_factor, explore_fraction, "
                                             "surrogate_min_results, surrogate_max_train, surrogate_refit_every, "
                                             "seed, space, seed_genomes, seed_sweep, objectives, max_latency, "
                                             "inherit, keep_top)"),
])
def test_a_malformed_config_or_set_value_is_one_line(tmp_path, text, args, expected):
    # these went round config.load's error handling and were tracebacks
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(synthetic_config(tmp_path)) if text is None else text)
    assert one_line_error(menndl("run", "c.yaml", *args, cwd=tmp_path)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_a_binary_config_with_overrides_is_one_line(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"search:\n  population: 4\n\xff\xfe\x00\x01")
    assert one_line_error(menndl("run", "c.yaml", "--name", "x", cwd=tmp_path)) == \
        "c.yaml: not a UTF-8 text file (byte 24)"


def test_an_empty_section_can_still_be_set(tmp_path):
    (tmp_path / "c.yaml").write_text("task: {name: synthetic}\nsearch:\n")
    message = one_line_error(menndl("run", "c.yaml", "--set", "search.population=1", cwd=tmp_path))
    assert message == "search.population: must be an integer >= 2 and <= 100000, got 1"


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "{}\n", "just words\n"])
def test_resume_of_a_run_whose_config_is_empty_or_no_mapping(tmp_path, text):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(text)
    before = _tree(tmp_path)
    message = one_line_error(menndl("resume", "runs/x", cwd=tmp_path))
    assert message.startswith("runs/x/config.yaml: ") and ("empty" in message or "must be a mapping" in message)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_says_what_a_config_must_hold(tmp_path, text):
    # it ran the default ElemNet search without a word
    (tmp_path / "c.yaml").write_text(text)
    assert one_line_error(menndl("run", "c.yaml", cwd=tmp_path)) == \
        "c.yaml: empty; a config must hold at least task.name (e.g. 'task: {name: elemnet}')"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("setting, expected", [
    ("search.space.depth=[50000000, 50000000]",  # ran out of memory after 34 s
     "search.space.depth: must be [min, max] with 1 <= min <= max <= 24 (the task's range), got [50000000, 50000000]"),
    ("search.population=1000000000000", "search.population: must be an integer >= 2 and <= 100000, got 1000000000000"),
    ("search.screen_factor=1000000000000", "search.screen_factor: must be an integer >= 1 and <= 1000, got "
                                           "1000000000000"),
    ("search.max_minutes=.inf", "search.max_minutes: must be a finite number >= 0.0 and <= 527040, got inf"),
    ("cluster.candidate_timeout=.inf", "cluster.candidate_timeout: must be a finite number >= 0.1 and <= 604800, "
                                       "got inf"),
    ("search.tournament_size=8", "search.tournament_size: must be at most search.population (4), got 8"),
])
def test_sizes_are_bounded(tmp_path, setting, expected):
    cfg = synthetic_config(tmp_path)
    cfg["task"] = {"name": "elemnet", "data_dir": str(tmp_path / "data")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert one_line_error(menndl("run", "c.yaml", "--set", setting, cwd=tmp_path, timeout=60)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_a_directory_as_config(tmp_path):
    assert one_line_error(menndl("run", ".", cwd=tmp_path)) == ".: is a directory, expected a YAML config file"


@pytest.mark.parametrize("args, expected", [
    (["--budget", "inf"], "--budget: must be a finite number of seconds <= 604800, got inf"),
    (["--budget", "1e9"], "--budget: must be a finite number of seconds <= 604800, got 1000000000.0"),
    (["--epochs", "1000000000"], "--epochs: must be <= 1000000, got 1000000000"),
])
def test_retrain_budgets_are_finite(tmp_path, args, expected):
    assert one_line_error(menndl("retrain", "runs/none", *args, cwd=tmp_path)) == expected
    assert list(tmp_path.iterdir()) == []
