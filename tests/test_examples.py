"""The README's worked examples: every example config is valid and names a task that takes a user's file, read
from the examples' data folder (which `python examples/make_examples.py` fills)."""
from pathlib import Path

import pytest

from menndl_py import config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_each_example_config_is_valid_and_reads_the_examples_data(path):
    cfg = config.load(path)
    assert cfg.task.name in ("tabular", "composition", "images", "segmentation")
    assert Path(cfg.task.options["path"]).parent == EXAMPLES / "data"
    if "labels_path" in cfg.task.options:
        assert Path(cfg.task.options["labels_path"]).parent == EXAMPLES / "data"
    assert cfg.search.max_minutes is not None


def test_the_examples_are_the_ones_the_readme_runs():
    readme = (EXAMPLES.parent / "README.md").read_text()
    for path in EXAMPLES.glob("*.yaml"):
        assert f"examples/{path.name}" in readme, path.name
