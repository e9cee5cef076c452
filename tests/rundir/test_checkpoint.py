"""menndl_py.rundir.checkpoint: a snapshot plus a journal of genomes sent, read back as one state after any kill."""
import json

import pytest

from menndl_py.errors import UserError
from menndl_py.rundir import Checkpoint, read_checkpoint
from menndl_py.rundir.checkpoint import journal_path


def state(in_flight, next_id=0, finished=False):
    return {"fingerprint": "f", "next_id": next_id, "ga": {"asks": next_id}, "in_flight": in_flight,
            "elapsed": 1.0, "finished": finished}


def entry(i, group=0):
    return {"work": {"id": i, "group": group}, "next_id": i + 1, "ga": {"asks": i + 1}, "elapsed": 2.0 + i}


def test_journal_lines_are_applied_to_the_snapshot(tmp_path):
    path = tmp_path / "checkpoint.json"
    cp = Checkpoint(path)
    cp.snapshot(state([{"id": 0, "group": 0}], next_id=1))
    for i in (1, 2):
        cp.append(entry(i))
    cp.append(entry(0, group=5))  # a genome sent again (resumed): one entry per id, the latest
    got = read_checkpoint(path)
    assert [w["id"] for w in got["in_flight"]] == [0, 1, 2] and got["in_flight"][0]["group"] == 5
    assert (got["next_id"], got["ga"], got["elapsed"], got["seq"]) == (1, {"asks": 1}, 2.0, 3)
    assert json.loads(path.read_text())["in_flight"] == [{"id": 0, "group": 0}]  # the snapshot is untouched
    cp.close()


def test_a_half_written_line_is_ignored(tmp_path):
    path = tmp_path / "checkpoint.json"
    cp = Checkpoint(path)
    cp.snapshot(state([]))
    cp.append(entry(0))
    with open(journal_path(path), "a") as fh:
        fh.write('{"work": {"id": 1')  # killed mid-line
    assert [w["id"] for w in read_checkpoint(path)["in_flight"]] == [0]
    cp.close()


def test_a_kill_between_snapshot_and_emptying_the_journal_applies_nothing_twice(tmp_path):
    path = tmp_path / "checkpoint.json"
    cp = Checkpoint(path)
    cp.snapshot(state([]))
    cp.append(entry(0))
    cp.append(entry(1))
    stale = journal_path(path).read_bytes()
    cp.snapshot(state([{"id": 1, "group": 0}], next_id=2))  # entry 0 came back meanwhile
    journal_path(path).write_bytes(stale)  # as if the kill came before the journal was emptied
    got = read_checkpoint(path)
    assert [w["id"] for w in got["in_flight"]] == [1] and got["next_id"] == 2
    resumed = Checkpoint(path, got["seq"])  # the next lines continue the numbering
    resumed.snapshot(got)
    resumed.append(entry(2))
    assert [w["id"] for w in read_checkpoint(path)["in_flight"]] == [1, 2]
    cp.close()
    resumed.close()


def test_unreadable_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "checkpoint.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        read_checkpoint(path)
    assert read_checkpoint(tmp_path / "none.json") is None


def test_attempts_count_each_send_of_an_id(tmp_path):
    path = tmp_path / "checkpoint.json"
    cp = Checkpoint(path)
    cp.snapshot({**state([{"id": 0, "group": 0}], next_id=1), "attempts": {"0": 1}})
    cp.append(entry(1))
    cp.append(entry(0, group=1))  # id 0 sent again after a restart
    assert read_checkpoint(path)["attempts"] == {0: 2, 1: 1}
    cp.close()


@pytest.mark.parametrize("snapshot", ["", "\0\0\0", "[1, 2]", None])
def test_a_damaged_snapshot_is_rebuilt_from_the_journal_with_one_warning(tmp_path, snapshot):
    path = tmp_path / "checkpoint.json"
    cp = Checkpoint(path)
    cp.snapshot(state([{"id": 0, "group": 0}], next_id=1))
    cp.append(entry(1))
    cp.close()
    if snapshot is None:
        path.unlink()
    else:
        path.write_text(snapshot)  # a crash of the node before the renamed file reached the disk
    with pytest.raises(UserError, match="unreadable checkpoint"):
        read_checkpoint(path)
    warnings = []
    got = read_checkpoint(path, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}: empty or unreadable")
    assert got["fingerprint"] is None and [w["id"] for w in got["in_flight"]] == [1]  # id 0 is not known any more
    assert (got["next_id"], got["ga"], got["attempts"]) == (2, {"asks": 2}, {1: 1})


def test_journal_lines_that_do_not_parse_end_it_with_a_warning(tmp_path):
    path = tmp_path / "checkpoint.json"
    cp = Checkpoint(path)
    cp.snapshot(state([]))
    cp.append(entry(0))
    cp.close()
    with open(journal_path(path), "ab") as fh:
        fh.write(b"\0\0\0\0\n" + json.dumps({**entry(1), "seq": 2}).encode() + b"\n")
    with pytest.raises(UserError, match="unreadable journal"):
        read_checkpoint(path)
    warnings = []
    assert [w["id"] for w in read_checkpoint(path, warn=warnings.append)["in_flight"]] == [0]
    assert len(warnings) == 1 and "line 2" in warnings[0]


def test_a_snapshot_is_forced_to_disk_file_then_directory(tmp_path, monkeypatch):
    import os

    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    cp = Checkpoint(tmp_path / "checkpoint.json")
    cp.snapshot(state([]))
    assert synced == [str(tmp_path / "checkpoint.json.tmp"), str(tmp_path)]
    cp.append(entry(0))
    cp.sync()
    assert synced[2:] == [str(tmp_path / "checkpoint.journal")]
    cp.close()
