"""`menndl_py.cli.main` in one process: any OSError that reaches it is one line naming the file and exit status 2
(under MPI, tests/mpi/test_failures.py: and every rank ends)."""
import errno
import os

import torch
import yaml
from launchers import menndl, one_line_error

from menndl_py.cli import main


def _synthetic_config(tmp_path) -> str:
    cfg = {"run": {"name": "job", "directory": str(tmp_path / "runs")}, "task": {"name": "synthetic"},
           "search": {"population": 4, "max_evaluations": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "c.yaml")


def test_an_oserror_is_one_line_naming_the_file(tmp_path):
    config = _synthetic_config(tmp_path)
    run_json = tmp_path / "runs" / "job" / "run.json"
    run_json.mkdir(parents=True)  # a directory where run.json is written
    assert one_line_error(menndl("run", config, "--no-progress", cwd=tmp_path)) == \
        f"{run_json}.tmp -> {run_json}: Is a directory"


def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    config = _synthetic_config(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)  # every snapshot and JSON file is renamed into place
    threads = torch.get_num_threads()
    try:
        assert main(["run", config, "--no-progress"]) == 2
    finally:
        torch.set_num_threads(threads)  # a search sets this process's threads; later tests time theirs
    assert capsys.readouterr().err == "menndl: error: No space left on device\n"
