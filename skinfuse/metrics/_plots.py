"""Pictures of the clinical evaluation: reliability diagram, sensitivity/specificity curve,
confusion matrix."""

from __future__ import annotations

import textwrap
from numbers import Integral, Real

import numpy as np
from sklearn.metrics import roc_curve

from .._utils._figures import SAVING, finish_figure, new_figure
from .._utils._sklearn import HasMethods, Interval, StrOptions, validate_params
from ._calibration import expected_calibration_error
from ._operating import _binary, operating_point, partial_auc


def _wrap(text, width):
    """``text`` broken into lines of at most ``width`` characters: a row name of a benchmark
    (e.g. "partially fine-tuned CNN (last 2 stages) + metadata (FusionNet)") stays inside
    the figure, which constrained layout does not do for titles and legends."""
    return textwrap.fill(text, width, break_long_words=False)


@validate_params(
    {
        "y_true": ["array-like"],
        "probas": [dict],
        "classes": ["array-like"],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "title": [str, None],
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_reliability_diagram(y_true, probas, *, classes, n_bins=15, title=None, path=None,
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
    n_bins : int, default=15
        Equal-width confidence bins, as :func:`expected_calibration_error` (the ECE in the
        legend is computed on them, so it matches that function's default).
    title : str or None, default=None
    path : str, path-like or None, default=None
        Also save the figure there.
    dpi : float, default=120

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
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
        ax.plot(mean_conf, acc, marker="o", label=_wrap(f"{name} (ECE {ece:.3f})", 48))
        counts = np.bincount(bins, minlength=n_bins)
        bars.bar(edges[:-1] + (i + 0.5) * width, counts, width=width, align="edge")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(_wrap(title or "Reliability (top label)", 52), fontsize=10)
    ax.legend(loc="best", fontsize=8)
    bars.set(xlabel="confidence (highest probability)", ylabel="cases")
    return finish_figure(fig, path, dpi)


@validate_params(
    {
        "y_true": ["array-like"],
        "scores": [dict],
        "pos_label": "no_validation",
        "mark_sensitivity": [Interval(Real, 0, 1, closed="both"), None],
        "title": [str, None],
        **SAVING,
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
    fig = new_figure((5.2, 4.6))
    ax = fig.subplots()
    ax.axhspan(0.8, 1.0, color="0.92", zorder=0, label="partial AUC region (TPR >= 0.8)")
    for i, (name, score) in enumerate(scores.items()):
        positive, score = _binary(y_true, score, pos_label)
        fpr, tpr, _ = roc_curve(positive, score)
        pauc = partial_auc(y_true, score, pos_label=pos_label)
        (line,) = ax.plot(1 - fpr, tpr, label=_wrap(f"{name} (pAUC {pauc:.3f})", 48))
        if mark_sensitivity is not None:
            point = operating_point(
                y_true, score, sensitivity=mark_sensitivity, pos_label=pos_label
            )
            ax.plot(point["specificity"], point["sensitivity"], "o", color=line.get_color())
            ax.annotate(  # one line lower per curve: close points' labels do not overlap
                f"spec {point['specificity']:.2f}",
                (point["specificity"], point["sensitivity"]), color=line.get_color(),
                textcoords="offset points", xytext=(6, -12 - 10 * i), fontsize=8,
            )  # fmt: skip
    if mark_sensitivity is not None:
        ax.axhline(mark_sensitivity, color="0.5", linestyle=":", linewidth=1)
    ax.set(xlabel="specificity", ylabel=f"sensitivity ({pos_label})", xlim=(0, 1), ylim=(0, 1.01))
    ax.invert_xaxis()
    ax.set_title(_wrap(title or f"{pos_label} vs rest: sensitivity and specificity", 52))
    ax.legend(loc="lower right", fontsize=8)
    return finish_figure(fig, path, dpi)


@validate_params(
    {
        "y_true": ["array-like"],
        "y_pred": ["array-like"],
        "labels": ["array-like", None],
        "normalize": [StrOptions({"true", "pred", "all"}), None],
        "cmap": [str, HasMethods(["__call__"])],  # a name or a matplotlib Colormap
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_confusion_matrix(
    y_true, y_pred, *, labels=None, normalize=None, cmap="Blues", path=None, dpi=100
):
    """Confusion matrix (scikit-learn's ``ConfusionMatrixDisplay``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
    labels : array-like or None, default=None
        Classes shown, in this order (``None``: those present, sorted).
    normalize : {"true", "pred", "all"} or None, default=None
        As in :func:`sklearn.metrics.confusion_matrix`: ``"true"`` gives per-class recall.
    cmap : str or matplotlib Colormap, default="Blues"
    path : str or path-like, default=None
        Save the figure there.
    dpi : float, default=100
        Resolution of the saved figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(labels) if labels is not None else len(np.unique(np.asarray(y_true)))
    size = max(4.0, 0.6 * k + 2.5)
    fig = new_figure((size + 0.8, size))
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=labels, normalize=normalize, cmap=cmap, ax=ax, colorbar=True,
        values_format=".2f" if normalize else "d",
    )  # fmt: skip
    ax.set_title("Confusion matrix" + (f" (normalised over {normalize})" if normalize else ""))
    return finish_figure(fig, path, dpi)
