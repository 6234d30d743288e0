"""Operating points of one class against the rest: sensitivity, specificity, partial AUC,
and a classifier set to a target sensitivity."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.metrics import roc_curve

from .._utils._sklearn import Interval, validate_params

_UNIT = Interval(Real, 0, 1, closed="both")


def _binary(y_true, y_score, pos_label):
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim != 1 or len(y_score) != len(y_true):
        raise ValueError(
            f"y_score must be 1-D with one score per case ({len(y_true)}); got shape "
            f"{y_score.shape}. For a multi-class model pass proba[:, k], the column of the "
            "class of interest."
        )
    positive = y_true == pos_label
    if positive.all() or not positive.any():
        seen = np.unique(y_true)[:10].tolist()
        raise ValueError(
            f"y_true needs cases of pos_label={pos_label!r} and of other classes; got labels "
            f"{seen}. Pass the label of the class of interest as pos_label."
        )
    return positive.astype(int), y_score


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "sensitivity": [_UNIT, None],
        "specificity": [_UNIT, None],
        "pos_label": "no_validation",
    },
    prefer_skip_nested_validation=True,
)
def operating_point(y_true, y_score, *, sensitivity=None, specificity=None, pos_label="mel"):
    """The threshold that reaches a target sensitivity (or specificity), and what it gives.

    Among the thresholds the scores allow, the one with the highest specificity whose
    sensitivity is at least ``sensitivity`` (or the highest sensitivity whose
    specificity is at least ``specificity``). Cases with ``score >= threshold`` are
    called positive. No interpolation: the returned point is achievable on this data.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels.
    y_score : array-like of shape (n_samples,)
        Score of ``pos_label`` (higher: more likely).
    sensitivity, specificity : float in [0, 1] or None
        Give exactly one.
    pos_label : label, default="mel"

    Returns
    -------
    point : dict
        ``threshold``, ``sensitivity``, ``specificity``.

    Examples
    --------
    >>> operating_point(["mel", "nv", "mel", "nv"], [0.9, 0.6, 0.4, 0.1], sensitivity=1.0)
    {'threshold': 0.4, 'sensitivity': 1.0, 'specificity': 0.5}
    """
    if (sensitivity is None) == (specificity is None):
        raise ValueError("give exactly one of sensitivity= and specificity=")
    positive, score = _binary(y_true, y_score, pos_label)
    fpr, tpr, thresholds = roc_curve(positive, score, drop_intermediate=False)
    spec = 1.0 - fpr
    if sensitivity is not None:
        ok = np.flatnonzero(tpr >= sensitivity - 1e-12)
        best = ok[np.argmax(spec[ok])]
    else:
        ok = np.flatnonzero(spec >= specificity - 1e-12)
        best = ok[np.argmax(tpr[ok])]
    return {
        "threshold": float(thresholds[best]),
        "sensitivity": float(tpr[best]),
        "specificity": float(spec[best]),
    }


def sensitivity_at_specificity(y_true, y_score, specificity=0.8, *, pos_label="mel"):
    """Highest sensitivity reachable at a specificity of at least ``specificity``.

    See :func:`operating_point`.

    Examples
    --------
    >>> sensitivity_at_specificity(["mel", "nv", "mel", "nv"], [0.9, 0.6, 0.4, 0.1], 1.0)
    0.5
    """
    return operating_point(y_true, y_score, specificity=specificity, pos_label=pos_label)[
        "sensitivity"
    ]


def specificity_at_sensitivity(y_true, y_score, sensitivity=0.82, *, pos_label="mel"):
    """Highest specificity reachable at a sensitivity of at least ``sensitivity``.

    0.82 is a typical dermatologist sensitivity for melanoma in reader studies. See
    :func:`operating_point`.

    Examples
    --------
    >>> specificity_at_sensitivity(["mel", "nv", "mel", "nv"], [0.9, 0.6, 0.4, 0.1], 1.0)
    0.5
    """
    return operating_point(y_true, y_score, sensitivity=sensitivity, pos_label=pos_label)[
        "specificity"
    ]


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "min_tpr": [Interval(Real, 0, 1, closed="left")],
        "pos_label": "no_validation",
    },
    prefer_skip_nested_validation=True,
)
def partial_auc(y_true, y_score, *, min_tpr=0.8, pos_label="mel"):
    """Area under the ROC curve above a sensitivity of ``min_tpr`` (ISIC 2024's metric).

    The area between the ROC curve and the horizontal line ``TPR = min_tpr``: from 0
    (never above it) to ``1 - min_tpr`` (a perfect ranking; 0.2 for the default). Scores
    that do not rank at all (the diagonal) give ``(1 - min_tpr) ** 2 / 2``. It equals the
    ISIC 2024 challenge's formula (scikit-learn's McClish-standardised
    ``roc_auc_score(max_fpr=...)`` on flipped labels and scores, mapped back).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_score : array-like of shape (n_samples,)
    min_tpr : float in [0, 1), default=0.8
    pos_label : label, default="mel"

    Returns
    -------
    pauc : float

    Examples
    --------
    >>> round(partial_auc(["mel", "nv", "mel", "nv"], [0.9, 0.2, 0.8, 0.1]), 6)  # perfect
    0.2
    """
    positive, score = _binary(y_true, y_score, pos_label)
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    above = np.clip(tpr - min_tpr, 0.0, None)
    # the curve is piecewise linear: where it crosses TPR = min_tpr, add the crossing point
    x, y = [fpr[0]], [above[0]]
    for i in range(1, len(fpr)):
        lo, hi = tpr[i - 1] - min_tpr, tpr[i] - min_tpr
        if lo < 0 < hi:
            t = -lo / (hi - lo)
            x.append(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
            y.append(0.0)
        x.append(fpr[i])
        y.append(above[i])
    return float(np.trapezoid(y, x))
