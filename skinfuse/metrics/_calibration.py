"""Calibration error: how far predicted probabilities are from observed frequencies."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .._utils._sklearn import Interval, StrOptions, validate_params


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
