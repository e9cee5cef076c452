"""A column of chemical formulas as ElemNet's 86 element fractions, with the reason each unusable row is refused."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from menndl_py.tasks.elemnet.data import ELEMENTS, fractions


def formula_fractions(values: Iterable) -> tuple[np.ndarray, list[str]]:
    """(rows, 86) float32 atomic fractions of the formulas, and per row '' or why it cannot be used (a missing,
    malformed formula or one with elements outside the 86: its row is zeros). Each distinct formula is parsed once."""
    values = list(values)
    x = np.zeros((len(values), len(ELEMENTS)), dtype=np.float32)
    reasons, parsed = [], {}
    for row, value in enumerate(values):
        text = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
        if text not in parsed:
            try:
                parsed[text] = fractions(text) if text.strip() else "missing formula"
            except ValueError as exc:
                parsed[text] = str(exc)
        result = parsed[text]
        if isinstance(result, str):
            reasons.append(result)
        else:
            x[row] = result
            reasons.append("")
    return x, reasons
