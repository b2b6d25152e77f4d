"""Tables as the pages show them: no "None"/"NaN" cells."""
from __future__ import annotations

import pandas as pd

#: What an empty cell shows (a value that does not apply, e.g. the accuracy of an autoencoder).
MISSING = "—"


def _cell(value: object) -> object:
    """One cell of a column that has gaps: a dash for a gap, floats in 4 significant digits."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def fill_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every None/NaN shown as "—"; columns without gaps keep their type (and sort numerically)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].isna().any():
            out[column] = out[column].astype(object).map(_cell).astype(str)
    return out
