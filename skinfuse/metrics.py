"""Evaluation the way dermatology reads it: per-class reports, melanoma operating points,
partial AUC, calibration error, and confidence intervals that resample lesions, not images.

Accuracy flatters HAM10000 (the majority class alone scores 0.67). Papers and the ISIC
challenges compare models by balanced accuracy, by melanoma sensitivity and specificity
at an operating point (reader studies: specificity at the dermatologists' sensitivity),
by partial AUC above 80 % sensitivity (ISIC 2024) and by calibration.

Binary functions take the labels, the score of the class of interest (e.g.
``proba[:, list(model.classes_).index("mel")]``) and ``pos_label`` (``"mel"`` by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.utils import check_random_state

from ._utils._sklearn import HasMethods, Interval, StrOptions, validate_params

__all__ = [
    "BootstrapInterval",
    "bootstrap_interval",
    "clinical_report",
    "expected_calibration_error",
    "operating_point",
    "partial_auc",
    "plot_operating_curve",
    "plot_reliability_diagram",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
    "triage_classifier",
]

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


@validate_params(
    {
        "y_true": ["array-like"],
        "proba": ["array-like"],
        "classes": ["array-like"],
        "kind": [StrOptions({"top-label", "classwise"})],
        "n_bins": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def expected_calibration_error(y_true, proba, *, classes, kind="top-label", n_bins=15):
    """Expected calibration error: how far predicted probabilities are from frequencies.

    ``"top-label"``: cases are binned by their highest probability (equal-width bins in
    [0, 1]); the error is the mean over cases of ``|accuracy(bin) - confidence(bin)|``.
    ``"classwise"``: the same for each class's probability against whether the case is of
    that class, averaged over classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Columns follow ``classes`` (``model.classes_``).
    classes : array-like of shape (n_classes,)
    kind : {"top-label", "classwise"}, default="top-label"
    n_bins : int, default=15

    Returns
    -------
    ece : float
        0 for a perfectly calibrated model, at most 1.

    Examples
    --------
    >>> ece = expected_calibration_error(["a", "b"], [[0.9, 0.1], [0.8, 0.2]], classes=["a", "b"])
    >>> round(ece, 3)  # |1 - 0.9| and |0 - 0.8|, averaged
    0.45
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    y_true = np.asarray(y_true)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise ValueError(
            f"proba must have shape (n_samples, n_classes) = ({len(y_true)}, {len(classes)}); "
            f"got {proba.shape}"
        )
    edges = np.linspace(0.0, 1.0, n_bins + 1)

    def binned_error(confidence, correct):
        bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
        total = 0.0
        for b in np.unique(bins):
            members = bins == b
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
        return total / len(confidence)

    if kind == "top-label":
        top = proba.argmax(axis=1)
        return float(binned_error(proba.max(axis=1), classes[top] == y_true))
    return float(np.mean([binned_error(proba[:, k], y_true == c) for k, c in enumerate(classes)]))


@validate_params(
    {"y_true": ["array-like"], "proba": ["array-like"], "classes": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def clinical_report(y_true, proba, *, classes):
    """Per-class precision, recall (sensitivity), F1, one-vs-rest AUC and support.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Columns follow ``classes``; the prediction is the most probable class.
    classes : array-like of shape (n_classes,)

    Returns
    -------
    report : pandas.DataFrame
        One row per class, then ``"macro avg"`` (its recall is the balanced accuracy, its
        F1 the macro F1, its AUC the macro one-vs-rest AUC). ``report.attrs`` holds
        ``accuracy``, ``balanced_accuracy`` and ``macro_f1``.

    Examples
    --------
    >>> report = clinical_report(["a", "b", "b"], [[0.7, 0.3], [0.4, 0.6], [0.6, 0.4]],
    ...                          classes=["a", "b"])
    >>> float(report.loc["b", "recall"]), report.attrs["balanced_accuracy"]
    (0.5, 0.75)
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    y_true = np.asarray(y_true)
    y_pred = classes[proba.argmax(axis=1)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    auc = [
        roc_auc_score(y_true == c, proba[:, k]) if 0 < (y_true == c).sum() < len(y_true) else np.nan
        for k, c in enumerate(classes)
    ]
    frame = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "auc": auc, "support": support},
        index=pd.Index(classes.tolist(), name="class"),
    )
    frame.loc["macro avg"] = [*frame.iloc[:, :4].mean(axis=0).tolist(), int(support.sum())]
    frame["support"] = frame["support"].astype(int)
    frame.attrs.update(
        accuracy=float(accuracy_score(y_true, y_pred)),
        balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)),
        macro_f1=float(frame.loc["macro avg", "f1"]),
    )
    return frame


@dataclass(frozen=True)
class BootstrapInterval:
    """A metric on all cases and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int

    def __str__(self):
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@validate_params(
    {
        "metric": [callable],
        "y_true": ["array-like"],
        "groups": ["array-like"],
        "n_resamples": [Interval(Integral, 10, None, closed="left")],
        "confidence": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def bootstrap_interval(
    metric, y_true, *scores, groups, n_resamples=1000, confidence=0.95, random_state=0
):
    """Percentile bootstrap interval of ``metric(y_true, *scores)``, resampling lesions.

    HAM10000 has several images per lesion; images of one lesion are not independent, so
    resampling images gives intervals that are too narrow. Here whole groups (lesions)
    are drawn with replacement, and all their images come along. Resamples on which the
    metric cannot be computed (e.g. no melanoma drawn) are skipped; ``n_resamples`` says
    how many counted.

    Parameters
    ----------
    metric : callable
        ``metric(y_true, *scores) -> float``, e.g. ``balanced_accuracy_score`` or
        ``lambda y, s: sensitivity_at_specificity(y, s, 0.8)``.
    y_true : array-like of shape (n_samples,)
    *scores : array-like of shape (n_samples, ...)
        Predictions, scores or probabilities, row-aligned with ``y_true``.
    groups : array-like of shape (n_samples,)
        Lesion of each row (HAM10000's ``lesion_id``).
    n_resamples : int, default=1000
    confidence : float, default=0.95
    random_state : int, RandomState or None, default=0

    Returns
    -------
    interval : BootstrapInterval

    Examples
    --------
    >>> from sklearn.metrics import accuracy_score
    >>> iv = bootstrap_interval(accuracy_score, [0, 1, 1, 0], [0, 1, 0, 0],
    ...                         groups=["a", "a", "b", "c"], n_resamples=200)
    >>> iv.estimate, iv.low <= iv.estimate <= iv.high
    (0.75, True)
    """
    y_true = np.asarray(y_true)
    scores = [np.asarray(s) for s in scores]
    groups = np.asarray(groups)
    if len(groups) != len(y_true) or any(len(s) != len(y_true) for s in scores):
        raise ValueError("y_true, every score array and groups need one row per case")
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(inverse))]
    members = [order[starts[g] : starts[g + 1]] for g in range(len(starts) - 1)]
    rng = check_random_state(random_state)
    values = []
    for _ in range(n_resamples):
        rows = np.concatenate([members[g] for g in rng.randint(0, len(members), len(members))])
        try:
            value = float(metric(y_true[rows], *(s[rows] for s in scores)))
        except ValueError:  # e.g. a resample without the positive class
            continue
        if np.isfinite(value):
            values.append(value)
    if not values:
        raise ValueError("the metric could not be computed on any resample")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return BootstrapInterval(
        float(metric(y_true, *scores)), float(low), float(high), confidence, len(values)
    )


# -- operating a model -------------------------------------------------------------------------
@validate_params(
    {
        "model": [HasMethods(["fit", "predict_proba"])],
        "X": "no_validation",
        "y": ["array-like"],
        "groups": ["array-like"],
        "sensitivity": [_UNIT],
        "pos_label": "no_validation",
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def triage_classifier(model, X, y, *, groups, sensitivity=0.9, pos_label="mel", n_splits=5,
                      random_state=0):  # fmt: skip
    """A ``pos_label``-vs-rest classifier set to reach a target sensitivity on unseen lesions.

    ``model`` is trained on ``y == pos_label``. Its out-of-fold scores on lesion-grouped
    folds (``StratifiedGroupKFold``) choose the threshold that reaches ``sensitivity`` with
    the best specificity (:func:`operating_point`); then ``model`` is fitted on all of
    ``X`` and wrapped in scikit-learn's ``FixedThresholdClassifier`` at that threshold.

    Parameters
    ----------
    model : classifier with predict_proba
        Cloned; e.g. ``make_fusion_pipeline(...)``.
    X : DataFrame
    y : array-like of shape (n_samples,)
        The diagnoses.
    groups : array-like of shape (n_samples,)
        Lesion of each row.
    sensitivity : float in [0, 1], default=0.9
    pos_label : label, default="mel"
    n_splits : int, default=5
    random_state : int, RandomState or None, default=0
        Shuffles the folds.

    Returns
    -------
    classifier : sklearn.model_selection.FixedThresholdClassifier
        Fitted; ``predict`` returns True for cases called ``pos_label``.
    point : dict
        The out-of-fold operating point: ``threshold``, ``sensitivity``, ``specificity``
        (what to expect on new lesions, not a guarantee).
    """
    from sklearn.base import clone
    from sklearn.model_selection import (
        FixedThresholdClassifier,
        StratifiedGroupKFold,
        cross_val_predict,
    )

    target = np.asarray(y) == pos_label
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    splits = list(folds.split(X, target, groups))
    scores = cross_val_predict(clone(model), X, target, cv=splits, method="predict_proba")[:, 1]
    point = operating_point(target, scores, sensitivity=sensitivity, pos_label=True)
    classifier = FixedThresholdClassifier(
        clone(model), threshold=point["threshold"], response_method="predict_proba"
    ).fit(X, target)
    return classifier, point


# -- pictures --------------------------------------------------------------------------------
_SAVING = {"path": [str, os.PathLike, None], "dpi": [Interval(Real, 0, None, closed="neither")]}


@validate_params(
    {
        "y_true": ["array-like"],
        "probas": [dict],
        "classes": ["array-like"],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "title": [str, None],
        **_SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_reliability_diagram(y_true, probas, *, classes, n_bins=10, title=None, path=None,
                             dpi=120):  # fmt: skip
    """Top-label reliability diagram: accuracy against confidence, per confidence bin.

    A calibrated model's points lie on the diagonal; points below it are overconfident.
    The bars underneath show how many cases fall in each bin.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    probas : dict of str to array-like of shape (n_samples, n_classes)
        One curve per entry, e.g. ``{"uncalibrated": p, "temperature": q}``, each with its
        top-label ECE in the legend.
    classes : array-like of shape (n_classes,)
    n_bins : int, default=10
    title : str or None, default=None
    path : str, path-like or None, default=None
        Also save the figure there.
    dpi : float, default=120

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from .explain._utils import finish_figure, new_figure

    y_true, classes = np.asarray(y_true), np.asarray(classes)
    fig = new_figure((5.2, 5.6))
    ax, bars = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    edges = np.linspace(0, 1, n_bins + 1)
    width = 1 / n_bins / (len(probas) + 1)
    for i, (name, proba) in enumerate(probas.items()):
        proba = np.asarray(proba, dtype=np.float64)
        conf = proba.max(axis=1)
        correct = classes[proba.argmax(axis=1)] == y_true
        bins = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
        used = np.unique(bins)
        acc = [correct[bins == b].mean() for b in used]
        mean_conf = [conf[bins == b].mean() for b in used]
        ece = expected_calibration_error(y_true, proba, classes=classes, n_bins=n_bins)
        ax.plot(mean_conf, acc, marker="o", label=f"{name} (ECE {ece:.3f})")
        counts = np.bincount(bins, minlength=n_bins)
        bars.bar(edges[:-1] + (i + 0.5) * width, counts, width=width, align="edge")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title or "Reliability (top label)")
    ax.legend(loc="upper left", fontsize=8)
    bars.set(xlabel="confidence (highest probability)", ylabel="cases")
    return finish_figure(fig, path, dpi)


@validate_params(
    {
        "y_true": ["array-like"],
        "scores": [dict],
        "pos_label": "no_validation",
        "mark_sensitivity": [Interval(Real, 0, 1, closed="both"), None],
        "title": [str, None],
        **_SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_operating_curve(y_true, scores, *, pos_label="mel", mark_sensitivity=0.82, title=None,
                         path=None, dpi=120):  # fmt: skip
    """Sensitivity against specificity for one class (melanoma): the triage trade-off.

    Each curve is a model's ROC curve read as a clinician reads it. The operating point
    reaching ``mark_sensitivity`` (a dermatologist's sensitivity) is marked with its
    specificity; the shaded band is the region that ISIC 2024's partial AUC scores.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    scores : dict of str to array-like of shape (n_samples,)
        One curve per entry: the score of ``pos_label`` of each model.
    pos_label : label, default="mel"
    mark_sensitivity : float or None, default=0.82
    title : str or None, default=None
    path : str, path-like or None, default=None
    dpi : float, default=120

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from .explain._utils import finish_figure, new_figure

    fig = new_figure((5.2, 4.6))
    ax = fig.subplots()
    ax.axhspan(0.8, 1.0, color="0.92", zorder=0, label="partial AUC region (TPR >= 0.8)")
    for name, score in scores.items():
        positive, score = _binary(y_true, score, pos_label)
        fpr, tpr, _ = roc_curve(positive, score)
        pauc = partial_auc(y_true, score, pos_label=pos_label)
        (line,) = ax.plot(1 - fpr, tpr, label=f"{name} (pAUC {pauc:.3f})")
        if mark_sensitivity is not None:
            point = operating_point(
                y_true, score, sensitivity=mark_sensitivity, pos_label=pos_label
            )
            ax.plot(point["specificity"], point["sensitivity"], "o", color=line.get_color())
            ax.annotate(
                f"spec {point['specificity']:.2f}",
                (point["specificity"], point["sensitivity"]),
                textcoords="offset points", xytext=(6, -12), fontsize=8,
            )  # fmt: skip
    if mark_sensitivity is not None:
        ax.axhline(mark_sensitivity, color="0.5", linestyle=":", linewidth=1)
    ax.set(xlabel="specificity", ylabel=f"sensitivity ({pos_label})", xlim=(0, 1), ylim=(0, 1.01))
    ax.invert_xaxis()
    ax.set_title(title or f"{pos_label} vs rest: sensitivity and specificity")
    ax.legend(loc="lower left", fontsize=8)
    return finish_figure(fig, path, dpi)
