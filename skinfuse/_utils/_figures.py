"""Figures shared by the plots of explain and metrics: built without pyplot, saved on request.

Matplotlib is imported by :func:`new_figure`, when a figure is drawn, not at import.
"""

from __future__ import annotations

import os
from numbers import Real

from ._sklearn import Interval

#: Constraints of the two parameters every plot takes (``validate_params``).
SAVING = {"path": [str, os.PathLike, None], "dpi": [Interval(Real, 0, None, closed="neither")]}


def new_figure(figsize):
    """A matplotlib ``Figure`` that is not registered with pyplot (no global state, no leak)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def finish_figure(fig, path, dpi):
    """Save ``fig`` to ``path`` (PNG unless the suffix says otherwise) when given; return it."""
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig
