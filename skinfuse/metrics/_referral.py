"""Prediction sets read clinically: their coverage, their size, and who is referred."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd

from .._utils._figures import SAVING, finish_figure, new_figure
from .._utils._sklearn import Interval, validate_params


def _check_sets(sets, classes, n=None) -> np.ndarray:
    sets = np.asarray(sets, dtype=bool)
    if sets.ndim != 2 or sets.shape[1] != len(classes) or (n is not None and len(sets) != n):
        rows = "n_samples" if n is None else n
        raise ValueError(
            f"sets must be a boolean matrix of shape ({rows}, {len(classes)}) (one column per "
            f"class, as PredictionSets.predict_sets gives); got {sets.shape}"
        )
    return sets


@validate_params(
    {
        "sets": ["array-like"],
        "classes": ["array-like"],
        "refer_classes": ["array-like"],
        "max_set_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def referral(sets, *, classes, refer_classes=("mel",), max_set_size=1):
    """Which images to send to a dermatologist: the referral rule.

    An image is referred when its prediction set holds any of ``refer_classes`` (by default
    melanoma: a melanoma that cannot be ruled out at the set's coverage), holds more than
    ``max_set_size`` classes (the model cannot tell them apart), or is empty (nothing is
    plausible enough: an unusual image).

    Parameters
    ----------
    sets : array-like of bool of shape (n_samples, n_classes)
        :meth:`skinfuse.conformal.PredictionSets.predict_sets`.
    classes : array-like of shape (n_classes,)
    refer_classes : array-like, default=("mel",)
        Classes whose presence in a set refers the image (empty: none).
    max_set_size : int, default=1
        Largest set not referred for its size.

    Returns
    -------
    refer : ndarray of bool of shape (n_samples,)

    Examples
    --------
    >>> sets = [[True, False, False], [False, True, False], [False, True, True]]
    >>> referral(sets, classes=["mel", "nv", "bkl"]).tolist()
    [True, False, True]
    """
    classes = np.asarray(classes)
    sets = _check_sets(sets, classes)
    size = sets.sum(axis=1)
    flagged = np.isin(classes, np.asarray(refer_classes, dtype=classes.dtype))
    return sets[:, flagged].any(axis=1) | (size > max_set_size) | (size == 0)


@validate_params(
    {
        "y_true": ["array-like"],
        "sets": ["array-like"],
        "classes": ["array-like"],
        "pos_label": "no_validation",
        "refer_classes": ["array-like", None],
        "max_set_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def referral_summary(y_true, sets, *, classes, pos_label="mel", refer_classes=None, max_set_size=1):
    """Coverage and size of prediction sets, and the referral rule's trade-off.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    sets : array-like of bool of shape (n_samples, n_classes)
    classes : array-like of shape (n_classes,)
    pos_label : label, default="mel"
        The class whose cases should all be referred.
    refer_classes : array-like or None, default=None
        Of :func:`referral`; ``None``: ``(pos_label,)``.
    max_set_size : int, default=1
        Of :func:`referral`.

    Returns
    -------
    summary : dict
        ``coverage`` (share of images whose set holds the true class), ``coverage_per_class``
        (``{class: coverage}`` over the classes present), ``support_per_class``,
        ``mean_set_size``, ``empty_sets`` and ``singletons`` (shares of images),
        ``referral_rate`` (share of images referred), ``melanomas_caught`` (share of the
        ``pos_label`` cases referred; NaN without one), ``n_images``, ``n_positive``.

    Examples
    --------
    >>> s = referral_summary(["mel", "nv", "nv"], [[1, 1], [0, 1], [1, 0]],
    ...                      classes=["mel", "nv"])
    >>> round(s["coverage"], 3), round(s["referral_rate"], 3), s["melanomas_caught"]
    (0.667, 0.667, 1.0)
    """
    classes = np.asarray(classes)
    y_true = np.asarray(y_true)
    sets = _check_sets(sets, classes, len(y_true))
    column = {c: k for k, c in enumerate(classes.tolist())}
    known = np.array([v in column for v in y_true.tolist()])
    covered = np.zeros(len(y_true), dtype=bool)
    rows = np.flatnonzero(known)
    covered[rows] = sets[rows, [column[v] for v in y_true[rows].tolist()]]
    refer_classes = (pos_label,) if refer_classes is None else refer_classes
    refer = referral(sets, classes=classes, refer_classes=refer_classes, max_set_size=max_set_size)
    size = sets.sum(axis=1)
    positive = y_true == pos_label
    present = [c for c in classes.tolist() if (y_true == c).any()]
    return {
        "coverage": float(covered.mean()),
        "coverage_per_class": {c: float(covered[y_true == c].mean()) for c in present},
        "support_per_class": {c: int((y_true == c).sum()) for c in present},
        "mean_set_size": float(size.mean()),
        "empty_sets": float((size == 0).mean()),
        "singletons": float((size == 1).mean()),
        "referral_rate": float(refer.mean()),
        "melanomas_caught": float(refer[positive].mean()) if positive.any() else float("nan"),
        "n_images": len(y_true),
        "n_positive": int(positive.sum()),
    }


@validate_params(
    {
        "y_true": ["array-like"],
        "sets_by_coverage": [dict],
        "classes": ["array-like"],
        "pos_label": "no_validation",
        "refer_classes": ["array-like", None],
        "max_set_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def referral_curve(y_true, sets_by_coverage, *, classes, pos_label="mel", refer_classes=None,
                   max_set_size=1):  # fmt: skip
    """:func:`referral_summary` at several coverage levels: the referral trade-off.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    sets_by_coverage : dict
        ``{coverage: sets}``, e.g.
        ``{c: prediction_sets.sets_from_proba(proba, coverage=c) for c in (0.8, 0.9, 0.95)}``.
    classes, pos_label, refer_classes, max_set_size
        As in :func:`referral_summary`.

    Returns
    -------
    curve : pandas.DataFrame
        One row per target coverage (the index): ``coverage`` (achieved), ``mean_set_size``,
        ``referral_rate``, ``melanomas_caught``, then ``coverage_<class>`` per class present.

    Examples
    --------
    >>> curve = referral_curve(["mel", "nv"], {0.8: [[1, 0], [0, 1]], 0.9: [[1, 1], [0, 1]]},
    ...                        classes=["mel", "nv"])
    >>> curve["referral_rate"].tolist()
    [0.5, 0.5]
    """
    rows = {}
    for level, sets in sorted(sets_by_coverage.items()):
        s = referral_summary(
            y_true, sets, classes=classes, pos_label=pos_label, refer_classes=refer_classes,
            max_set_size=max_set_size,
        )  # fmt: skip
        rows[float(level)] = {
            "coverage": s["coverage"], "mean_set_size": s["mean_set_size"],
            "referral_rate": s["referral_rate"], "melanomas_caught": s["melanomas_caught"],
            **{f"coverage_{c}": v for c, v in s["coverage_per_class"].items()},
        }  # fmt: skip
    curve = pd.DataFrame.from_dict(rows, orient="index")
    curve.index.name = "target_coverage"
    return curve


@validate_params(
    {
        "y_true": ["array-like"],
        "sets": ["array-like"],
        "classes": ["array-like"],
        "coverage": [Interval(Real, 0, 1, closed="neither"), None],
        "title": [str, None],
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_prediction_sets(y_true, sets, *, classes, coverage=None, title=None, path=None, dpi=120):
    """Coverage per class (bars, with the target) and the distribution of set sizes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    sets : array-like of bool of shape (n_samples, n_classes)
    classes : array-like of shape (n_classes,)
    coverage : float or None, default=None
        The target, drawn as a line.
    title : str or None, default=None
    path : str, path-like or None, default=None
        Also save the figure there.
    dpi : float, default=120

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    s = referral_summary(y_true, sets, classes=classes)
    sets = _check_sets(sets, np.asarray(classes), s["n_images"])
    fig = new_figure((9, 3.4))
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    names = list(s["coverage_per_class"])
    left.bar(range(len(names)), [s["coverage_per_class"][c] for c in names], color="tab:blue")
    left.set_xticks(range(len(names)),
                    [f"{c}\n(n={s['support_per_class'][c]})" for c in names], fontsize=8)  # fmt: skip
    if coverage is not None:
        left.axhline(coverage, color="tab:red", lw=1, ls="--", label=f"target {coverage:g}")
        left.legend(loc="lower right", fontsize=8)
    left.set_ylim(0, 1.02)
    left.set_ylabel("share of images whose set holds the true class")
    left.set_title(f"coverage per class (all: {s['coverage']:.3f})", fontsize=10)
    sizes = sets.sum(axis=1)
    counts = np.bincount(sizes, minlength=sets.shape[1] + 1)
    right.bar(range(len(counts)), counts / counts.sum(), color="0.45")
    right.set_xticks(range(len(counts)))
    right.set_xlabel("classes in the set")
    right.set_ylabel("share of images")
    right.set_title(f"set sizes (mean {s['mean_set_size']:.2f})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return finish_figure(fig, path, dpi)


@validate_params(
    {"curve": [pd.DataFrame], "title": [str, None], **SAVING},
    prefer_skip_nested_validation=True,
)
def plot_referral_curve(curve, *, title=None, path=None, dpi=120):
    """The referral trade-off of a :func:`referral_curve`: melanomas caught against the
    share of images referred, one point per target coverage.

    Parameters
    ----------
    curve : pandas.DataFrame
        Of :func:`referral_curve` (one or several; concatenate them with a ``name`` column
        to draw one line per model or dataset).
    title : str or None, default=None
    path : str, path-like or None, default=None
        Also save the figure there.
    dpi : float, default=120

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    fig = new_figure((5.2, 4.2))
    ax = fig.add_subplot()
    parts = curve.groupby("name", sort=False) if "name" in curve else [(None, curve)]
    for name, part in parts:
        ax.plot(part["referral_rate"], part["melanomas_caught"], "o-", ms=4, label=name)
        for level, row in part.iterrows():
            ax.annotate(f"{level:g}", (row["referral_rate"], row["melanomas_caught"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=7)  # fmt: skip
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of images referred")
    ax.set_ylabel("share of melanomas referred")
    ax.set_title(title or "referral rule at each target coverage", fontsize=10)
    if "name" in curve:
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return finish_figure(fig, path, dpi)
