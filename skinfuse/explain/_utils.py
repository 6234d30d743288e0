"""Small helpers shared by the explain modules: row selection, figures."""

from __future__ import annotations

import os

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


def new_figure(figsize):
    """A matplotlib ``Figure`` that is not registered with pyplot (no global state, no leak)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def finish_figure(fig, path, dpi):
    """Save ``fig`` to ``path`` (PNG unless the suffix says otherwise) when given; return it."""
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig
