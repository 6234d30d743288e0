"""The clinical metrics by patient group (sex, age band, body site), with lesion-grouped
intervals, and their forest plot."""

from __future__ import annotations

from itertools import pairwise
from numbers import Integral

import numpy as np
import pandas as pd

from .._utils._figures import SAVING, finish_figure, new_figure
from .._utils._sklearn import Interval, StrOptions, validate_params
from ._calibration import expected_calibration_error
from ._report import _balanced_accuracy, bootstrap_interval

#: The default age bands (years): [0, 30), [30, 45), [45, 60), [60, 75), 75 and over.
AGE_BANDS = (30, 45, 60, 75)

#: The metrics of a subgroup report (``<pos>`` stands for ``pos_label``).
SUBGROUP_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "ece")


def _band_names(edges) -> list:
    return [f"<{edges[0]}", *(f"{a}-{b - 1}" for a, b in pairwise(edges)), f"{edges[-1]}+"]


def age_band(age, edges=AGE_BANDS) -> pd.Series:
    """Ages as bands named ``"<30"``, ``"30-44"``, ..., ``"75+"``; missing ages: ``NaN``.

    Examples
    --------
    >>> age_band([12, 30, 44.5, None, 80]).tolist()
    ['<30', '30-44', '30-44', nan, '75+']
    """
    age = pd.to_numeric(pd.Series(age, dtype=object), errors="coerce")
    bins = [-np.inf, *edges, np.inf]
    return pd.cut(age, bins, right=False, labels=_band_names(edges)).astype(object)


def _metric_functions(classes, pos_label):
    classes = np.asarray(classes)
    k = list(classes).index(pos_label) if pos_label in classes else None

    def labels(p):
        return classes[p.argmax(axis=1)]

    def sensitivity(y, p):
        positive = y == pos_label
        if not positive.any():
            raise ValueError("no positive case")
        return float((labels(p)[positive] == pos_label).mean())

    def specificity(y, p):
        negative = y != pos_label
        if not negative.any():
            raise ValueError("no negative case")
        return float((labels(p)[negative] != pos_label).mean())

    out = {
        "balanced_accuracy": lambda y, p: _balanced_accuracy(y, labels(p)),
        "ece": lambda y, p: expected_calibration_error(y, p, classes=classes),
    }
    if k is not None:
        out = {"balanced_accuracy": out["balanced_accuracy"], "sensitivity": sensitivity,
               "specificity": specificity, "ece": out["ece"]}  # fmt: skip
    return out


@validate_params(
    {
        "y_true": ["array-like"],
        "proba": ["array-like"],
        "classes": ["array-like"],
        "groups": ["array-like"],
        "metadata": [pd.DataFrame],
        "by": ["array-like"],
        "pos_label": "no_validation",
        "age_bands": ["array-like"],
        "min_lesions": [Interval(Integral, 1, None, closed="left")],
        "min_positive": [Interval(Integral, 1, None, closed="left")],
        "n_resamples": [Interval(Integral, 10, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def subgroup_report(
    y_true, proba, *, classes, groups, metadata, by=("sex", "age", "localization"),
    pos_label="mel", age_bands=AGE_BANDS, min_lesions=10, min_positive=10, n_resamples=1000,
    random_state=0,
):  # fmt: skip
    """Clinical metrics by patient group, each with a lesion-grouped 95 % interval.

    For all images, then for every value of each column of ``by`` (``age`` in bands): the
    balanced accuracy over the classes present, the ``pos_label`` sensitivity and
    specificity of the most probable class (the model's own operating point, the same in
    every group), and the top-label ECE, each with its percentile interval over
    ``n_resamples`` lesion resamples (:func:`bootstrap_interval`). A group is
    ``flagged`` when its sensitivity interval lies wholly below the overall one (its upper
    end under the overall lower end): the model misses more of its melanomas, beyond chance.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Columns follow ``classes``.
    classes : array-like of shape (n_classes,)
    groups : array-like of shape (n_samples,)
        Lesion of each image.
    metadata : pandas.DataFrame
        Row-aligned with ``y_true``, with the columns of ``by`` (a dataset's ``data``).
    by : array-like of str, default=("sex", "age", "localization")
        The grouping columns; ``age`` is cut into ``age_bands``. Missing values form no
        group; a column absent from ``metadata`` is skipped.
    pos_label : label, default="mel"
    age_bands : array-like of int, default=(30, 45, 60, 75)
        Edges of the age bands (years).
    min_lesions : int, default=10
        Groups with fewer lesions are listed with their counts, without metrics.
    min_positive : int, default=10
        Groups with fewer ``pos_label`` images get no sensitivity (one or two melanomas give
        an interval of a point, not evidence), so they are never flagged.
    n_resamples : int, default=1000
    random_state : int, RandomState or None, default=0

    Returns
    -------
    report : pandas.DataFrame
        One row per group, indexed by ``(attribute, group)`` (``("all", "all")`` first):
        ``n_images``, ``n_lesions``, ``n_positive``, then ``<metric>``, ``<metric>_low`` and
        ``<metric>_high`` for ``balanced_accuracy``, ``sensitivity``, ``specificity`` and
        ``ece`` (NaN where a group has too few lesions, or too few ``pos_label`` cases for
        the sensitivity), and ``flagged``.

    Examples
    --------
    >>> import pandas as pd
    >>> rng = np.random.RandomState(0)
    >>> y = rng.choice(["mel", "nv"], 200)
    >>> proba = np.where((y == "mel")[:, None], [0.7, 0.3], [0.3, 0.7])
    >>> meta = pd.DataFrame({"sex": rng.choice(["female", "male"], 200)})
    >>> report = subgroup_report(y, proba, classes=["mel", "nv"], groups=np.arange(200),
    ...                          metadata=meta, n_resamples=50)
    >>> report.index.tolist()
    [('all', 'all'), ('sex', 'female'), ('sex', 'male')]
    >>> report["sensitivity"].tolist(), report["flagged"].any()
    ([1.0, 1.0, 1.0], np.False_)
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    groups = np.asarray(groups)
    if len(metadata) != len(y_true) or len(groups) != len(y_true) or len(proba) != len(y_true):
        raise ValueError("y_true, proba, groups and metadata need one row per image")
    functions = _metric_functions(classes, pos_label)
    masks = {("all", "all"): np.ones(len(y_true), dtype=bool)}
    for column in by:
        if column not in metadata.columns:
            continue
        values = metadata[column].reset_index(drop=True)
        if column == "age":
            values = age_band(values, tuple(age_bands))
        values = values.astype(object)
        order = sorted(pd.unique(values.dropna()), key=str)
        if column == "age":
            order = [v for v in _band_names(tuple(age_bands)) if v in set(order)]
        for value in order:
            masks[(column, value)] = (values == value).to_numpy()
    rows = {}
    for key, mask in masks.items():
        row = {"n_images": int(mask.sum()), "n_lesions": len(np.unique(groups[mask])),
               "n_positive": int((y_true[mask] == pos_label).sum())}  # fmt: skip
        for name, f in functions.items():
            iv = None
            few = name == "sensitivity" and row["n_positive"] < min_positive
            if row["n_lesions"] >= min_lesions and not few:
                try:
                    iv = bootstrap_interval(
                        f, y_true[mask], proba[mask], groups=groups[mask],
                        n_resamples=n_resamples, random_state=random_state,
                    )  # fmt: skip
                except ValueError:  # e.g. no melanoma in the group
                    iv = None
            row[name] = np.nan if iv is None else iv.estimate
            row[f"{name}_low"] = np.nan if iv is None else iv.low
            row[f"{name}_high"] = np.nan if iv is None else iv.high
        rows[key] = row
    report = pd.DataFrame.from_dict(rows, orient="index")
    report.index = pd.MultiIndex.from_tuples(report.index, names=["attribute", "group"])
    if "sensitivity" in report:
        overall_low = report.loc[("all", "all"), "sensitivity_low"]
        report["flagged"] = (report["sensitivity_high"] < overall_low).fillna(False)
    else:
        report["flagged"] = False
    report["flagged"] = report["flagged"].astype(bool)
    report.attrs["pos_label"] = pos_label
    return report


@validate_params(
    {
        "report": [pd.DataFrame],
        "metric": [StrOptions(set(SUBGROUP_METRICS))],
        "title": [str, None],
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_subgroup_report(report, *, metric="sensitivity", title=None, path=None, dpi=120):
    """Forest plot of a :func:`subgroup_report`: each group's ``metric`` and its interval.

    The overall interval is the grey band; flagged groups (sensitivity interval wholly
    below it) are red; group labels carry their image and ``pos_label`` counts.

    Parameters
    ----------
    report : pandas.DataFrame
        Of :func:`subgroup_report`.
    metric : {"sensitivity", "specificity", "balanced_accuracy", "ece"}, default="sensitivity"
    title : str or None, default=None
    path : str, path-like or None, default=None
        Also save the figure there.
    dpi : float, default=120

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    if metric not in report:
        raise ValueError(f"the report has no {metric!r} (no {report.attrs.get('pos_label')!r} "
                         "among the classes?)")  # fmt: skip
    pos = report.attrs.get("pos_label", "mel")
    fig = new_figure((7, 0.32 * len(report) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(report))[::-1]
    overall = report.iloc[0]
    if np.isfinite(overall[f"{metric}_low"]):
        ax.axvspan(overall[f"{metric}_low"], overall[f"{metric}_high"], color="0.88", zorder=0,
                   label="all images, 95 % interval")  # fmt: skip
        ax.axvline(overall[metric], color="0.5", lw=1, zorder=1)
    labels = []
    for yi, ((attribute, group), row) in zip(y, report.iterrows()):
        name = "all images" if attribute == "all" else f"{attribute}: {group}"
        labels.append(f"{name} (n={row['n_images']}, {pos} {row['n_positive']})")
        if not np.isfinite(row[metric]):
            ax.text(0.01, yi, "too few cases", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=7, color="0.5")  # fmt: skip
            continue
        color = "tab:red" if row["flagged"] and metric == "sensitivity" else "tab:blue"
        low, high = row[f"{metric}_low"], row[f"{metric}_high"]
        ax.errorbar(row[metric], yi, xerr=[[row[metric] - low], [high - row[metric]]], fmt="o",
                    color=color, ms=4, capsize=2)  # fmt: skip
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(-0.7, len(report) - 0.3)
    if metric == "sensitivity" and report["flagged"].any():
        ax.plot([], [], "o", color="tab:red", ms=4, label="flagged: wholly below all images")
    name = f"{pos} {metric}" if metric in ("sensitivity", "specificity") else metric
    ax.set_xlabel(f"{name.replace('_', ' ')} (95 % lesion-grouped bootstrap interval)")
    ax.set_title(title or f"{name.replace('_', ' ')} by patient group", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=2, fontsize=7)
    return finish_figure(fig, path, dpi)
