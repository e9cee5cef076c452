"""`menndl predict` over 4 ranks: rank 0 gathers what every rank finds, with uneven shares and skipped files, and
never waits for a message that was swallowed (20 predictions in one job, which has a time-out)."""
import json
from pathlib import Path

import h5py
import numpy as np
import torch
from launchers import PYTHON, mpirun

from menndl_py import config
from menndl_py.genome import Genome
from menndl_py.tasks import make_task

HERE = Path(__file__).parent
LEVEL = {"filters": 4, "kernel": 3, "convs": 1, "activation": "relu", "norm": "none", "down": "max",
         "up": "nearest", "skip": True, "dropout": 0.0}
GENOME = Genome([LEVEL, dict(LEVEL, filters=8)], {"learning_rate": 1e-3, "batch_size": 4, "optimizer": "adam",
                                                  "weight_decay": 0.0})


def test_four_ranks_with_uneven_shares_never_hang(tmp_path):
    cfg = config.from_dict({"run": {"name": "r", "directory": str(tmp_path / "runs")},
                            "task": {"name": "stem_defects", "data_dir": str(tmp_path / "data")}})
    (cfg.run_dir / "best").mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    (cfg.run_dir / "best" / "genome.json").write_text(json.dumps(GENOME.to_json()))
    torch.manual_seed(0)
    torch.save(make_task("stem_defects", {}, tmp_path / "data").space().build(GENOME).state_dict(),
               cfg.run_dir / "best" / "model.pt")
    rng = np.random.default_rng(0)
    for n in range(5, 18):
        with h5py.File(tmp_path / f"stack{n}.h5", "w") as f:
            f["images"] = rng.random((n, 64, 64), dtype=np.float32)
    (tmp_path / "corrupt.tif").write_bytes(b"not a tiff")
    out = mpirun(4, PYTHON, str(HERE / "mpi_scripts.py"), "predict_many", str(tmp_path), timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert [r["i"] for r in results] == list(range(20))
    for r in results:
        skipped = int(r["i"] % 3 == 0)
        assert (r["maps"], r["skipped"], r["status"]) == (r["images"], skipped, skipped), r
