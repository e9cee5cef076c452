"""A run directory's layout: the one place that names its files. JSON files are written whole and renamed into
place, so a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from menndl_py.errors import UserError

GENOME, WEIGHTS, RECORD = "genome.json", "model.pt", "result.json"  # a saved network's three files
NETWORK_NAMES = ("best", "final")  # the trained networks a run directory keeps
SURROGATE_COLUMNS = ["refit", "n_results", "n_train", "fit_seconds", "spearman", "n_scored"]


def fsync_dir(path: Path) -> None:
    """Make the names in directory `path` (a file renamed into it) survive a crash of the node."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """A reader sees the old or the new file, never half of one, and after a crash of the node the new one: the
    file is forced to disk before the rename, and the directory after it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data))  # json.dumps uses the C encoder; json.dump to a file does not
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class RunDir:
    """`runs/<name>/`: config.yaml, run.json, results.csv/.h5, surrogate.csv, the checkpoint, the lock,
    baselines.json, the best network of the search (best/; with several objectives, the network to use by default),
    the retrained one (final/), the Pareto front's networks (pareto/<id>/) or the ensemble's (ensemble/<id>/,
    with `search.keep_top`; retrained, final_ensemble/<id>/), states/, report/."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.run_json = self.path / "run.json"
        self.results = self.path / "results.csv"  # the durable record, a row per evaluation
        self.results_h5 = self.path / "results.h5"
        self.surrogate_csv = self.path / "surrogate.csv"
        self.checkpoint = self.path / "checkpoint.json"
        self.lock = self.path / "run.lock"  # held by the one `menndl run` or `resume` working here
        self.baselines = self.path / "baselines.json"
        self.baseline_outputs = self.path / "baselines"  # each baseline network as a run, methods' parameters
        self.report = self.path / "report"
        self.best = self.path / "best"  # the search's best network, as it was trained in the search
        self.final = self.path / "final"  # that network trained again by `menndl retrain`
        self.states = self.path / "states"  # training states of candidates that may be promoted (rundir.states)
        self.pareto = self.path / "pareto"  # with several objectives: a network per front member at the top rung
        self.ensemble = self.path / "ensemble"  # with search.keep_top: the networks of the K best at the top rung
        self.ensemble_record = self.path / "ensemble.json"  # their members, calibration and scores, at the end
        self.final_ensemble = self.path / "final_ensemble"  # those networks trained again by `menndl retrain`
        self.final_ensemble_record = self.path / "final_ensemble.json"

    @staticmethod
    def member_ids(kept: Path) -> list[int]:
        """The ids of the networks kept in `kept` (pareto/ or ensemble/: a network per id), in order."""
        if not kept.is_dir():
            return []
        return sorted(int(p.name) for p in kept.iterdir() if p.name.isdigit())

    def ensemble_files(self, retrained: bool) -> tuple[Path, Path]:
        """(networks, record) of the search's ensemble, or (`retrained`) of its networks trained again."""
        return (self.final_ensemble, self.final_ensemble_record) if retrained else (self.ensemble,
                                                                                     self.ensemble_record)

    def network_to_use(self) -> Path:
        """Where the network to use is: final/ after `menndl retrain`, else best/."""
        return self.final if (self.final / WEIGHTS).is_file() else self.best

    def keeps(self, work_id: str) -> bool:
        """Whether the network of evaluation `work_id` is kept whole, as a front or ensemble member."""
        return any((kept / work_id / WEIGHTS).is_file() for kept in (self.ensemble, self.pareto))

    def network_named(self, name: str) -> Path:
        """The trained network `name`: one of NETWORK_NAMES, or the id of a Pareto front or ensemble member; UserError
        if it is not there."""
        if name.isdigit():
            if not self.keeps(name):
                ids = ", ".join(map(str, self.member_ids(self.pareto) + self.member_ids(self.ensemble))) or "none"
                raise UserError(f"{self.pareto / name}: no front or ensemble member {name}; the run keeps the "
                                f"networks of ids: {ids}")
            return self.ensemble / name if (self.ensemble / name / WEIGHTS).is_file() else self.pareto / name
        if name not in NETWORK_NAMES:
            raise UserError(f"--network: must be best, final or the id of a Pareto front or ensemble member, got "
                            f"{name!r}")
        where = {"best": self.best, "final": self.final}[name]
        if not (where / WEIGHTS).is_file():
            raise UserError(f"{where}: no retrained network; 'menndl retrain {self.path}' makes it" if name == "final"
                            else f"{where}: no trained network yet; the search stores its best there")
        return where

    def has_trained_network(self) -> bool:
        return (self.best / WEIGHTS).is_file()

    # -- run.json, ensemble.json --------------------------------------------------------------------
    @staticmethod
    def read_json(path: Path) -> dict:
        """A JSON object of the run ({} if the file is absent); UserError if it is not one."""
        if not path.is_file():
            return {}
        try:
            facts = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path}: unreadable ({exc})") from None
        if not isinstance(facts, dict):
            raise UserError(f"{path}: expected a JSON object")
        return facts

    def read_run_json(self) -> dict:
        return self.read_json(self.run_json)

    def update_run_json(self, **facts) -> None:
        write_json_atomic(self.run_json, {**self.read_run_json(), **facts})

    # -- baselines.json ------------------------------------------------------------------------------
    def write_baselines(self, results: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.baselines.write_text(json.dumps(results, indent=2))

    def read_baselines(self) -> dict:
        return json.loads(self.baselines.read_text()) if self.baselines.is_file() else {}

    # -- surrogate.csv -------------------------------------------------------------------------------
    def append_surrogate_row(self, row: dict) -> None:
        """One refit of the surrogate: how well it ranked the results that followed it."""
        new = not self.surrogate_csv.exists()
        with open(self.surrogate_csv, "a", newline="") as fh:
            writer = csv.DictWriter(fh, SURROGATE_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in SURROGATE_COLUMNS})


def genome_file(path: Path) -> Path:
    """A genome JSON file named directly, or the best network's of a run directory."""
    path = Path(path)
    return RunDir(path).best / GENOME if path.is_dir() else path
