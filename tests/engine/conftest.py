"""The engine tests' fixture: a configured search, its run directory made, and an evaluator in this process."""
import pytest
from test_master import search_config

from menndl_py.engine.evaluator import Evaluator
from menndl_py.tasks import make_task
from menndl_py.train.group import LocalGroup


@pytest.fixture
def setup(make_config, elemnet_data_dir, cpu):
    """setup(name, **search) -> (cfg, task, evaluator) with the run directory made."""

    def make(name="run", data=None, **search):
        raw = search_config(elemnet_data_dir, **search)
        raw["run"] = {"name": name}
        for key, value in (data or {}).items():
            raw[key] = {**raw.get(key, {}), **value}
        cfg = make_config(raw)
        cfg.run_dir.mkdir(parents=True)
        task = make_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
        return cfg, task, Evaluator(cfg, task, LocalGroup(), cpu)

    return make
