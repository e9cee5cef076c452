"""menndl_py.rundir.results: rows appended and flushed, read back with their types, repaired after a kill."""
import json

import h5py
import numpy as np
import pandas as pd
import pytest

from menndl_py.errors import UserError
from menndl_py.rundir import ResultStore
from menndl_py.rundir.results import columns

METRICS = ["train_loss", "val_mae", "val_rmse"]
TRICKY = 'bad "quote", a comma, and\na newline\r\n\tplus  tabs'


def make_row(i: int, status: str = "ok", **changes) -> dict:
    ok = status == "ok"
    row = {
        "id": i, "rung": 0, "budget": None, "genome_hash": f"{i:016x}", "parents": "" if i < 2 else f"{i - 2};{i - 1}",
        "origin": "random" if i < 2 else "offspring", "status": status,
        "fitness": 0.1 + 0.2 * i if ok else None, "predicted": 0.3 if i >= 2 else None, "screened": int(i >= 2),
        "params": 1000 + i, "flops": 2000 + i, "depth": 1 + i % 3, "group": i % 2, "host": "node-a", "ranks": 2,
        "submit_time": 1.7e9 + i, "start_time": 1.7e9 + i + 0.25, "end_time": 1.7e9 + i + 1.125,
        "train_seconds": 0.875 if ok else None, "epochs": 3 if ok else 0,
        "m:train_loss": 0.5 if ok else None, "m:val_mae": 0.1 + 0.2 * i if ok else None,
        "m:val_rmse": 0.2 + 0.2 * i if ok else None,
        "message": "" if ok else f"{status}: went wrong",
        "genome": json.dumps({"layers": [{"width": 16 * (i + 1)}], "training": {"lr": 0.001}},
                             separators=(",", ":"), sort_keys=True),
        "curve": json.dumps([{"epoch": e, "train_loss": 1.0 / e, "seconds": 0.5 * e} for e in range(1, 4)]
                            if ok else []),
    }
    row.update(changes)
    return row


def write(run_dir, rows):
    store = ResultStore(run_dir, METRICS)
    for row in rows:
        store.append(row)
    store.close()
    return store


def test_rows_read_back_identical_with_their_types(tmp_path):
    rows = [make_row(0), make_row(1, "error"), make_row(2, "timeout", message=TRICKY), make_row(3)]
    first = write(tmp_path, rows)
    again = ResultStore(tmp_path, METRICS)
    try:
        assert again.rows == first.rows and len(again.rows) == 4
        r0, r1 = again.rows[0], again.rows[1]
        assert r0["fitness"] == 0.1 and type(r0["fitness"]) is float
        assert r0["m:val_rmse"] == 0.2 and r0["submit_time"] == 1.7e9 and r0["start_time"] == 1.7e9 + 0.25
        for name in ("id", "params", "flops", "depth", "group", "ranks", "epochs", "screened"):
            assert type(r0[name]) is int, name
        assert (r0["id"], r0["params"], r0["screened"], r0["epochs"]) == (0, 1000, 0, 3)
        assert r1["fitness"] is None and r1["train_seconds"] is None and r1["m:val_mae"] is None
        assert r1["predicted"] is None and r0["predicted"] is None and again.rows[3]["predicted"] == 0.3
        assert r0["parents"] == "" and again.rows[3]["parents"] == "1;2"
        assert r1["message"] == "error: went wrong" and r0["message"] == ""
        assert json.loads(r0["genome"]) == json.loads(rows[0]["genome"])
        assert json.loads(r0["curve"]) == json.loads(rows[0]["curve"])
        for row, original in zip(again.rows, rows):  # everything given comes back as given (floats exactly)
            for key in ("fitness", "end_time", "train_seconds", "m:val_mae", "genome_hash", "status", "host"):
                assert row[key] == original[key], key
    finally:
        again.close()


def test_messages_with_quotes_commas_and_newlines_survive(tmp_path):
    rows = [make_row(0, "error", message=TRICKY), make_row(1), make_row(2, "oom", message='"",,"\n')]
    write(tmp_path, rows)
    csv_text = (tmp_path / "results.csv").read_text()
    assert len(csv_text.splitlines()) == 1 + 3  # no row split over lines
    frame = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    assert list(frame.columns) == columns(METRICS) and len(frame) == 3
    # quotes and commas kept exactly; runs of whitespace (newlines, tabs) become one space
    expected = 'bad "quote", a comma, and a newline plus tabs'
    assert frame["message"][0] == expected and frame["message"][2] == '"",,"'
    again = ResultStore(tmp_path, METRICS)
    assert again.rows[0]["message"] == expected and again.rows[1]["status"] == "ok"
    assert again.rows[2]["message"] == '"",,"'
    again.close()


def test_rows_are_on_disk_before_close(tmp_path):
    store = ResultStore(tmp_path, METRICS)
    store.append(make_row(0))
    store.append(make_row(1, "error"))
    frame = pd.read_csv(tmp_path / "results.csv")  # another reader, while the store is still open
    assert list(frame["id"]) == [0, 1] and list(frame["status"]) == ["ok", "error"]
    store.close()


def test_columns_follow_the_run_directory_doc(tmp_path):
    write(tmp_path, [make_row(0)])
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:21] == ["id", "rung", "budget", "genome_hash", "parents", "origin", "status", "fitness",
                           "predicted", "screened", "params", "flops", "depth", "group", "host", "ranks",
                           "submit_time", "start_time", "end_time", "train_seconds", "epochs"]
    assert header[21:] == ["m:train_loss", "m:val_mae", "m:val_rmse", "message", "genome", "curve"]


def test_numpy_values_are_stored_as_plain_numbers(tmp_path):
    # np.float64 is a float whose repr is 'np.float64(...)' under numpy 2: it used to be written as such and
    # the run could no longer be opened ("corrupt row")
    row = make_row(0, fitness=np.float64(0.25), params=np.int64(7), screened=np.bool_(True),
                   train_seconds=np.float32(0.5), **{"m:val_mae": np.float64(0.25)})
    first = write(tmp_path, [row, make_row(1)])
    again = ResultStore(tmp_path, METRICS)
    assert again.rows == first.rows
    r = again.rows[0]
    assert (r["fitness"], r["params"], r["screened"], r["train_seconds"]) == (0.25, 7, 1, 0.5)
    assert type(r["fitness"]) is float and type(r["params"]) is int
    again.close()


def test_a_bad_value_leaves_no_row_behind(tmp_path):
    store = ResultStore(tmp_path, METRICS)
    store.append(make_row(0))
    with pytest.raises(ValueError):
        store.append(make_row(1, params="many"))
    store.append(make_row(1))
    store.close()
    again = ResultStore(tmp_path, METRICS)
    assert [r["id"] for r in again.rows] == [0, 1]
    again.close()


# --------------------------------------------------------------------------------------------- repairs

def test_half_written_last_line_is_dropped_and_truncated(tmp_path):
    write(tmp_path, [make_row(0), make_row(1)])
    path = tmp_path / "results.csv"
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b"2,0000000000000002,0;1,offspring,ok,0.5,,1,10")  # killed mid-line
    store = ResultStore(tmp_path, METRICS)
    assert [r["id"] for r in store.rows] == [0, 1]
    assert path.read_bytes() == whole
    store.append(make_row(2))
    store.close()
    again = ResultStore(tmp_path, METRICS)
    assert [r["id"] for r in again.rows] == [0, 1, 2] and again.rows[2]["fitness"] == make_row(2)["fitness"]
    again.close()


def test_half_written_header_starts_afresh(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"id,genome_hash,par")
    store = ResultStore(tmp_path, METRICS)
    assert store.rows == []
    store.append(make_row(0))
    store.close()
    again = ResultStore(tmp_path, METRICS)
    assert [r["id"] for r in again.rows] == [0]
    again.close()


def h5_rows(path) -> dict:
    """results.h5 as {id: (row dict, genome JSON, curve array)}."""
    with h5py.File(path, "r") as h5:
        evals, curves = h5["evals"], h5["curves"][:]
        return {int(i): (json.loads(r), g, curves[curves[:, 0] == i][:, 1:])
                for i, r, g in zip(evals["id"][:], evals["row"].asstr()[:], evals["genome"].asstr()[:])}


@pytest.mark.parametrize("damage", ["garbage", "missing", "lagging", "old layout"])
def test_results_h5_is_rebuilt_from_the_csv(tmp_path, damage):
    rows = [make_row(0), make_row(1, "error"), make_row(2), make_row(3, "refused")]
    write(tmp_path, rows)
    h5_path = tmp_path / "results.h5"
    if damage == "garbage":
        h5_path.write_bytes(b"\x00\xffnot hdf5 at all" * 64)
    elif damage == "missing":
        h5_path.unlink()
    elif damage == "lagging":  # a kill before the last batch reached it
        with h5py.File(h5_path, "a") as h5:
            h5["evals/id"].resize((2,))
    else:  # one group per evaluation, as earlier versions wrote it
        h5_path.unlink()
        with h5py.File(h5_path, "w") as h5:
            h5.create_group("evals/00000000").attrs["row"] = "{}"
    store = ResultStore(tmp_path, METRICS)
    store.close()
    stored = h5_rows(h5_path)
    assert sorted(stored) == [0, 1, 2, 3]
    for row, original in zip(store.rows, rows):
        scalars, genome, curve = stored[row["id"]]
        assert scalars["status"] == original["status"] and scalars["params"] == original["params"]
        assert scalars["fitness"] == original["fitness"]  # None stays None
        assert genome == original["genome"]
        expected = json.loads(original["curve"])
        assert curve.shape == (len(expected), 3)
        assert curve[:, 0].tolist() == [c["epoch"] for c in expected]
        assert curve[:, 1].tolist() == [c["train_loss"] for c in expected]


def test_h5_matches_csv_after_appends(tmp_path):
    first = write(tmp_path, [make_row(i) for i in range(3)])
    stored = h5_rows(tmp_path / "results.h5")
    assert sorted(stored) == [0, 1, 2]
    assert stored[1][0]["m:val_mae"] == first.rows[1]["m:val_mae"] and stored[1][0]["host"] == "node-a"


def test_h5_is_written_in_batches_and_at_close(tmp_path):
    store = ResultStore(tmp_path, METRICS)
    for i in range(3):
        store.append(make_row(i))
    assert store.h5_pending == 3 and h5_rows_open(store) == []  # the CSV has them; results.h5 waits
    store.write_h5()
    assert store.h5_pending == 0 and h5_rows_open(store) == [0, 1, 2]
    store.append(make_row(3))
    store.close()
    assert sorted(h5_rows(tmp_path / "results.h5")) == [0, 1, 2, 3]


def h5_rows_open(store) -> list:
    return store._h5["evals/id"][:].tolist()


def test_header_mismatch_is_a_user_error(tmp_path):
    write(tmp_path, [make_row(0)])
    with pytest.raises(UserError, match="columns do not match"):
        ResultStore(tmp_path, ["train_loss", "val_accuracy"])


def test_corrupt_row_is_a_user_error(tmp_path):
    write(tmp_path, [make_row(0)])
    with open(tmp_path / "results.csv", "a") as fh:
        fh.write("x" + ",1" * (len(columns(METRICS)) - 1) + "\n")
    with pytest.raises(UserError, match="corrupt row"):
        ResultStore(tmp_path, METRICS)


@pytest.mark.parametrize("line, named", [("3,abc", "line 3 has 2 fields, expected"),
                                         ("3,0,,abc" + ",x" * 23, "line 3, column fitness: 'x' is not a number")])
def test_a_short_or_mistyped_row_is_named_by_line_and_column(tmp_path, line, named):
    write(tmp_path, [make_row(0)])
    with open(tmp_path / "results.csv", "a") as fh:
        fh.write(line + "\n")
    before = (tmp_path / "results.csv").read_bytes()
    with pytest.raises(UserError) as error:
        ResultStore(tmp_path, METRICS)
    assert str(error.value).startswith(f"{tmp_path / 'results.csv'}: {named}") and "\n" not in str(error.value)
    assert (tmp_path / "results.csv").read_bytes() == before  # nothing changed on disk


def test_a_results_file_that_is_not_text_is_a_user_error(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"id,genome\x00\xff\xfe\n")
    with pytest.raises(UserError, match="not a results table"):
        ResultStore(tmp_path, METRICS)


def test_a_failed_write_leaves_whole_rows_only(tmp_path, monkeypatch):
    """A full disk in the middle of a row: the part written is taken back, and the next row follows whole."""
    import errno
    import os

    store = ResultStore(tmp_path, METRICS)
    store.append(make_row(0))
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        store.append(make_row(1))
    monkeypatch.setattr(os, "write", real_write)
    store.append(make_row(2))
    store.close()
    assert [r["id"] for r in ResultStore(tmp_path, METRICS).rows] == [0, 2]


def test_a_table_from_before_rungs_is_read_as_rung_0_and_upgraded(tmp_path):
    rows = [make_row(0), make_row(1, "error", message=TRICKY), make_row(2)]
    write(tmp_path, rows)
    path = tmp_path / "results.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.drop(columns=["rung", "budget"]).to_csv(path, index=False)  # as menndl_py wrote it before
    store = ResultStore(tmp_path, METRICS)
    assert [(r["id"], r["rung"], r["budget"]) for r in store.rows] == [(0, 0, None), (1, 0, None), (2, 0, None)]
    assert [r["message"] for r in store.rows] == [r["message"] for r in ResultStore(tmp_path, METRICS).rows]
    store.append(make_row(3, rung=1, budget=30.0))
    store.close()
    again = ResultStore(tmp_path, METRICS)
    assert path.read_text().splitlines()[0].startswith("id,rung,budget,genome_hash")
    assert [(r["id"], r["rung"], r["budget"]) for r in again.rows][-1] == (3, 1, 30.0)
    again.close()
