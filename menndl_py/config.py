"""YAML run configuration → frozen, validated dataclasses.

Every key is checked once at start; errors name the key, say what is expected and what was found.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from menndl_py.errors import UserError


def setting(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, **rules):
    """A dataclass field with validation rules (min, max, choices) in its metadata."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=rules)
    return field(default=default, metadata=rules)


MINUTES_PER_YEAR = 366 * 24 * 60
SECONDS_PER_WEEK = 7 * 24 * 3600


@dataclass(frozen=True)
class RunConfig:
    name: str = setting("run", directory_name=True)  # one directory under `directory`, never a path
    directory: str = setting("runs")


@dataclass(frozen=True)
class TaskConfig:
    name: str = setting("elemnet")
    data_dir: str = setting("data")
    options: dict = setting(factory=dict)


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = setting("ga", choices=("ga", "random"))  # random: the baseline a search must beat
    population: int = setting(16, min=2, max=100_000)
    max_evaluations: Optional[int] = setting(100, min=1, max=10_000_000)
    max_minutes: Optional[float] = setting(None, min=0.0, max=MINUTES_PER_YEAR)
    crossover_rate: float = setting(0.5, min=0.0, max=1.0)
    mutation_rate: float = setting(0.9, min=0.0, max=1.0)
    tournament_size: int = setting(3, min=1, max=100_000)  # and at most `population`
    surrogate: bool = setting(True)
    screen_factor: int = setting(8, min=1, max=1000)
    explore_fraction: float = setting(0.25, min=0.0, max=1.0)
    surrogate_min_results: int = setting(8, min=2, max=10_000)
    surrogate_max_train: int = setting(256, min=8, max=10_000)
    surrogate_refit_every: int = setting(4, min=1, max=100_000)
    seed: int = setting(0, min=0, max=2**63 - 1)
    space: dict = setting(factory=dict)
    seed_genomes: list = setting(factory=list)  # "baselines", genome JSON files or run directories, evaluated first
    seed_sweep: list = setting(factory=list)  # training genes each seed is also tried with, value by value
    objectives: list = setting(factory=lambda: ["metric"])  # "metric" and optionally "latency", "parameters"
    max_latency: Optional[float] = setting(None, min=0.0, max=3600.0)  # seconds per sample, for best/
    inherit: bool = setting(False)  # offspring start from their first parent's trained weights (training.rungs)
    keep_top: int = setting(0, min=0, max=1000)  # keep the networks of the K best at the top rung (ensemble/)


@dataclass(frozen=True)
class ClusterConfig:
    ranks_per_candidate: int = setting(1, min=1, max=4096)
    candidate_timeout: float = setting(600.0, min=0.1, max=SECONDS_PER_WEEK)
    stop_grace: float = setting(60.0, min=0.0, max=3600.0)  # seconds the master waits for busy groups after a stop
    threads_per_rank: Optional[int] = setting(None, min=1, max=1024)


@dataclass(frozen=True)
class RungsConfig:
    """Multi-fidelity promotion: a candidate trains for `min_budget` first; the best 1/eta of each rung go on
    training, from where they stopped, to the next rung (eta times the budget), up to `max_budget`."""

    unit: str = setting("seconds", choices=("seconds", "epochs"))
    min_budget: float = setting(10.0, min=0.01, max=SECONDS_PER_WEEK)
    max_budget: float = setting(270.0, min=0.01, max=SECONDS_PER_WEEK)
    eta: int = setting(3, min=2, max=100)
    data: list = setting(factory=list)  # the share of the training rows each rung trains on, lowest first

    @property
    def budgets(self) -> list[float]:
        """Each rung's budget, counted from scratch: max_budget / eta**k, down to at least min_budget."""
        n = int(math.floor(math.log(self.max_budget / self.min_budget, self.eta) + 1e-9))
        return [self.max_budget / self.eta ** (n - k) for k in range(n + 1)]

    def share(self, rung: int) -> float:
        """The share of the training rows rung `rung` trains on."""
        return float(self.data[rung]) if self.data else 1.0


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = setting(20, min=1, max=1_000_000)  # with rungs: at most this many epochs in all
    time_budget: Optional[float] = setting(None, min=0.1, max=SECONDS_PER_WEEK)
    eval_batch_size: int = setting(4096, min=1, max=2**20)
    lr_schedule: str = setting("constant", choices=("constant", "cosine"))  # cosine: to 0 over the budget (rung)
    rungs: Optional[RungsConfig] = setting(None)  # multi-fidelity promotion; off: each candidate trains once
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))  # bf16, fp16: autocast (fp16 with a scaler)


@dataclass(frozen=True)
class FaultConfig:
    exception: float = setting(0.0, min=0.0, max=1.0)
    nonfinite: float = setting(0.0, min=0.0, max=1.0)
    timeout: float = setting(0.0, min=0.0, max=1.0)


@dataclass(frozen=True)
class DebugConfig:
    inject_faults: FaultConfig = setting(factory=FaultConfig)


@dataclass(frozen=True)
class Config:
    run: RunConfig = setting(factory=RunConfig)
    task: TaskConfig = setting(factory=TaskConfig)
    search: SearchConfig = setting(factory=SearchConfig)
    cluster: ClusterConfig = setting(factory=ClusterConfig)
    training: TrainingConfig = setting(factory=TrainingConfig)
    debug: DebugConfig = setting(factory=DebugConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of what defines the search: all but the run's name and directory and the budget (which a
        resumed run may extend)."""
        d = self.to_dict()
        d.pop("run")
        d["search"].pop("max_evaluations")
        d["search"].pop("max_minutes")
        if d["search"]["algorithm"] == "ga":  # added later: left out at its default, so older runs resume
            d["search"].pop("algorithm")
        if d["training"]["rungs"] is None:  # the same
            d["training"].pop("rungs")
        if d["search"]["objectives"] == ["metric"] and d["search"]["max_latency"] is None:  # the same
            d["search"].pop("objectives")
            d["search"].pop("max_latency")
        if d["training"]["precision"] == "fp32":  # the same
            d["training"].pop("precision")
        if not d["search"]["inherit"]:  # the same
            d["search"].pop("inherit")
        d["search"].pop("keep_top")  # what the run keeps, not what it searches
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def run_dir(self) -> Path:
        return Path(self.run.directory) / self.run.name


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
         list: "a list"}


def shown(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut short past `limit` characters (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def directory_name_problem(name: str) -> Optional[str]:
    """Why `name` cannot be one directory name inside another directory (a run's), in words; None if it can."""
    if name in ("", ".", ".."):
        return "it names no directory of its own"
    if "/" in name:
        return "it holds a '/'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if len(os.fsencode(name)) > 255:
        return f"it is {len(os.fsencode(name))} bytes long, more than 255"
    return None


def _decimal(text: str) -> str:
    """`text` as YAML reads a number in exponent notation (2e-6 → 2.0e-6), or '' if it is no such number."""
    mantissa, e, exponent = text.lower().partition("e")
    try:
        float(text)
    except ValueError:
        return ""
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else ""


def _check_value(key: str, value: Any, typ: Any, rules: dict) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if dataclasses.is_dataclass(typ):
        return build(typ, value, key)
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        ok = abs(value) < 2**1000  # beyond, float() overflows
        value = float(value) if ok else value
    finite = not (ok and typ is float and not math.isfinite(value))
    ok = ok and finite  # NaN passes every bound check, and an infinite time never ends
    bounds = ""
    if "min" in rules:
        bounds += f" >= {rules['min']}"
    if "max" in rules:
        bounds += f" and <= {rules['max']}" if bounds else f" <= {rules['max']}"
    if not ok or ("min" in rules and value < rules["min"]) or ("max" in rules and value > rules["max"]):
        kind = _KIND[typ] if finite else "a finite number"
        hint = f" (YAML reads {value} as text: write it with a decimal point, {_decimal(value)})" \
            if typ is float and isinstance(value, str) and _decimal(value) else ""
        raise UserError(f"{key}: must be {kind}{bounds}, got {shown(value)}{hint}")
    if "choices" in rules and value not in rules["choices"]:
        raise UserError(f"{key}: must be one of {', '.join(map(repr, rules['choices']))}, got {shown(value)}")
    if typ is str and "\0" in value:
        raise UserError(f"{key}: must not hold a NUL character, got {shown(value)}")
    if rules.get("directory_name") and directory_name_problem(value):
        raise UserError(f"{key}: must be a single directory name, got {shown(value)}: {directory_name_problem(value)}")
    return value


def check_setting(key: str, value: Any, cls, name: str) -> Any:
    """`value` checked (and converted) as dataclass `cls`'s setting `name` would be, errors naming `key`."""
    rules = next(dict(f.metadata) for f in dataclasses.fields(cls) if f.name == name)
    return _check_value(key, value, typing.get_type_hints(cls)[name], rules)


def build(cls, data: Any, prefix: str = ""):
    """Make dataclass `cls` from a mapping, checking types, bounds and unknown keys."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    dotted = f"{prefix}." if prefix else ""
    for key in data:
        if key not in fields:
            raise UserError(f"{dotted}{key}: unknown key (expected one of: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _check_value(f"{dotted}{name}", data[name], hints[name], dict(f.metadata))
    return cls(**values)


def from_dict(data: Any) -> Config:
    cfg = build(Config, data)
    if cfg.search.max_evaluations is None and cfg.search.max_minutes is None:
        raise UserError("search: set max_evaluations or max_minutes (or both), or the search never ends")
    # (the default 3 over a population of 2 is left alone: DEAP draws the tournament with replacement, and the
    # runs made so, whose config.yaml holds it, must go on resuming)
    _check_rungs(cfg.training)
    _check_objectives(cfg.search)
    if cfg.search.inherit and cfg.training.rungs is None:
        raise UserError("search.inherit: needs training.rungs (the trained weights it hands on are kept per rung)")
    if cfg.search.keep_top == 1:
        raise UserError("search.keep_top: 0 (no ensemble) or at least 2 networks, got 1 (best/ keeps the best)")
    if cfg.search.keep_top and len(cfg.search.objectives) > 1:
        raise UserError("search.keep_top: one objective only (with several, the run keeps the Pareto front's "
                        "networks in pareto/)")
    tournament = cfg.search.tournament_size
    if tournament > cfg.search.population and tournament != SearchConfig.tournament_size:
        raise UserError(f"search.tournament_size: must be at most search.population ({cfg.search.population}), "
                        f"got {cfg.search.tournament_size}")
    return cfg


def _check_rungs(training: TrainingConfig) -> None:
    rungs = training.rungs
    if rungs is None:
        return
    if rungs.max_budget < rungs.min_budget:
        raise UserError(f"training.rungs.max_budget: must be at least min_budget ({rungs.min_budget:g}), got "
                        f"{rungs.max_budget:g}")
    n = len(rungs.budgets)
    if n > 20:
        raise UserError(f"training.rungs: {n} rungs from min_budget to max_budget; at most 20 (raise eta)")
    if rungs.data and (len(rungs.data) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       and 0 < v <= 1 for v in rungs.data)
                       or list(rungs.data) != sorted(rungs.data) or rungs.data[-1] != 1):
        raise UserError(f"training.rungs.data: must be {n} shares of the training rows, one per rung (budgets "
                        f"{', '.join(f'{b:g}' for b in rungs.budgets)}), each > 0 and <= 1, never falling, the last "
                        f"1; got {shown(rungs.data)}")
    if training.time_budget is not None:
        raise UserError("training.time_budget: leave it unset with training.rungs (the rungs set the budget)")


OBJECTIVES = ("metric", "latency", "parameters")


def _check_objectives(search: SearchConfig) -> None:
    names = search.objectives
    if not names or "metric" not in names or len(set(map(str, names))) != len(names) or \
            not all(isinstance(n, str) and n in OBJECTIVES for n in names):
        raise UserError(f"search.objectives: must be distinct names of {', '.join(map(repr, OBJECTIVES))}, "
                        f"'metric' among them, got {shown(names)}")
    if search.max_latency is not None and "latency" not in names:
        raise UserError("search.max_latency: set only with 'latency' in search.objectives")


def parse_yaml(text: str, where: str) -> Any:
    """Safe-load YAML `text`; a UserError naming `where`, the line and the problem if it is malformed."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise UserError(f"{where}: malformed YAML{at}: {problem}") from None


def read(path: str | Path) -> dict:
    """The mapping of sections a YAML config file holds, unchecked; UserError if it cannot be read, is not YAML,
    is empty or is not a mapping."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such config file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    data = parse_yaml(text, str(path))
    if data is None or data == {}:
        raise UserError(f"{path}: empty; a config must hold at least task.name (e.g. 'task: {{name: elemnet}}')")
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping of sections (run, task, search, ...), got {shown(data)}")
    return data


def from_file_data(data: dict, path: str | Path) -> Config:
    """Validate the mapping read from config file `path` (after any overrides): a file must name its task."""
    task = data.get("task")
    if isinstance(task, dict) and isinstance(task.get("options"), dict):
        task["options"] = {key: _beside(value, path) if key == "path" or key.endswith("_path") else value
                           for key, value in task["options"].items()}
    cfg = from_dict(data)
    if not isinstance(task, dict) or "name" not in task:
        raise UserError(f"{path}: task.name missing; a config must name its task (e.g. 'task: {{name: elemnet}}')")
    return cfg


def _beside(value: Any, config_path: str | Path) -> Any:
    """A task option naming a file (`path`, `*_path`), made absolute: relative paths are read from the config
    file's folder, so a run's saved config names the same files wherever it is used."""
    if not isinstance(value, str) or not value or "\0" in value:
        return value  # the option's own check reports it
    return str((Path(config_path).resolve().parent / Path(value).expanduser()).resolve())


def load(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    return from_file_data(read(path), path)


def save(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
