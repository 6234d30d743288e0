"""The clinical metric set, defined once: what ``skinfuse evaluate``, ``reproduce.py`` and
the docs' figures report for a model's probabilities."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.metrics import accuracy_score

from .._utils._sklearn import Interval, validate_params
from ._calibration import expected_calibration_error
from ._operating import partial_auc, sensitivity_at_specificity, specificity_at_sensitivity
from ._report import _balanced_accuracy, _classes_present, _macro_f1, bootstrap_interval


def _percent(fraction) -> str:
    return f"{100 * fraction:.3g}"  # 0.82 -> "82", 0.825 -> "82.5"


def _summary_metrics(classes, pos_label, specificities, sensitivities, min_tpr, present=None):
    """``{name: metric(y_true, proba)}``: the metrics of the whole model, then those of
    ``pos_label`` against the rest (if it is one of ``classes``). ``present``: the classes
    of the macro F1 (those of the evaluated data); ``None``: all of ``classes``."""
    classes = np.asarray(classes)
    present = classes if present is None else present

    def labels(proba):
        return classes[proba.argmax(axis=1)]

    metrics = {
        "balanced_accuracy": lambda y, p: _balanced_accuracy(y, labels(p)),
        "accuracy": lambda y, p: accuracy_score(y, labels(p)),
        "macro_f1": lambda y, p: _macro_f1(y, labels(p), present),
        "ece": lambda y, p: expected_calibration_error(y, p, classes=classes),
    }
    if pos_label not in classes:
        return metrics
    k = int(np.flatnonzero(classes == pos_label)[0])
    for s in specificities:
        metrics[f"sensitivity_at_{_percent(s)}_specificity"] = lambda y, p, s=s: (
            sensitivity_at_specificity(y, p[:, k], s, pos_label=pos_label)
        )
    for s in sensitivities:
        metrics[f"specificity_at_{_percent(s)}_sensitivity"] = lambda y, p, s=s: (
            specificity_at_sensitivity(y, p[:, k], s, pos_label=pos_label)
        )
    metrics[f"partial_auc_above_{_percent(min_tpr)}_sensitivity"] = lambda y, p: partial_auc(
        y, p[:, k], min_tpr=min_tpr, pos_label=pos_label
    )
    return metrics


#: Names of the metrics of the whole model (the others are of ``pos_label`` vs the rest).
_MODEL_METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "ece")


@validate_params(
    {
        "y_true": ["array-like"],
        "proba": ["array-like"],
        "classes": ["array-like"],
        "groups": ["array-like", None],
        "pos_label": "no_validation",
        "specificities": ["array-like"],
        "sensitivities": ["array-like"],
        "min_tpr": [Interval(Real, 0, 1, closed="left")],
        "metrics": ["array-like", None],
        "n_resamples": [Interval(Integral, 10, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def clinical_summary(
    y_true, proba, *, classes, groups=None, pos_label="mel", specificities=(0.8, 0.9),
    sensitivities=(0.82,), min_tpr=0.8, metrics=None, n_resamples=1000, random_state=0,
    verbose=0,
):  # fmt: skip
    """The clinical metric set of a model's probabilities, with lesion-grouped intervals.

    For the whole model: ``balanced_accuracy``, ``accuracy``, ``macro_f1`` and ``ece``
    (top-label :func:`expected_calibration_error`). ``balanced_accuracy`` and ``macro_f1``
    are means over the classes present in ``y_true``: on data holding only some of
    ``classes`` (another source; :func:`clinical_report` lists the absent ones), an absent
    class is left out of the mean and a prediction of it counts as an error (a missed case
    of the true class); with every class present they are the means over all of
    ``classes``. For
    ``pos_label`` against the rest (when it is one of ``classes`` and ``y_true`` has cases
    of it): ``sensitivity_at_<s>_specificity`` for each of ``specificities``,
    ``specificity_at_<s>_sensitivity`` for each of ``sensitivities`` (``<s>`` in percent,
    e.g. ``sensitivity_at_80_specificity``; see :func:`operating_point`) and
    ``partial_auc_above_<min_tpr>_sensitivity`` (:func:`partial_auc`). The prediction is
    the most probable class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Columns follow ``classes`` (``model.classes_``).
    classes : array-like of shape (n_classes,)
    groups : array-like of shape (n_samples,), default=None
        Lesion of each row. Given, each metric comes with its percentile interval over
        ``n_resamples`` lesion resamples (:func:`bootstrap_interval`); ``None``: the
        metrics alone.
    pos_label : label, default="mel"
        The class of the operating points.
    specificities : array-like of float, default=(0.8, 0.9)
        Specificities at which the sensitivity is reported.
    sensitivities : array-like of float, default=(0.82,)
        Sensitivities at which the specificity is reported (0.82: the dermatologists' of
        reader studies).
    min_tpr : float in [0, 1), default=0.8
        Lower bound of the partial AUC (ISIC 2024: 0.8).
    metrics : array-like of str, default=None
        Names of the metrics to compute, in the order above; ``None``: all.
    n_resamples : int, default=1000
        Lesion resamples of each interval (with ``groups``).
    random_state : int, RandomState or None, default=0
        Seed of the resamples; each metric draws the same resamples.
    verbose : int, default=0
        1: a progress bar over the metrics (with ``groups``).

    Returns
    -------
    summary : dict
        Metric name -> :class:`BootstrapInterval` (with ``groups``) or float.

    Examples
    --------
    >>> y = ["mel", "nv", "mel", "nv", "nv"]
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]]
    >>> summary = clinical_summary(y, proba, classes=["mel", "nv"])
    >>> summary["balanced_accuracy"], round(summary["specificity_at_82_sensitivity"], 3)
    (0.75, 0.667)
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    present = _classes_present(y_true, classes)
    functions = _summary_metrics(
        classes, pos_label, specificities, sensitivities, min_tpr, present=present
    )
    if not (y_true == pos_label).any():  # no operating point without a positive case
        functions = {k: f for k, f in functions.items() if k in _MODEL_METRICS}
    if metrics is not None:
        known = _summary_metrics([pos_label], pos_label, specificities, sensitivities, min_tpr)
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(known)}")
        functions = {k: f for k, f in functions.items() if k in set(metrics)}
    if groups is None:
        return {name: float(f(y_true, proba)) for name, f in functions.items()}
    items = functions.items()
    if verbose:
        from .._utils._progress import progress

        items = progress(items, desc="bootstrap intervals", unit="metric", total=len(functions))
    return {
        name: bootstrap_interval(
            f, y_true, proba, groups=groups, n_resamples=n_resamples, random_state=random_state
        )
        for name, f in items
    }
