"""Pictures of the explanations. Every function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` (not pyplot): nothing is added to
pyplot's global state, a notebook shows the returned figure, and ``path=`` saves it
(PNG unless the suffix says otherwise).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd

from .._utils._figures import SAVING, finish_figure, new_figure
from .._utils._sklearn import Interval, StrOptions, validate_params


def _as_images(images, size):
    """uint8 or float ``(n, H, W, 3)`` -> float [0, 1]; paths are read at ``size``."""
    arr = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if arr.dtype == object or arr.dtype.kind in "US" or arr.ndim < 3:
        from ..images import load_images

        arr, _ = load_images(images, size=size)
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must have shape (n, H, W, 3); got {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    return np.clip(arr / 255.0 if arr.max() > 1.0 else arr, 0.0, 1.0)


def _resize(heat, shape):
    if heat.shape == shape:
        return heat
    from PIL import Image

    img = Image.fromarray(heat.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


@validate_params(
    {
        "images": ["array-like"],
        "heatmaps": ["array-like"],
        "y_true": ["array-like", None],
        "y_pred": ["array-like", None],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "cmap": [str],
        "max_images": [Interval(Integral, 1, None, closed="left")],
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_grad_cam(
    images,
    heatmaps,
    *,
    y_true=None,
    y_pred=None,
    alpha=0.5,
    cmap="jet",
    max_images=16,
    path=None,
    dpi=100,
):
    """One row per case: the image, its heatmap, and the heatmap over the image.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3) or column of image paths
        ``uint8`` or float in ``[0, 1]`` (e.g. ``grad_cam(..., return_images=True)``);
        paths are read at the heatmaps' size. Heatmaps of another size are resized
        to the images.
    heatmaps : ndarray of shape (n, h, w)
        Values in ``[0, 1]`` (:func:`grad_cam`).
    y_true, y_pred : array-like of shape (n,), default=None
        Labels shown in each row's title.
    alpha : float, default=0.5
        Opacity of the heatmap in the overlay.
    cmap : str, default="jet"
        Colour map of the heatmap.
    max_images : int, default=16
        Rows shown (the first ones).
    path : str or path-like, default=None
        Save the figure there.
    dpi : float, default=100
        Resolution of the saved figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib import colormaps

    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim == 2:
        heatmaps = heatmaps[None]
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must have shape (n, H, W); got {heatmaps.shape}")
    images = _as_images(images, heatmaps.shape[1:])
    if len(images) != len(heatmaps):
        raise ValueError(f"{len(images)} images for {len(heatmaps)} heatmaps; pass one per image")
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{name} has {len(labels)} labels for {len(images)} images")
    n = min(len(images), int(max_images))
    colour = colormaps[cmap]
    fig = new_figure((6.6, 2.3 * n + 0.3))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        heat = np.clip(_resize(heatmaps[i], images[i].shape[:2]), 0.0, 1.0)
        overlay = (1 - alpha) * images[i] + alpha * colour(heat)[..., :3]
        axes[i, 0].imshow(images[i])
        im = axes[i, 1].imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0)
        axes[i, 2].imshow(np.clip(overlay, 0.0, 1.0))
        title = []
        if y_true is not None:
            title.append(f"true: {np.asarray(y_true)[i]}")
        if y_pred is not None:
            title.append(f"pred: {np.asarray(y_pred)[i]}")
        axes[i, 0].set_title("image" if not title else " | ".join(title), fontsize=9, loc="left")
        axes[i, 1].set_title("heatmap", fontsize=9)
        axes[i, 2].set_title("overlay", fontsize=9)
        for ax in axes[i]:
            ax.set_axis_off()
    fig.colorbar(im, ax=axes[:, 1].tolist(), fraction=0.05, shrink=0.8)
    return finish_figure(fig, path, dpi)


# -- SHAP ---------------------------------------------------------------------------------


def _class_index(explanation, class_):
    names = list(explanation.output_names or [])
    if class_ is None:
        return None
    for i, name in enumerate(names):
        if name == class_ or name == str(class_):
            return i
    if (
        isinstance(class_, (int, np.integer))
        and not names
        and 0 <= class_ < _n_outputs(explanation)
    ):
        return int(class_)
    raise ValueError(f"class_ {class_!r} is not an output of the explanation; outputs: {names}")


def _n_outputs(explanation):
    values = np.asarray(explanation.values)
    return 1 if values.ndim == 2 else values.shape[2]


def _values3(explanation):
    values = np.asarray(explanation.values, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3:
        raise ValueError(
            "expected an explanation of several cases (values of shape (n_cases, n_features"
            f"[, n_outputs])); got shape {values.shape}"
        )
    base = np.asarray(explanation.base_values, dtype=np.float64).reshape(values.shape[0], -1)
    return values, base


def _output_names(explanation, k):
    names = list(explanation.output_names or [])
    return names if len(names) == k else [f"output {i}" for i in range(k)]


def _predicted(values, base):
    return np.argmax(base + values.sum(axis=1), axis=1)


@validate_params(
    {
        "explanation": "no_validation",  # a shap.Explanation: checked by _values3
        "kind": [StrOptions({"bar", "beeswarm"})],
        "class_": "no_validation",  # an output name: checked by _class_index
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_shap_summary(explanation, *, kind="bar", class_=None, path=None, dpi=100):
    """Mean absolute SHAP value of each column (bar), or every case's value (beeswarm).

    Parameters
    ----------
    explanation : shap.Explanation
        From :func:`explain_metadata`: values ``(n_cases, n_columns[, n_outputs])``.
    kind : {"bar", "beeswarm"}, default="bar"
        ``"bar"``: mean absolute SHAP value per column, stacked by class when ``class_`` is None.
        ``"beeswarm"``: one dot per case and column, coloured by the column's value
        when it is numeric.
    class_ : label or None, default=None
        Output (class) shown. ``None``: all classes stacked (bar), each case's
        predicted class (beeswarm).
    path : str or path-like, default=None
        Save the figure there.
    dpi : float, default=100
        Resolution of the saved figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    values, base = _values3(explanation)
    n, m, k = values.shape
    names = list(explanation.feature_names or [f"feature {j}" for j in range(m)])
    outputs = _output_names(explanation, k)
    index = _class_index(explanation, class_)
    fig = new_figure((6.4, 0.55 * m + 1.6))
    ax = fig.subplots()
    if kind == "bar":
        shown = range(k) if index is None else [index]
        mean_abs = np.abs(values).mean(axis=0)  # (m, k)
        order = np.argsort(mean_abs[:, list(shown)].sum(axis=1))  # largest on top
        left = np.zeros(m)
        colours = _class_colours(k)
        for c in shown:
            ax.barh(np.arange(m), mean_abs[order, c], left=left, label=outputs[c], color=colours[c])
            left += mean_abs[order, c]
        if len(shown) > 1:
            ax.legend(title="class", fontsize=8, loc="lower right")
        ax.set_xlabel("mean |SHAP value|" + ("" if index is None else f" ({outputs[index]})"))
    else:
        chosen = np.full(n, index) if index is not None else _predicted(values, base)
        per_case = values[np.arange(n), :, chosen]  # (n, m)
        order = np.argsort(np.abs(per_case).mean(axis=0))
        rng = np.random.default_rng(0)
        data = np.asarray(explanation.data, dtype=object) if explanation.data is not None else None
        coloured = False
        for row, j in enumerate(order):
            y = row + rng.uniform(-0.25, 0.25, n)
            col = None if data is None else _numeric(data[:, j])
            if col is not None and np.nanmax(col) > np.nanmin(col):
                scaled = (col - np.nanmin(col)) / (np.nanmax(col) - np.nanmin(col))
                ax.scatter(per_case[:, j], y, c=scaled, cmap="coolwarm", vmin=0, vmax=1, s=14,
                           plotnonfinite=True)  # fmt: skip
                coloured = True
            else:
                ax.scatter(per_case[:, j], y, color="0.45", s=14)
        ax.axvline(0.0, color="0.6", lw=0.8)
        what = "predicted class" if index is None else outputs[index]
        ax.set_xlabel(f"SHAP value ({what})")
        if coloured:
            from matplotlib.cm import ScalarMappable

            cbar = fig.colorbar(ScalarMappable(cmap="coolwarm"), ax=ax, ticks=[0, 1])
            cbar.ax.set_yticklabels(["low", "high"])
            cbar.set_label("value (numeric columns)")
    ax.set_yticks(np.arange(m), [names[j] for j in order])
    ax.set_title("Importance of each input (SHAP)")
    return finish_figure(fig, path, dpi)


def _numeric(column):
    try:
        col = np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return col if np.isfinite(col).any() else None


def _class_colours(k):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


@validate_params(
    {
        "explanation": "no_validation",
        "index": [Integral],  # its range depends on the explanation: checked below
        "class_": "no_validation",
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_shap_waterfall(explanation, index=0, *, class_=None, path=None, dpi=100):
    """How one case's output is built from the expected value, column by column.

    Parameters
    ----------
    explanation : shap.Explanation
        From :func:`explain_metadata`.
    index : int, default=0
        The case (row of the explanation).
    class_ : label or None, default=None
        Output (class) explained; ``None`` is the case's predicted class.
    path : str or path-like, default=None
        Save the figure there.
    dpi : float, default=100
        Resolution of the saved figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    values, base = _values3(explanation)
    n, m, k = values.shape
    if not -n <= index < n:
        raise ValueError(f"index must be an int in [0, {n}) (or [-{n}, 0)); got {index!r}")
    outputs = _output_names(explanation, k)
    c = _class_index(explanation, class_)
    if c is None:
        c = int(_predicted(values[index : index + 1], base[index : index + 1])[0])
    contrib = values[index, :, c]
    start = base[index, c]
    names = list(explanation.feature_names or [f"feature {j}" for j in range(m)])
    shown = explanation.display_data if explanation.display_data is not None else explanation.data
    labels = []
    for j in range(m):
        value = None if shown is None else np.asarray(shown, dtype=object)[index, j]
        if isinstance(value, float):
            value = f"{value:.4g}"
        labels.append(names[j] if value is None else f"{names[j]} = {value}")
    order = np.argsort(np.abs(contrib))  # from E[f(X)] at the bottom up to f(x), largest last
    fig = new_figure((7.0, 0.55 * m + 1.8))
    ax = fig.subplots()
    position = start + np.cumsum(contrib[order]) - contrib[order]
    for row, (j, left) in enumerate(zip(order, position)):
        width = contrib[j]
        ax.barh(row, width, left=left, color="#d62728" if width > 0 else "#1f77b4")
        ax.text(left + width, row, f" {width:+.3f} ", va="center",
                ha="left" if width >= 0 else "right", fontsize=8)  # fmt: skip
    ax.axvline(start, color="0.5", ls="--", lw=0.8)
    end = start + contrib.sum()
    ax.axvline(end, color="0.2", lw=0.8)
    ax.set_yticks(np.arange(m), [labels[j] for j in order])
    ax.set_xlabel(f"model output for {outputs[c]}: E[f(X)] = {start:.3f} -> f(x) = {end:.3f}")
    ax.set_title(f"Case {index}: contribution of each input")
    return finish_figure(fig, path, dpi)


# -- permutation importance and confusion matrix -------------------------------------------


@validate_params(
    {
        "result": [dict, pd.DataFrame],  # a Bunch is a dict; its keys are checked below
        **SAVING,
    },
    prefer_skip_nested_validation=True,
)
def plot_importance(result, *, path=None, dpi=100):
    """Box plot of permutation importances per column (:func:`modality_importance`).

    Parameters
    ----------
    result : Bunch or DataFrame
        :func:`modality_importance`'s result (or a Bunch with ``importances`` and
        ``feature_names``; or a DataFrame with an ``importances_mean`` column, drawn as
        bars with ``importances_std`` error bars).
    path : str or path-like, default=None
        Save the figure there.
    dpi : float, default=100
        Resolution of the saved figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    if hasattr(result, "importances_mean") and hasattr(result, "index"):  # DataFrame
        names = [str(v) for v in result.index]
        mean = np.asarray(result["importances_mean"], dtype=float)
        std = np.asarray(result.get("importances_std", np.zeros_like(mean)), dtype=float)
        samples = None
    elif hasattr(result, "importances") and "feature_names" in result:
        names = [str(v) for v in result["feature_names"]]
        samples = np.asarray(result["importances"], dtype=float)
        mean, std = samples.mean(axis=1), samples.std(axis=1)
    else:
        raise TypeError(
            "result must be modality_importance's result (a Bunch with importances and "
            "feature_names) or a DataFrame with an importances_mean column"
        )
    m = len(names)
    order = np.argsort(mean)  # largest on top
    fig = new_figure((6.0, 0.5 * m + 1.4))
    ax = fig.subplots()
    if samples is not None:
        ax.boxplot(samples[order].T, orientation="horizontal", widths=0.6)
        ax.set_yticks(np.arange(1, m + 1), [names[j] for j in order])
    else:
        ax.barh(np.arange(m), mean[order], xerr=std[order], color="#1f77b4")
        ax.set_yticks(np.arange(m), [names[j] for j in order])
    ax.axvline(0.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("drop in score when the column is shuffled")
    ax.set_title("Permutation importance")
    return finish_figure(fig, path, dpi)
