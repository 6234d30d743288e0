"""Small helpers shared by the explain modules: row selection."""

from __future__ import annotations

import numpy as np


def n_rows(X) -> int:
    """Number of cases in ``X`` (DataFrame, Series, array or list)."""
    if hasattr(X, "shape") and len(X.shape) > 0:
        return int(X.shape[0])
    return len(X)


def take_rows(X, rows):
    """Rows ``rows`` (integer positions) of ``X``, keeping its type."""
    rows = np.asarray(rows, dtype=np.intp)
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    if isinstance(X, np.ndarray):
        return X[rows]
    return [X[i] for i in rows]
