"""Domain randomization of a simulator: ranges of its settings' numeric fields, checked, and each simulated item's
settings drawn from them, so that a network trained on the items does not learn one instrument."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from menndl_py.errors import UserError


def check_ranges(settings, ranges: dict, where: str, fields: list[str], integers: tuple = ()) -> dict:
    """Validated ranges, {field: (low, high, log)}, from a mapping of the fields of the dataclass ``settings`` (among
    ``fields``) to [low, high] (uniform; integers for the fields in ``integers``) or [low, high, "log"]
    (log-uniform). Raises UserError naming the field when a range is malformed or its ends make settings that
    are not valid."""
    if not isinstance(ranges, dict):
        raise UserError(f"{where}: must be a mapping of simulator fields to [low, high], got {ranges!r}")
    out = {}
    for name in sorted(ranges):
        value = ranges[name]
        if name not in fields:
            raise UserError(f"{where}.{name}: not a randomizable simulator field (expected among: "
                            f"{', '.join(fields)})")
        integer = name in integers
        number = int if integer else (int, float)
        ok = isinstance(value, (list, tuple)) and len(value) in (2, 3) \
            and all(isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) for v in value[:2]) \
            and value[0] <= value[1] and (len(value) == 2 or (value[2] == "log" and value[0] > 0))
        if not ok:
            kind = "integers" if integer else "numbers"
            raise UserError(f"{where}.{name}: must be [low, high] ({kind}, low <= high) or [low, high, \"log\"] "
                            f"(low > 0), got {value!r}")
        out[name] = (value[0], value[1], len(value) == 3)
    reachable(settings, [{k: r[0] for k, r in out.items()}, {k: r[1] for k, r in out.items()}], where)
    return out


def reachable(settings, corners: list[dict], where: str) -> None:
    """UserError unless ``settings`` with each of ``corners`` (field -> value) are valid settings."""
    for corner in corners:
        try:
            dataclasses.replace(settings, **corner)
        except UserError as exc:
            raise UserError(f"{where}: the ranges reach settings that are not valid ({exc})") from None


def randomized(settings, ranges: dict, rng: np.random.Generator, integers: tuple = ()):
    """``settings`` with each field of ``ranges`` (as check_ranges returns them) drawn from its range, in the
    order of the field names."""
    drawn = {}
    for name in sorted(ranges):
        low, high, log = ranges[name]
        if name in integers:
            drawn[name] = int(round(math.exp(rng.uniform(math.log(low), math.log(high))))) if log \
                else int(rng.integers(low, high + 1))
        else:
            drawn[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))) if log
                                else rng.uniform(low, high))
    return dataclasses.replace(settings, **drawn)
