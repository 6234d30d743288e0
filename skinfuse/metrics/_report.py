"""A per-class report, and bootstrap intervals that resample lesions, not images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.utils import check_random_state

from .._utils._sklearn import Interval, validate_params


# -- macro metrics over the classes present ---------------------------------------------------
def _classes_present(y_true, classes) -> np.ndarray:
    """The classes of ``classes`` with at least one case in ``y_true``, in their order."""
    classes = np.asarray(classes)
    return classes[np.isin(classes, np.asarray(y_true))]


def _balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's
    ``balanced_accuracy_score``); a prediction of a class absent from ``y_true`` is an error.
    scikit-learn warns about such predictions; on data of another source they are expected,
    and so is a single class in both (a small group's resample, in the subgroup report)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def _macro_f1(y_true, y_pred, labels) -> float:
    """Mean F1 over ``labels`` (the classes present in the evaluated data); a prediction of
    another class is an error (a missed case of the true class), not an F1 of 0 averaged in."""
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


@validate_params(
    {"y_true": ["array-like"], "proba": ["array-like"], "classes": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def clinical_report(y_true, proba, *, classes):
    """Per-class precision, recall (sensitivity), F1, one-vs-rest AUC and support.

    ``y_true`` may hold only some of ``classes`` (data of another source: Derm7pt has no
    ``akiec``). A class absent from ``y_true`` keeps its row, marked: support 0, recall,
    F1 and AUC NaN (undefined), precision 0 if the model predicted it (each such
    prediction is an error) and NaN if it did not. The macro averages are over the
    classes present in ``y_true`` only.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Columns follow ``classes``; the prediction is the most probable class.
    classes : array-like of shape (n_classes,)

    Returns
    -------
    report : pandas.DataFrame
        One row per class, then ``"macro avg"`` over the classes present in ``y_true`` (its
        recall is the balanced accuracy, its F1 the macro F1, its AUC the macro one-vs-rest
        AUC; its support all cases). ``report.attrs`` holds ``accuracy``,
        ``balanced_accuracy``, ``macro_f1`` and ``classes_absent`` (the classes without a
        case in ``y_true``, a list; empty when every class is present).

    Examples
    --------
    >>> report = clinical_report(["a", "b", "b"], [[0.7, 0.3], [0.4, 0.6], [0.6, 0.4]],
    ...                          classes=["a", "b"])
    >>> float(report.loc["b", "recall"]), report.attrs["balanced_accuracy"]
    (0.5, 0.75)

    A class absent from the data (``"c"``) is marked, and left out of the averages:

    >>> report = clinical_report(["a", "b"], [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]],
    ...                          classes=["a", "b", "c"])
    >>> report.loc["c"].tolist(), report.attrs["classes_absent"]
    ([0.0, nan, nan, nan, 0.0], ['c'])
    >>> report.attrs["balanced_accuracy"], report.attrs["macro_f1"]
    (0.5, 0.5)
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    y_true = np.asarray(y_true)
    y_pred = classes[proba.argmax(axis=1)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    absent = support == 0
    predicted = np.array([(y_pred == c).sum() for c in classes])
    recall = np.where(absent, np.nan, recall)
    f1 = np.where(absent, np.nan, f1)
    precision = np.where(absent & (predicted == 0), np.nan, precision)
    auc = [
        roc_auc_score(y_true == c, proba[:, k]) if 0 < (y_true == c).sum() < len(y_true) else np.nan
        for k, c in enumerate(classes)
    ]
    frame = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "auc": auc, "support": support},
        index=pd.Index(classes.tolist(), name="class"),
    )
    means = frame.loc[~absent].iloc[:, :4].mean(axis=0).tolist()
    frame.loc["macro avg"] = [*means, int(support.sum())]
    frame["support"] = frame["support"].astype(int)
    frame.attrs.update(
        accuracy=float(accuracy_score(y_true, y_pred)),
        balanced_accuracy=_balanced_accuracy(y_true, y_pred),
        macro_f1=float(frame.loc["macro avg", "f1"]),
        classes_absent=classes[absent].tolist(),
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
