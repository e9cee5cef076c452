"""menndl_py.config: defaults, YAML → frozen dataclasses, and error messages that name the key."""
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import pytest

from menndl_py import config
from menndl_py.config import (
    ClusterConfig,
    Config,
    DebugConfig,
    FaultConfig,
    RunConfig,
    SearchConfig,
    TaskConfig,
    TrainingConfig,
    from_dict,
    load,
)
from menndl_py.errors import UserError
from menndl_py.search.seeds import seed_genomes
from menndl_py.tasks import make_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def error_of(data) -> str:
    with pytest.raises(UserError) as info:
        from_dict(data)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ defaults

@pytest.mark.parametrize("data", [{}, None])
def test_defaults(data):
    cfg = from_dict(data)
    assert cfg == Config()
    assert cfg.run == RunConfig(name="run", directory="runs")
    assert cfg.run_dir == Path("runs") / "run"
    assert cfg.task == TaskConfig(name="elemnet", data_dir="data", options={})
    s = cfg.search
    assert (s.population, s.max_evaluations, s.max_minutes, s.seed) == (16, 100, None, 0)
    assert (s.crossover_rate, s.mutation_rate, s.tournament_size) == (0.5, 0.9, 3)
    assert (s.surrogate, s.screen_factor, s.explore_fraction) == (True, 8, 0.25)
    assert (s.surrogate_min_results, s.surrogate_max_train, s.surrogate_refit_every) == (8, 256, 4)
    assert s.space == {}
    assert cfg.cluster == ClusterConfig(ranks_per_candidate=1, candidate_timeout=600.0, threads_per_rank=None)
    assert cfg.training == TrainingConfig(epochs=20, time_budget=None, eval_batch_size=4096)
    assert cfg.debug == DebugConfig(FaultConfig(0.0, 0.0, 0.0))


def test_yaml_becomes_frozen_dataclasses(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("""
run: {name: trial, directory: /scratch/runs}
task:
  name: synthetic
  options: {seconds: 0.5}
search:
  population: 10
  max_evaluations: 40
  max_minutes: 3
  crossover_rate: 1
  surrogate: false
  space:
    depth: [1, 4]
    width: [16, 32]
cluster: {ranks_per_candidate: 2, candidate_timeout: 30}
training: {epochs: 3, time_budget: 1.5}
debug:
  inject_faults: {exception: 0.1}
""")
    cfg = load(path)
    assert isinstance(cfg, Config) and isinstance(cfg.search, SearchConfig)
    assert isinstance(cfg.debug.inject_faults, FaultConfig)
    assert cfg.run_dir == Path("/scratch/runs/trial")
    assert cfg.task.name == "synthetic" and cfg.task.options == {"seconds": 0.5}
    assert (cfg.search.population, cfg.search.max_evaluations, cfg.search.surrogate) == (10, 40, False)
    assert cfg.search.max_minutes == 3.0 and type(cfg.search.max_minutes) is float
    assert cfg.search.crossover_rate == 1.0 and type(cfg.search.crossover_rate) is float
    assert cfg.search.mutation_rate == 0.9  # not given: default
    assert cfg.search.space == {"depth": [1, 4], "width": [16, 32]}
    assert cfg.cluster.ranks_per_candidate == 2 and cfg.cluster.candidate_timeout == 30.0
    assert cfg.training.epochs == 3 and cfg.training.time_budget == 1.5
    assert cfg.debug.inject_faults == FaultConfig(exception=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.population = 3  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid_and_their_seeds_lie_in_their_space(path, tmp_path):
    cfg = load(path)
    task = make_task(cfg.task.name, cfg.task.options, tmp_path)
    seeds = seed_genomes(cfg.search.seed_genomes, task.baseline_genomes(), task.space().restricted(cfg.search.space))
    assert len(seeds) >= len(cfg.search.seed_genomes)


def test_save_then_load_gives_the_same_config(tmp_path):
    cfg = from_dict({"search": {"population": 5, "max_minutes": 2.5, "space": {"width": [16]}},
                     "debug": {"inject_faults": {"timeout": 0.5}}})
    config.save(cfg, tmp_path / "config.yaml")
    assert load(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("text", ["", "# nothing set\n", "{}\n"])
def test_an_empty_config_file_is_refused_saying_what_it_must_hold(tmp_path, text):
    # it used to run the default ElemNet search without a word
    (tmp_path / "empty.yaml").write_text(text)
    with pytest.raises(UserError) as info:
        load(tmp_path / "empty.yaml")
    assert str(info.value) == f"{tmp_path / 'empty.yaml'}: empty; a config must hold at least task.name " \
                              "(e.g. 'task: {name: elemnet}')"


def test_a_config_file_must_name_its_task(tmp_path):
    (tmp_path / "c.yaml").write_text("search: {population: 4}\n")
    with pytest.raises(UserError, match=r"c\.yaml: task\.name missing; a config must name its task"):
        load(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("task: {name: synthetic}\n")
    assert load(tmp_path / "c.yaml").task.name == "synthetic"


@pytest.mark.parametrize("text, message", [
    ("- task\n", "must be a mapping of sections (run, task, search, ...), got ['task']"),
    ("just words\n", "must be a mapping of sections (run, task, search, ...), got 'just words'"),
])
def test_a_config_file_that_is_no_mapping(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(UserError) as info:
        load(tmp_path / "c.yaml")
    assert str(info.value) == f"{tmp_path / 'c.yaml'}: {message}"


def test_a_directory_given_as_config(tmp_path):
    with pytest.raises(UserError) as info:
        load(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, expected a YAML config file"


# ---------------------------------------------------------------------------------------------- bad keys

@pytest.mark.parametrize("data, key", [
    ({"search": {"populaton": 10}}, "search.populaton"),
    ({"serach": {"population": 10}}, "serach"),
    ({"debug": {"inject_faults": {"exceptoin": 0.1}}}, "debug.inject_faults.exceptoin"),
    ({"training": {"epochs": 2, "lr": 0.1}}, "training.lr"),
])
def test_unknown_key_names_the_full_path(data, key):
    message = error_of(data)
    assert message.startswith(f"{key}: unknown key")
    assert "expected one of:" in message


def test_unknown_key_lists_the_keys_of_its_section():
    message = error_of({"search": {"populaton": 10}})
    for name in ("population", "max_evaluations", "explore_fraction", "space"):
        assert name in message
    assert "epochs" not in message  # a training key: not of this section


# --------------------------------------------------------------------------------------------- bad values

@pytest.mark.parametrize("data, message", [
    ({"search": {"population": "ten"}}, "search.population: must be an integer >= 2 and <= 100000, got 'ten'"),
    ({"search": {"population": 1}}, "search.population: must be an integer >= 2 and <= 100000, got 1"),
    ({"search": {"population": 10.0}}, "search.population: must be an integer >= 2 and <= 100000, got 10.0"),
    ({"search": {"population": None}}, "search.population: must be an integer >= 2 and <= 100000, got None"),
    ({"search": {"crossover_rate": 1.5}}, "search.crossover_rate: must be a number >= 0.0 and <= 1.0, got 1.5"),
    ({"search": {"surrogate": "yes"}}, "search.surrogate: must be true or false, got 'yes'"),
    ({"search": {"surrogate": 1}}, "search.surrogate: must be true or false, got 1"),
    ({"run": {"name": 5}}, "run.name: must be a string, got 5"),
    ({"task": {"options": [1, 2]}}, "task.options: must be a mapping, got [1, 2]"),
    ({"search": "fast"}, "search: must be a mapping, got 'fast'"),
    ({"cluster": {"candidate_timeout": 0}},
     "cluster.candidate_timeout: must be a number >= 0.1 and <= 604800, got 0.0"),
    ({"debug": {"inject_faults": {"timeout": -0.1}}},
     "debug.inject_faults.timeout: must be a number >= 0.0 and <= 1.0, got -0.1"),
    ([1, 2], "config: must be a mapping, got [1, 2]"),
])
def test_bad_value_message(data, message):
    assert error_of(data) == message


@pytest.mark.parametrize("data, message", [
    ({"search": {"population": True}}, "search.population: must be an integer >= 2 and <= 100000, got True"),
    ({"search": {"seed": False}}, "search.seed: must be an integer >= 0 and <= 9223372036854775807, got False"),
    ({"training": {"epochs": True}}, "training.epochs: must be an integer >= 1 and <= 1000000, got True"),
    ({"search": {"crossover_rate": True}}, "search.crossover_rate: must be a number >= 0.0 and <= 1.0, got True"),
])
def test_bool_is_not_a_number(data, message):
    assert error_of(data) == message


def test_int_is_accepted_for_a_float():
    cfg = from_dict({"search": {"crossover_rate": 1, "explore_fraction": 0, "max_minutes": 5},
                     "cluster": {"candidate_timeout": 60}, "training": {"time_budget": 2}})
    for value, expected in ((cfg.search.crossover_rate, 1.0), (cfg.search.explore_fraction, 0.0),
                            (cfg.search.max_minutes, 5.0), (cfg.cluster.candidate_timeout, 60.0),
                            (cfg.training.time_budget, 2.0)):
        assert value == expected and type(value) is float


@pytest.mark.parametrize("data, message", [
    ({"search": {"crossover_rate": math.nan}},
     "search.crossover_rate: must be a finite number >= 0.0 and <= 1.0, got nan"),
    ({"search": {"max_evaluations": None, "max_minutes": math.nan}},
     "search.max_minutes: must be a finite number >= 0.0 and <= 527040, got nan"),
])
def test_nan_is_refused(data, message):
    # NaN compares false with every bound; a NaN max_minutes used to pass and the search never ended.
    assert error_of(data) == message


@pytest.mark.parametrize("data, message", [
    ({"search": {"max_minutes": math.inf}},
     "search.max_minutes: must be a finite number >= 0.0 and <= 527040, got inf"),
    ({"cluster": {"candidate_timeout": math.inf}},
     "cluster.candidate_timeout: must be a finite number >= 0.1 and <= 604800, got inf"),
    ({"training": {"time_budget": -math.inf}}, "training.time_budget: must be a finite number >= 0.1 and <= 604800, "
                                               "got -inf"),
    ({"search": {"crossover_rate": 10**400}},
     "search.crossover_rate: must be a number >= 0.0 and <= 1.0, got 1000000000000000000000000000000000000000000000000"
     "00000000000... (401 characters)"),
])
def test_infinity_is_refused_everywhere(data, message):
    assert error_of(data) == message


@pytest.mark.parametrize("key, value, bound", [
    ("search.population", 10**12, "<= 100000"),
    ("search.screen_factor", 10**12, "<= 1000"),
    ("search.max_evaluations", 10**12, "<= 10000000"),
    ("search.max_minutes", 10**7, "<= 527040"),
    ("search.surrogate_max_train", 10**9, "<= 10000"),
    ("search.seed", 2**64, "<= 9223372036854775807"),
    ("training.epochs", 10**9, "<= 1000000"),
    ("training.eval_batch_size", 10**9, "<= 1048576"),
    ("cluster.candidate_timeout", 10**9, "<= 604800"),
    ("cluster.stop_grace", 10**6, "<= 3600.0"),
    ("cluster.threads_per_rank", 10**6, "<= 1024"),
    ("cluster.ranks_per_candidate", 10**6, "<= 4096"),
])
def test_absurd_sizes_are_refused(key, value, bound):
    section, name = key.split(".")
    message = error_of({section: {name: value}})
    assert message.startswith(f"{key}: must be ") and f" and {bound}, got " in message


def test_the_tournament_is_drawn_from_the_population():
    assert error_of({"search": {"population": 4, "tournament_size": 5}}) == \
        "search.tournament_size: must be at most search.population (4), got 5"
    assert from_dict({"search": {"population": 4, "tournament_size": 4}}).search.tournament_size == 4
    assert from_dict({"search": {"population": 2}}).search.tournament_size == 3  # the default, drawn with replacement


@pytest.mark.parametrize("name, why", [
    ("..", "it names no directory of its own"),
    (".", "it names no directory of its own"),
    ("", "it names no directory of its own"),
    ("/tmp/elsewhere", "it holds a '/'"),
    ("a/b", "it holds a '/'"),
    ("tab\there", "it holds a control character"),
    ("x" * 256, "it is 256 bytes long, more than 255"),
    ("é" * 128, "it is 256 bytes long, more than 255"),
])
def test_a_run_name_is_one_directory_name(name, why):
    # '--name ..' overwrote the config.yaml of the current directory; '/abs' wrote anywhere
    message = error_of({"run": {"name": name}})
    assert message.startswith("run.name: must be a single directory name, got ") and message.endswith(f": {why}")
    assert from_dict({"run": {"name": "x" * 255}}).run.name == "x" * 255
    assert from_dict({"run": {"name": "élan-2 (retry)"}}).run.name == "élan-2 (retry)"


@pytest.mark.parametrize("key", ["run.name", "run.directory", "task.name", "task.data_dir"])
def test_a_nul_character_is_refused_in_any_string(key):
    section, name = key.split(".")
    assert error_of({section: {name: "a\0b"}}) == f"{key}: must not hold a NUL character, got 'a\\x00b'"


def test_seed_genomes_must_be_a_list():
    assert error_of({"search": {"seed_genomes": 5}}) == "search.seed_genomes: must be a list, got 5"


def test_optional_values_accept_null():
    cfg = from_dict({"search": {"max_minutes": None}, "training": {"time_budget": None},
                     "cluster": {"threads_per_rank": None}})
    assert cfg.search.max_minutes is None and cfg.training.time_budget is None
    assert cfg.cluster.threads_per_rank is None


# --------------------------------------------------------------------------------------------- the budget

def test_a_search_needs_an_end():
    message = error_of({"search": {"max_evaluations": None}})
    assert message.startswith("search:") and "max_evaluations" in message and "max_minutes" in message
    assert from_dict({"search": {"max_evaluations": None, "max_minutes": 5}}).search.max_evaluations is None
    assert from_dict({"search": {"max_evaluations": 7, "max_minutes": None}}).search.max_evaluations == 7


# ------------------------------------------------------------------------------------------------- files

@pytest.mark.parametrize("text, line", [
    ("search:\n  population: 4\n\tseed: 1\n", 3),
    ("search:\n  population: 4\n  seed: 1\ncluster:\n  ranks_per_candidate: 1\n   epochs: 2\n", 6),
])
def test_malformed_yaml_names_the_line(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: malformed YAML at line {line}, column ")
    assert "\n" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(UserError) as info:
        load(path)
    assert str(info.value) == f"{path}: no such config file"


def test_a_file_that_cannot_be_read(tmp_path):
    """One line naming the file and why: permission denied, or for root (who reads any file) the I/O error that
    reading /proc/self/mem gives every user."""
    locked = tmp_path / "locked.yaml"
    locked.write_text("task: {name: synthetic}\n")
    locked.chmod(0)
    try:
        path, why = ((locked, "Permission denied") if not os.access(locked, os.R_OK)
                     else (Path("/proc/self/mem"), "Input/output error"))
        with pytest.raises(UserError) as info:
            load(path)
        assert str(info.value) == f"{path}: cannot read config ({why})"
    finally:
        locked.chmod(0o644)


def test_binary_file_is_a_user_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"search:\n  population: 4\n\xff\xfe\x00\x01")
    with pytest.raises(UserError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: not a UTF-8 text file")


def test_file_errors_carry_the_key_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  population: ten\n")
    with pytest.raises(UserError, match=r"^search\.population: must be an integer >= 2 and <= 100000, got 'ten'$"):
        load(path)


# ------------------------------------------------------------------------------------------- fingerprint

def test_fingerprint_ignores_run_name_and_directory():
    base = {"search": {"population": 6, "seed": 3}}
    a = from_dict({**base, "run": {"name": "a", "directory": "/x"}})
    b = from_dict({**base, "run": {"name": "b", "directory": "/y"}})
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 16 and int(a.fingerprint(), 16) >= 0


def test_fingerprint_ignores_the_budget():
    # a resumed run may be given more evaluations or minutes
    a = from_dict({"search": {"max_evaluations": 10}})
    b = from_dict({"search": {"max_evaluations": 50, "max_minutes": 30}})
    assert a.fingerprint() == b.fingerprint()


@pytest.mark.parametrize("change", [
    {"search": {"population": 6, "seed": 4}},
    {"search": {"population": 7, "seed": 3}},
    {"search": {"population": 6, "seed": 3, "space": {"depth": [1, 2]}}},
    {"search": {"population": 6, "seed": 3}, "task": {"options": {"train_size": 10}}},
    {"search": {"population": 6, "seed": 3}, "training": {"epochs": 3}},
])
def test_fingerprint_follows_the_search(change):
    assert from_dict({"search": {"population": 6, "seed": 3}}).fingerprint() != from_dict(change).fingerprint()


@pytest.mark.parametrize("key, value", [("training.lr_schedule", "linear"), ("search.algorithm", "bayes"),
                                        ("training.precision", "fp8")])
def test_a_value_outside_its_choices_is_refused(key, value):
    section, name = key.split(".")
    with pytest.raises(UserError, match=rf"^{key}: must be one of .*got '{value}'$"):
        config.from_dict({section: {name: value}})


def test_the_default_algorithm_leaves_the_fingerprint_as_it_was():
    assert config.from_dict({}).fingerprint() == config.from_dict({"search": {"algorithm": "ga"}}).fingerprint()
    assert config.from_dict({}).fingerprint() != config.from_dict({"search": {"algorithm": "random"}}).fingerprint()


def test_rungs_are_a_geometric_ladder_from_the_top_budget():
    rungs = from_dict({"training": {"rungs": {"min_budget": 10, "max_budget": 270, "eta": 3}}}).training.rungs
    assert rungs.budgets == [10, 30, 90, 270] and rungs.share(2) == 1.0
    uneven = from_dict({"training": {"rungs": {"min_budget": 10, "max_budget": 100}}}).training.rungs
    assert uneven.budgets == pytest.approx([100 / 9, 100 / 3, 100])  # the top is max_budget, the bottom >= min
    assert from_dict({}).training.rungs is None


@pytest.mark.parametrize("rungs, message", [
    ({"min_budget": 20, "max_budget": 10}, "training.rungs.max_budget: must be at least min_budget (20), got 10"),
    ({"data": [0.5, 1.0]}, "training.rungs.data: must be 4 shares of the training rows, one per rung (budgets 10, "
                           "30, 90, 270)"),
    ({"data": [0.1, 0.5, 0.3, 1.0]}, "never falling"),
    ({"data": [0.1, 0.2, 0.3, 0.9]}, "the last 1"),
    ({"data": [0, 0.2, 0.3, 1]}, "each > 0"),
    ({"min_budget": 0.01, "max_budget": 100000, "eta": 2}, "training.rungs: 24 rungs from min_budget to max_budget; "
                                                          "at most 20 (raise eta)"),
    ({"unit": "steps"}, "training.rungs.unit: must be one of 'seconds', 'epochs'"),
])
def test_bad_rungs_are_named(rungs, message):
    assert message in error_of({"training": {"rungs": rungs}})


def test_rungs_set_the_budget_instead_of_time_budget():
    assert error_of({"training": {"time_budget": 20, "rungs": {}}}) == \
        "training.time_budget: leave it unset with training.rungs (the rungs set the budget)"


def test_a_run_made_before_rungs_precision_inheritance_and_keep_top_keeps_its_fingerprint():
    cfg = from_dict({})
    assert cfg.fingerprint() != from_dict({"training": {"rungs": {}}}).fingerprint()
    data = cfg.to_dict()
    data.pop("run")
    data["training"].pop("rungs")
    data["training"].pop("precision")
    for key in ("max_evaluations", "max_minutes", "algorithm", "objectives", "max_latency", "inherit", "keep_top"):
        data["search"].pop(key)
    assert cfg.fingerprint() == hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- objectives

@pytest.mark.parametrize("objectives", [[], ["latency"], ["metric", "metric"], ["metric", "speed"], "metric",
                                        ["metric", {"latency": 1}]])
def test_objectives_must_be_distinct_known_names_with_the_metric(objectives):
    message = error_of({"search": {"objectives": objectives}})
    assert message.startswith("search.objectives: must") and ("'metric' among them" in message or
                                                              message.endswith("must be a list, got 'metric'"))


def test_a_latency_limit_needs_latency_among_the_objectives():
    assert error_of({"search": {"max_latency": 1.0}}) == \
        "search.max_latency: set only with 'latency' in search.objectives"
    assert config.from_dict({"search": {"objectives": ["metric", "latency"], "max_latency": 1}}).search.max_latency == 1


def test_a_number_yaml_reads_as_text_is_explained():
    message = error_of({"search": {"objectives": ["metric", "latency"], "max_latency": "2e-6"}})
    assert message.endswith("(YAML reads 2e-6 as text: write it with a decimal point, 2.0e-6)")


def test_the_default_objectives_leave_the_fingerprint_as_it_was():
    assert config.from_dict({}).fingerprint() == config.from_dict({"search": {"objectives": ["metric"]}}).fingerprint()
    assert config.from_dict({}).fingerprint() != \
        config.from_dict({"search": {"objectives": ["metric", "latency"]}}).fingerprint()


def test_inheritance_needs_rungs_and_enters_the_fingerprint_only_when_on():
    assert error_of({"search": {"inherit": True}}) == \
        "search.inherit: needs training.rungs (the trained weights it hands on are kept per rung)"
    rungs = {"training": {"rungs": {"min_budget": 10, "max_budget": 90}}}
    default = from_dict(rungs).fingerprint()
    assert from_dict({**rungs, "search": {"inherit": False}}).fingerprint() == default
    assert from_dict({**rungs, "search": {"inherit": True}}).fingerprint() != default


def test_precision_is_fp32_unless_set_and_enters_the_fingerprint_only_when_set():
    assert from_dict({}).training.precision == "fp32"
    assert error_of({"training": {"precision": "half"}}) == \
        "training.precision: must be one of 'fp32', 'bf16', 'fp16', got 'half'"
    default = from_dict({}).fingerprint()
    assert from_dict({"training": {"precision": "fp32"}}).fingerprint() == default
    fingerprints = {from_dict({"training": {"precision": p}}).fingerprint() for p in ("bf16", "fp16")}
    assert len(fingerprints) == 2 and default not in fingerprints
