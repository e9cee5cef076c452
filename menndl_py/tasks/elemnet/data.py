"""ElemNet data: OQMD formation enthalpies as 86-element composition fractions, built into one HDF5 file."""
from __future__ import annotations

import csv
import importlib.util
import math
import os
import re
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from menndl_py.errors import UserError
from menndl_py.tasks.base import SPLITS
from menndl_py.tasks.making import temp_path

# The 86 input elements of ElemNet (Jha et al., Sci. Rep. 8, 17593, 2018), in atomic-number order.
# Absent: He, Ne, Ar (no compounds) and Po, At, Rn, Fr, Ra and everything past Pu.
ELEMENTS: tuple[str, ...] = (
    "H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi",
    "Ac", "Th", "Pa", "U", "Np", "Pu",
)
assert len(ELEMENTS) == 86 and len(set(ELEMENTS)) == 86

_INDEX = {symbol: i for i, symbol in enumerate(ELEMENTS)}

# Every element symbol (Z = 1..118), so that "He" is a known element outside ELEMENTS while "Xx" is malformed.
_PERIODIC_TABLE = frozenset((
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu "
    "Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr "
    "Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split())
assert len(_PERIODIC_TABLE) == 118

SOURCE = (
    "OQMD formation enthalpies (Saal et al., JOM 65, 1501 (2013); Kirklin et al., npj Comput. Mater. 1, 15010 "
    "(2015)); train/val/test split from the CrabNet benchmark data (Wang et al., npj Comput. Mater. 7, 77 "
    "(2021)); data licensed CC-BY 4.0"
)

_MAKE_HINT = "run 'menndl data make elemnet'"
DEFAULT_MAX_ABS_ENTHALPY = 5.0  # eV/atom: the recipe of the file named elemnet.h5

# Tokens: element symbol | count | '(' | ')'.  Anything else is a bad character.
_TOKEN = re.compile(r"([A-Z][a-z]?)|(\d+(?:\.\d*)?|\.\d+)|([(\[])|([)\]])")
# A formula without groups, the common case: parsed with one findall.
_FLAT = re.compile(r"(?:[A-Z][a-z]?(?:\d+(?:\.\d*)?|\.\d+)?)+")
_FLAT_PAIR = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")
_CLOSING = {"(": ")", "[": "]"}


def _finish(formula: str, amounts: dict[str, float]) -> dict[str, float]:
    out = {el: a for el, a in amounts.items() if a != 0.0}
    total = sum(out.values())
    if not out or not (total > 0.0) or not math.isfinite(total):
        raise ValueError(f"formula {formula!r}: total amount is zero or not finite")
    return out


def parse_formula(formula: str) -> dict[str, float]:
    """Element symbol -> amount, e.g. 'Ca(OH)2' -> {'Ca': 1, 'O': 2, 'H': 2}.

    Counts may be integers or decimals (``Fe0.5O1.5``), a missing count means 1, groups in ``()`` or ``[]``
    nest and take a multiplier, a repeated element is summed, elements with a zero amount are left out.
    Raises ValueError for anything malformed: unknown symbol, bad character, unbalanced or empty parentheses,
    a count with nothing before it, a zero total.
    """
    if not isinstance(formula, str):
        raise ValueError(f"formula must be a string, got {type(formula).__name__}")
    text = formula.strip()
    if not text:
        raise ValueError("empty formula")

    if _FLAT.fullmatch(text):
        amounts: dict[str, float] = {}
        for symbol, count in _FLAT_PAIR.findall(text):
            if symbol not in _PERIODIC_TABLE:
                raise ValueError(f"formula {formula!r}: unknown element symbol {symbol!r}")
            amounts[symbol] = amounts.get(symbol, 0.0) + (float(count) if count else 1.0)
        return _finish(formula, amounts)

    stack: list[dict[str, float]] = [{}]
    opened: list[tuple[str, int]] = []      # (bracket, position) of each open group
    target: dict[str, float] | None = None  # what a following count multiplies (last element or closed group)
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"formula {formula!r}: unexpected character {text[pos]!r} at position {pos}")
        symbol, count, open_, close = m.groups()
        if symbol is not None:
            if symbol not in _PERIODIC_TABLE:
                raise ValueError(f"formula {formula!r}: unknown element symbol {symbol!r} at position {pos}")
            if target is not None:
                _merge(stack[-1], target)
            target = {symbol: 1.0}
        elif count is not None:
            if target is None:
                raise ValueError(f"formula {formula!r}: count {count!r} at position {pos} follows no element "
                                 "or group")
            target = {el: a * float(count) for el, a in target.items()}
            _merge(stack[-1], target)
            target = None
        elif open_ is not None:
            if target is not None:
                _merge(stack[-1], target)
                target = None
            stack.append({})
            opened.append((open_, pos))
        else:
            if not opened:
                raise ValueError(f"formula {formula!r}: unbalanced parentheses, {close!r} at position {pos} "
                                 "closes nothing")
            bracket, where = opened.pop()
            if _CLOSING[bracket] != close:
                raise ValueError(f"formula {formula!r}: {bracket!r} at position {where} closed by {close!r} "
                                 f"at position {pos}")
            if target is not None:
                _merge(stack[-1], target)
            group = stack.pop()
            if not group:
                raise ValueError(f"formula {formula!r}: empty group at position {where}")
            target = group
        pos = m.end()
    if opened:
        raise ValueError(f"formula {formula!r}: unbalanced parentheses, {opened[-1][0]!r} at position "
                         f"{opened[-1][1]} is never closed")
    if target is not None:
        _merge(stack[-1], target)
    return _finish(formula, stack[0])


def _merge(into: dict[str, float], amounts: Mapping[str, float]) -> None:
    for el, a in amounts.items():
        into[el] = into.get(el, 0.0) + a


def _outside(amounts: Mapping[str, float]) -> list[str]:
    return sorted(el for el in amounts if el not in _INDEX)


def fractions(formula: str | Mapping[str, float]) -> np.ndarray:
    """Atomic fractions over ELEMENTS: shape (86,), float32, summing to 1.

    Accepts a formula string or an already parsed {element: amount} mapping. Raises ValueError if the
    formula is malformed or holds an element outside ELEMENTS (naming it).
    """
    amounts = parse_formula(formula) if isinstance(formula, str) else _finish(repr(formula), dict(formula))
    bad = _outside(amounts)
    if bad:
        raise ValueError(f"formula {formula!r}: element(s) {', '.join(bad)} not among the 86 ElemNet elements")
    total = sum(amounts.values())
    out = np.zeros(len(ELEMENTS), dtype=np.float64)
    for el, a in amounts.items():
        out[_INDEX[el]] = a / total
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------- build

def crabnet_data(folder: str, names: tuple[str, ...]) -> Path:
    """The directory `folder` of the installed crabnet package's data holding the files `names` (found without
    importing crabnet)."""
    spec = importlib.util.find_spec("crabnet")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the OQMD data and element tables come with the 'crabnet' package, which is not installed "
                        "(pip install crabnet==2.0.8)")
    for location in spec.submodule_search_locations:
        d = Path(location) / "data" / folder
        if all((d / name).is_file() for name in names):
            return d
    raise UserError(f"crabnet is installed at {list(spec.submodule_search_locations)[0]} but has no "
                    f"data/{folder}/{{{','.join(names)}}}")


def source_dir() -> Path:
    """The directory holding CrabNet's OQMD_Formation_Enthalpy {train,val,test}.csv."""
    return crabnet_data("benchmark_data/OQMD_Formation_Enthalpy", tuple(f"{s}.csv" for s in SPLITS))


def _read_split(csv_path: Path, max_abs_enthalpy: float, limit: int | None, cache: dict) -> tuple:
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    ys: list[float] = []
    kept_formulas: list[str] = []
    counts = {"n_raw": 0, "n_dropped_enthalpy": 0, "n_dropped_elements": 0, "n_dropped_unparseable": 0}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["formula", "target"]:
            raise UserError(f"{csv_path}: expected a header 'formula,target', found {header!r}")
        for record in reader:
            if limit is not None and counts["n_raw"] >= limit:
                break
            if not record:   # blank line: not a row
                continue
            counts["n_raw"] += 1
            formula = record[0].strip()
            try:
                y = float(record[1])
            except (IndexError, ValueError):
                y = math.nan
            if not math.isfinite(y):
                counts["n_dropped_unparseable"] += 1
                continue
            parsed = cache.get(formula)
            if parsed is None:
                try:
                    amounts = parse_formula(formula)
                except ValueError:
                    parsed = "unparseable"
                else:
                    if not _INDEX.keys() >= amounts.keys():
                        parsed = "elements"
                    else:
                        total = sum(amounts.values())
                        parsed = [(_INDEX[el], a / total) for el, a in amounts.items()]
                cache[formula] = parsed
            if parsed == "unparseable":
                counts["n_dropped_unparseable"] += 1
                continue
            if parsed == "elements":
                counts["n_dropped_elements"] += 1
                continue
            if abs(y) > max_abs_enthalpy:
                counts["n_dropped_enthalpy"] += 1
                continue
            row = len(ys)
            for col, frac in parsed:
                rows.append(row)
                cols.append(col)
                vals.append(frac)
            ys.append(y)
            kept_formulas.append(formula)
    n = len(ys)
    x = np.zeros((n, len(ELEMENTS)), dtype=np.float64)
    if n:
        x[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = np.asarray(vals)
    counts["n_kept"] = n
    return x.astype(np.float32), np.asarray(ys, dtype=np.float32), kept_formulas, counts


def make_dataset(out_path, *, max_abs_enthalpy: float = DEFAULT_MAX_ABS_ENTHALPY, limit: int | None = None,
                 source: str | os.PathLike | None = None) -> dict:
    """Build the ElemNet HDF5 file from CrabNet's OQMD train/val/test CSVs.

    Per split (CSV order kept): rows whose target is missing/non-finite or whose formula does not parse are
    dropped as unparseable, then rows with an element outside ELEMENTS, then rows with |target| >
    max_abs_enthalpy (eV/atom). ``limit`` reads only the first rows of each CSV; ``source`` is a directory
    with the three CSVs (default: the one inside the installed crabnet package). The file is written to a
    temporary name of this process's own and renamed into place. Returns
    {split: {n_raw, n_kept, n_dropped_enthalpy, n_dropped_elements, n_dropped_unparseable}}.
    """
    import h5py

    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if not (max_abs_enthalpy > 0):
        raise ValueError(f"max_abs_enthalpy must be > 0, got {max_abs_enthalpy}")
    src = Path(source) if source is not None else source_dir()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out_path, ".tmp")

    cache: dict = {}
    built = {}
    for split in SPLITS:
        csv_path = src / f"{split}.csv"
        if not csv_path.is_file():
            raise UserError(f"{csv_path}: missing")
        built[split] = _read_split(csv_path, float(max_abs_enthalpy), limit, cache)

    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["elements"] = np.array(ELEMENTS, dtype=h5py.string_dtype("utf-8"))
            f.attrs["source"] = SOURCE
            f.attrs["max_abs_enthalpy"] = float(max_abs_enthalpy)
            f.attrs["target"] = "formation enthalpy (eV/atom)"
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for split in SPLITS:
                x, y, formulas, counts = built[split]
                g = f.create_group(split)
                g.create_dataset("x", data=x)
                g.create_dataset("y", data=y)
                g.create_dataset("formula", data=np.array(formulas, dtype=object),
                                 dtype=h5py.string_dtype("utf-8"))
                for key, value in counts.items():
                    g.attrs[key] = int(value)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {split: dict(built[split][3]) for split in SPLITS}


# ---------------------------------------------------------------------------------------------------- load

def remake_hint(max_abs_enthalpy: float) -> str:
    """The command that makes the file of this recipe again."""
    config = "" if max_abs_enthalpy == DEFAULT_MAX_ABS_ENTHALPY else " --config <a config with this value>"
    return f"make it again with 'menndl data make elemnet{config} --force'"


def load_split(path, split: str, *, size: int | None = None, shard: tuple[int, int] = (0, 1),
               max_abs_enthalpy: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float32 of one split: the first ``size`` rows (all if None), then rows ``rank::n`` for
    ``shard=(rank, n)``; with ``max_abs_enthalpy``, only from a file made with that cut. Any problem with the file is
    a one-line UserError naming it."""
    import h5py

    if split not in SPLITS:
        raise UserError(f"unknown data split {split!r} (expected one of {', '.join(SPLITS)})")
    rank, n_shards = shard
    if not (isinstance(n_shards, int) and isinstance(rank, int) and n_shards >= 1 and 0 <= rank < n_shards):
        raise UserError(f"bad data shard {shard!r}: expected (rank, n) with 0 <= rank < n")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UserError(f"task.options.{split}_size: expected a positive integer, found {size!r}")

    where = str(path)
    if not Path(path).exists():
        raise UserError(f"{where}: no such file ({_MAKE_HINT})")
    if Path(path).is_dir():
        raise UserError(f"{where}: is a directory, expected the ElemNet HDF5 file ({_MAKE_HINT})")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise UserError(f"{where}: not a readable HDF5 file ({_MAKE_HINT})") from e
    try:
        with f:
            if split not in f or not isinstance(f[split], h5py.Group):
                raise UserError(f"{where}: no '{split}' group ({_MAKE_HINT})")
            g = f[split]
            for name in ("x", "y"):
                if name not in g or not isinstance(g[name], h5py.Dataset):
                    raise UserError(f"{where}: no '{split}/{name}' dataset ({_MAKE_HINT})")
            xd, yd = g["x"], g["y"]
            if xd.ndim != 2 or xd.shape[1] != len(ELEMENTS):
                raise UserError(f"{where}: '{split}/x' has shape {xd.shape}, expected (n, {len(ELEMENTS)}) "
                                f"({_MAKE_HINT})")
            if yd.shape != (xd.shape[0],):
                raise UserError(f"{where}: '{split}/y' has shape {yd.shape}, expected ({xd.shape[0]},) to match "
                                f"'{split}/x' ({_MAKE_HINT})")
            if max_abs_enthalpy is not None:
                made = f.attrs.get("max_abs_enthalpy")
                if made is None or float(made) != float(max_abs_enthalpy):
                    found = "records no max_abs_enthalpy" if made is None else \
                        f"was made with max_abs_enthalpy {float(made):g}"
                    raise UserError(f"{where}: {found}, but task.options.max_abs_enthalpy is "
                                    f"{float(max_abs_enthalpy):g}; {remake_hint(max_abs_enthalpy)}")
            if "elements" in f.attrs:
                stored = [e.decode() if isinstance(e, bytes) else str(e) for e in np.ravel(f.attrs["elements"])]
                if tuple(stored) != ELEMENTS:
                    raise UserError(f"{where}: its 'elements' attribute is not the 86 ElemNet elements in order "
                                    f"({_MAKE_HINT})")
            available = xd.shape[0]
            if size is not None and size > available:
                raise UserError(f"task.options.{split}_size = {size} but {where} has only {available} "
                                f"'{split}' rows")
            stop = available if size is None else size
            x = xd[:stop]
            y = yd[:stop]
    except UserError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{where}: could not read '{split}' (truncated or damaged file? {_MAKE_HINT})") from e
    if n_shards > 1:
        x = x[rank::n_shards]
        y = y[rank::n_shards]
    return (np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.float32))


# ------------------------------------------------------------------------------------------------ baseline

def random_forest_baseline(x_train, y_train, evals: dict, *, n_estimators: int = 100, seed: int = 0,
                           n_jobs: int = 1) -> dict:
    """Random forest on the element fractions (the ElemNet paper's comparison, 0.157 eV/atom on OQMD).

    ``evals`` maps a name to (x, y); returns {"<name>_mae": float for each, "fit_seconds": float}.
    """
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    start = time.perf_counter()
    model.fit(np.asarray(x_train), np.asarray(y_train).ravel())
    out = {"fit_seconds": time.perf_counter() - start}
    for name, (x, y) in evals.items():
        pred = model.predict(np.asarray(x))
        out[f"{name}_mae"] = float(np.mean(np.abs(pred - np.asarray(y, dtype=np.float64).ravel())))
    return out
