import csv
import math

import h5py
import numpy as np
import pytest

from menndl_py.errors import UserError
from menndl_py.tasks.elemnet import data as ed
from menndl_py.tasks.elemnet.data import (
    ELEMENTS,
    fractions,
    load_split,
    make_dataset,
    parse_formula,
    random_forest_baseline,
)

LIMIT = 3000
COUNT_KEYS = ("n_dropped_enthalpy", "n_dropped_elements", "n_dropped_unparseable")


# ------------------------------------------------------------------------------------------------ elements

def test_elements_are_elemnets_86_in_atomic_number_order():
    assert len(ELEMENTS) == 86 and len(set(ELEMENTS)) == 86
    assert ELEMENTS[:3] == ("H", "Li", "Be") and ELEMENTS[-3:] == ("U", "Np", "Pu")
    for absent in ("He", "Ne", "Ar", "Po", "At", "Rn", "Fr", "Ra", "Am"):
        assert absent not in ELEMENTS
    for present in ("Kr", "Xe", "Tc", "Pm", "Ac"):
        assert present in ELEMENTS
    # atomic-number order: the index follows the period table where nothing is skipped
    assert ELEMENTS.index("Cl") + 2 == ELEMENTS.index("Ca")   # Ar skipped
    assert ELEMENTS.index("Bi") + 1 == ELEMENTS.index("Ac")   # Po..Ra skipped
    assert ELEMENTS.index("La") + 14 == ELEMENTS.index("Lu")
    assert ELEMENTS.index("Fe") == 22


# ------------------------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("formula, expected", [
    ("Fe2O3", {"Fe": 2, "O": 3}),
    ("Ta2Te1Zr1", {"Ta": 2, "Te": 1, "Zr": 1}),
    ("NaCl", {"Na": 1, "Cl": 1}),
    ("Fe0.5O1.5", {"Fe": 0.5, "O": 1.5}),
    ("Li.25Co", {"Li": 0.25, "Co": 1}),
    ("Ca(OH)2", {"Ca": 1, "O": 2, "H": 2}),
    ("Mg(NO3)2(H2O)6", {"Mg": 1, "N": 2, "O": 12, "H": 12}),
    ("K4[Fe(CN)6]", {"K": 4, "Fe": 1, "C": 6, "N": 6}),
    ("Fe2((O)2)3", {"Fe": 2, "O": 6}),
    ("(Fe0.5)4", {"Fe": 2}),
    ("OFeO", {"O": 2, "Fe": 1}),
    ("CH3COOH", {"C": 2, "H": 4, "O": 2}),
    ("  Co1 ", {"Co": 1}),
    ("He2", {"He": 2}),             # a real element, parsed even though it is outside ELEMENTS
])
def test_parse_formula(formula, expected):
    got = parse_formula(formula)
    assert set(got) == set(expected)
    for el, amount in expected.items():
        assert got[el] == pytest.approx(amount)


@pytest.mark.parametrize("formula, words", [
    ("", "empty"),
    ("   ", "empty"),
    ("Xx2O", "unknown element"),
    ("Fe2Q3", "unknown element"),
    ("Fe2O3)", "unbalanced"),
    ("(Fe2O3", "unbalanced"),
    ("Ca(OH2", "unbalanced"),
    ("Fe(O]2", "closed by"),
    ("()", "empty group"),
    ("Fe()2", "empty group"),
    ("Fe0", "zero"),
    ("(Fe2)0", "zero"),
    ("2Fe", "follows no element"),
    ("Fe-O", "unexpected character"),
    ("Fe O", "unexpected character"),
    ("fe2o3", "unexpected character"),
    ("Fe..2", "unexpected character"),
    ("Fe1.2.3", "follows no element"),
    ("Fe2O3,", "unexpected character"),
])
def test_parse_formula_rejects_malformed(formula, words):
    with pytest.raises(ValueError) as info:
        parse_formula(formula)
    assert words in str(info.value)


def test_parse_formula_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_formula(None)  # type: ignore[arg-type]


def test_fractions_put_mass_on_the_right_elements():
    v = fractions("Fe2O3")
    assert v.shape == (86,) and v.dtype == np.float32
    assert v.sum() == pytest.approx(1.0, abs=1e-6)
    assert v[ELEMENTS.index("Fe")] == pytest.approx(0.4)
    assert v[ELEMENTS.index("O")] == pytest.approx(0.6)
    assert np.count_nonzero(v) == 2
    w = fractions("Ca(OH)2")
    assert w[ELEMENTS.index("Ca")] == pytest.approx(0.2)
    assert w[ELEMENTS.index("O")] == pytest.approx(0.4)
    assert w[ELEMENTS.index("H")] == pytest.approx(0.4)
    # scale-invariant, and a parsed mapping gives the same vector
    np.testing.assert_allclose(fractions("Fe4O6"), v)
    np.testing.assert_allclose(fractions({"Fe": 2.0, "O": 3.0}), v)
    last = fractions("Pu")
    assert last[85] == 1.0 and last.sum() == 1.0


@pytest.mark.parametrize("formula, culprit", [("HeFe", "He"), ("Po2O", "Po"), ("Ar1Kr1", "Ar")])
def test_fractions_name_elements_outside_elemnet(formula, culprit):
    with pytest.raises(ValueError) as info:
        fractions(formula)
    assert culprit in str(info.value)


def test_fractions_reject_malformed():
    with pytest.raises(ValueError):
        fractions("Fe2O3)")


# --------------------------------------------------------------------------------------------- make/load

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("elemnet") / "elemnet.h5"
    summary = make_dataset(path, limit=LIMIT)
    return path, summary


def _csv_rows(split, limit):
    with open(ed.source_dir() / f"{split}.csv", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return [row for _, row in zip(range(limit), reader)]


def test_make_dataset_counts_and_contents(small):
    path, summary = small
    assert set(summary) == {"train", "val", "test"}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    with h5py.File(path, "r") as f:
        assert [e.decode() if isinstance(e, bytes) else e for e in f.attrs["elements"]] == list(ELEMENTS)
        assert "OQMD" in f.attrs["source"] and "CrabNet" in f.attrs["source"]
        assert float(f.attrs["max_abs_enthalpy"]) == 5.0
        for split in ("train", "val", "test"):
            counts = summary[split]
            g = f[split]
            assert counts["n_raw"] == LIMIT
            assert counts["n_raw"] == counts["n_kept"] + sum(counts[k] for k in COUNT_KEYS)
            for key in ("n_raw", *COUNT_KEYS):
                assert int(g.attrs[key]) == counts[key]
            x, y = g["x"][:], g["y"][:]
            formulas = [s.decode() for s in g["formula"][:]]
            n = counts["n_kept"]
            assert x.shape == (n, 86) and x.dtype == np.float32
            assert y.shape == (n,) and y.dtype == np.float32
            assert len(formulas) == n and n > 0.9 * LIMIT
            assert np.all(np.abs(y) <= 5.0)
            np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-5)
            assert np.all(x >= 0)

            # CSV order kept, and each row is that formula's fractions and target
            expected = [(r[0], float(r[1])) for r in _csv_rows(split, LIMIT) if abs(float(r[1])) <= 5.0]
            assert formulas == [fm for fm, _ in expected]
            np.testing.assert_allclose(y, [t for _, t in expected], rtol=1e-6)
            for i in (0, 1, n // 2, n - 1):
                np.testing.assert_array_equal(x[i], fractions(formulas[i]))


def test_make_dataset_drops_bad_rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = {
        "train": [("Fe2O3", "-1.5"), ("HeFe", "0.1"), ("Xx2", "0.2"), ("NaCl", "-7.0"), ("Ca(OH)2", "-2.0"),
                  ("Li2O", "nan"), ("Mg1O1", ""), ("Po1Cu1", "0.3"), ("Al2O3", "5.0"), ("Si(O2", "1.0")],
        "val": [("Cu1Zn1", "0.01"), ("Fe0.5O1.5", "-1.2")],
        "test": [],
    }
    for split, data in rows.items():
        with open(src / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["formula", "target"])
            w.writerows(data)
    out = tmp_path / "sub" / "e.h5"
    summary = make_dataset(out, source=src)
    assert summary["train"] == {"n_raw": 10, "n_kept": 3, "n_dropped_enthalpy": 1, "n_dropped_elements": 2,
                                "n_dropped_unparseable": 4}
    assert summary["val"]["n_kept"] == 2 and summary["test"]["n_raw"] == 0 and summary["test"]["n_kept"] == 0
    with h5py.File(out, "r") as f:
        assert [s.decode() for s in f["train/formula"][:]] == ["Fe2O3", "Ca(OH)2", "Al2O3"]
        np.testing.assert_allclose(f["train/y"][:], [-1.5, -2.0, 5.0])
        assert f["test/x"].shape == (0, 86)
    x, y = load_split(out, "val")
    np.testing.assert_allclose(x[1], fractions("FeO3"), rtol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == [out.name]

    # a tighter cut drops more; rebuilding replaces the file in place
    summary = make_dataset(out, source=src, max_abs_enthalpy=1.0)
    assert summary["train"]["n_dropped_enthalpy"] == 4 and summary["train"]["n_kept"] == 0


def test_load_split_sizes_and_shards(small):
    path, summary = small
    x, y = load_split(path, "train")
    assert x.shape == (summary["train"]["n_kept"], 86) and y.shape == (x.shape[0],)
    assert x.dtype == np.float32 and y.dtype == np.float32

    xs, ys = load_split(path, "train", size=1001)
    assert xs.shape == (1001, 86)
    np.testing.assert_array_equal(xs, x[:1001])
    np.testing.assert_array_equal(ys, y[:1001])

    x0, y0 = load_split(path, "train", size=1001, shard=(0, 2))
    x1, y1 = load_split(path, "train", size=1001, shard=(1, 2))
    assert len(x0) == 501 and len(x1) == 500
    np.testing.assert_array_equal(x0, xs[0::2])
    np.testing.assert_array_equal(y1, ys[1::2])
    rows0 = {r.tobytes() for r in x0}
    rows1 = {r.tobytes() for r in x1}
    assert not rows0 & rows1                                     # disjoint
    assert rows0 | rows1 == {r.tobytes() for r in xs}            # and together the whole subset

    parts = [load_split(path, "val", shard=(r, 3))[1] for r in range(3)]
    assert sum(len(p) for p in parts) == summary["val"]["n_kept"]
    _, yv = load_split(path, "val")
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(yv))


def test_load_split_size_too_large_names_the_option(small):
    path, summary = small
    n = summary["val"]["n_kept"]
    with pytest.raises(UserError) as info:
        load_split(path, "val", size=n + 1)
    msg = str(info.value)
    assert "task.options.val_size" in msg and str(n) in msg and "\n" not in msg
    with pytest.raises(UserError, match="task.options.test_size"):
        load_split(path, "test", size=0)


def test_load_split_bad_arguments(small):
    path, _ = small
    with pytest.raises(UserError, match="split"):
        load_split(path, "holdout")
    with pytest.raises(UserError, match="shard"):
        load_split(path, "train", shard=(2, 2))


def _one_line_naming(info, path):
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_load_split_missing_file(tmp_path):
    path = tmp_path / "nothere.h5"
    with pytest.raises(UserError) as info:
        load_split(path, "train")
    assert "menndl data make elemnet" in _one_line_naming(info, path)


def test_load_split_garbage_file(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"this is not HDF5 at all\x00\x01\x02" * 100)
    with pytest.raises(UserError) as info:
        load_split(path, "train")
    assert "not a readable HDF5 file" in _one_line_naming(info, path)


def test_load_split_truncated_file(small, tmp_path):
    path, _ = small
    cut = tmp_path / "cut.h5"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        for split in ("train", "val", "test"):
            load_split(cut, split)
    _one_line_naming(info, cut)


def test_load_split_missing_group_and_bad_shapes(tmp_path):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train/x", data=np.zeros((10, 86), np.float32))
        f.create_dataset("train/y", data=np.zeros((10,), np.float32))
        f.create_dataset("test/x", data=np.zeros((10, 85), np.float32))
        f.create_dataset("test/y", data=np.zeros((10,), np.float32))
    x, y = load_split(path, "train")
    assert x.shape == (10, 86)
    with pytest.raises(UserError) as info:
        load_split(path, "val")
    assert "'val'" in _one_line_naming(info, path)
    with pytest.raises(UserError) as info:
        load_split(path, "test")
    assert "(10, 85)" in _one_line_naming(info, path)


# ----------------------------------------------------------------------------------------------- the recipe

def test_each_enthalpy_cut_has_its_own_file_and_the_default_keeps_its_name(tmp_path):
    from menndl_py.tasks import make_task

    default = make_task("elemnet", {}, tmp_path)
    assert default.data_path == tmp_path / "elemnet.h5"
    tighter = make_task("elemnet", {"max_abs_enthalpy": 3.0}, tmp_path)
    assert tighter.data_path.parent == tmp_path and tighter.data_path.name.startswith("elemnet-")
    assert tighter.data_path not in (default.data_path, make_task("elemnet", {"max_abs_enthalpy": 2.0}).data_path)
    assert make_task("elemnet", {"max_abs_enthalpy": 3}, tmp_path).data_path == tighter.data_path


def test_a_file_made_with_another_cut_is_never_used_silently(small, tmp_path):
    # the file of the default cut beside a config asking for 3 eV/atom: today's loader used it as it was
    from menndl_py.tasks import make_task

    path, _ = small
    (tmp_path / "elemnet.h5").write_bytes(path.read_bytes())
    tighter = make_task("elemnet", {"max_abs_enthalpy": 3.0, "train_size": 10}, tmp_path)
    with pytest.raises(UserError, match="no such file"):
        tighter.load("train")
    # a file of another cut where the recipe's own file should be (copied there, or made by an older version)
    made_with_3 = tmp_path / "made-with-3.h5"
    make_dataset(made_with_3, max_abs_enthalpy=3.0, limit=50)
    made_with_3.replace(tmp_path / "elemnet.h5")
    with pytest.raises(UserError) as info:
        make_task("elemnet", {}, tmp_path).check_data()
    assert _one_line_naming(info, tmp_path / "elemnet.h5").endswith(
        "was made with max_abs_enthalpy 3, but task.options.max_abs_enthalpy is 5; make it again with "
        "'menndl data make elemnet --force'")
    (tmp_path / "elemnet.h5").replace(tighter.data_path)
    assert tighter.load("train")[0].shape == (10, 86)
    unknown = tmp_path / "unknown.h5"
    with h5py.File(unknown, "w") as f:
        f.create_dataset("train/x", data=np.zeros((10, 86), np.float32))
        f.create_dataset("train/y", data=np.zeros((10,), np.float32))
    assert load_split(unknown, "train")[0].shape == (10, 86)  # no recipe asked for
    with pytest.raises(UserError, match="records no max_abs_enthalpy, but task.options.max_abs_enthalpy is 2;"):
        load_split(unknown, "train", max_abs_enthalpy=2.0)


# ------------------------------------------------------------------------------------------------ baseline

def test_random_forest_baseline_beats_the_mean(small):
    path, _ = small
    x_train, y_train = load_split(path, "train")
    x_val, y_val = load_split(path, "val")
    x_test, y_test = load_split(path, "test", size=1000)
    out = random_forest_baseline(x_train, y_train, {"val": (x_val, y_val), "test": (x_test, y_test)},
                                 n_estimators=30, seed=0)
    assert set(out) == {"val_mae", "test_mae", "fit_seconds"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    mean_mae = float(np.mean(np.abs(y_val - y_train.mean())))
    assert out["val_mae"] < 0.8 * mean_mae
    assert out["test_mae"] < 0.8 * float(np.mean(np.abs(y_test - y_train.mean())))
    again = random_forest_baseline(x_train, y_train, {"val": (x_val, y_val)}, n_estimators=30, seed=0)
    assert again["val_mae"] == out["val_mae"]                    # seeded
