"""Short real searches for the tests that launch jobs (mpirun, sbatch): a config writer and the stored rows."""
import csv
from pathlib import Path

import yaml


def write_config(tmp: Path, data_dir: Path, name: str = "config.yaml", **sections) -> Path:
    """ElemNet on 2,000 compounds, small networks, 2 epochs, groups of 2; `sections` update the defaults."""
    cfg = {"run": {"name": "job", "directory": str(tmp / "runs")},
           "task": {"name": "elemnet", "data_dir": str(data_dir),
                    "options": {"train_size": 2000, "val_size": 500, "test_size": 500}},
           "search": {"population": 4, "max_evaluations": 12, "surrogate_min_results": 4, "screen_factor": 4,
                      "seed": 3, "space": {"depth": [1, 3], "width": [16, 32, 64]}},
           "cluster": {"ranks_per_candidate": 2, "candidate_timeout": 60},
           "training": {"epochs": 2}}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as fh:
        return list(csv.DictReader(fh))
