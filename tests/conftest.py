"""Shared fixtures: a tiny ElemNet data set made once per session, configs from dicts, a quiet torch."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from menndl_py.config import Config, from_dict
from menndl_py.tasks.elemnet.data import make_dataset


def merged(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top, mappings merged key by key (neither argument is changed)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _mpi_initialised() -> bool:
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and mpi.Is_initialized()


@pytest.fixture(autouse=True)
def no_mpi_in_the_test_process():
    """The test process is never an MPI rank. A library that initialises MPI in it (ASE's optimizers and readers
    do, once anything has imported mpi4py) makes it a singleton, which took a whole session down later with its
    output lost: the test that started MPI fails instead, by name."""
    before = _mpi_initialised()
    yield
    assert before or not _mpi_initialised(), "this test initialised MPI in the test process (see conftest.py)"


@pytest.fixture(scope="session")
def elemnet_data_dir(tmp_path_factory) -> Path:
    """A directory holding elemnet.h5 built from the first 3000 rows of each OQMD split."""
    directory = tmp_path_factory.mktemp("elemnet-data")
    counts = make_dataset(directory / "elemnet.h5", limit=3000)
    assert all(c["n_kept"] >= 1000 for c in counts.values()), counts
    return directory


@pytest.fixture(scope="session")
def cpu() -> torch.device:
    """One torch thread (deterministic, polite on shared cores), with the first-optimizer cost paid up front:
    building the first optimizer of a process imports torch._dynamo, which takes seconds and would otherwise be
    charged to whichever timed test trains first."""
    torch.set_num_threads(1)
    torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
    return torch.device("cpu")


@pytest.fixture
def make_config(tmp_path):
    """make_config({...}) -> Config: the given sections over the defaults, run directory under tmp_path."""

    def make(data: dict | None = None) -> Config:
        base = {"run": {"name": "test", "directory": str(tmp_path / "runs")}}
        return from_dict(merged(base, data or {}))

    return make


def pytest_collection_modifyitems(items):
    """Every test under tests/mpi is marked `mpi`, every one under tests/slurm `slurm` (others are marked where
    they launch ranks or take long), so that `pytest -m "not mpi and not slurm and not slow"` is the fast suite."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in ("mpi", "slurm"):
            if kind in parts[-2:-1]:
                item.add_marker(getattr(pytest.mark, kind))
