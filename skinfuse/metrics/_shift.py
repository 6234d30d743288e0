"""A dataset as a model sees it, and two of them side by side: the shift summary.

Data from another clinic differs before any model sees it: other image sizes and aspect
ratios, another class mix, metadata missing or in categories the training data never had.
:func:`dataset_summary` describes one dataset cheaply (image file headers only, no
decoding); :func:`shift_report` puts it next to the training data's.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._columns import IMAGE_COLUMN
from .._utils._sklearn import validate_params

#: Aspect ratios (long side / short side) within this relative distance count as equal.
_RATIO_TOLERANCE = 0.02


def _image_sizes(images) -> tuple[list[tuple[int, int]], list[str], int]:
    """``(width, height)`` and format of each image from its file header (no decoding);
    arrays give their shape. Returns the sizes, the formats and the number unreadable."""
    from PIL import Image, UnidentifiedImageError

    sizes, formats, unreadable = [], [], 0
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            try:
                with Image.open(image) as img:  # reads the header only
                    sizes.append(img.size)
                    formats.append(img.format or "unknown")
            except (OSError, UnidentifiedImageError):
                unreadable += 1
        elif isinstance(image, np.ndarray) and image.ndim in (2, 3):
            sizes.append((int(image.shape[1]), int(image.shape[0])))
            formats.append("array")
        else:
            unreadable += 1
    return sizes, formats, unreadable


def _shares(values, order=None) -> dict:
    """``{value: share}`` over ``values``, in ``order`` (values not in it after), or by
    decreasing share."""
    counts = pd.Series(values, dtype=object).value_counts(sort=True)
    if order is not None:
        known = [v for v in order if v in counts.index]
        counts = counts.reindex(known + [v for v in counts.index if v not in set(known)])
    total = counts.sum()
    return {str(k): float(v / total) for k, v in counts.items()} if total else {}


def _image_part(images) -> dict:
    sizes, formats, unreadable = _image_sizes(images)
    n = len(sizes) + unreadable
    part = {"n_read": len(sizes), "share_unreadable": unreadable / n if n else 0.0}
    if not sizes:
        return part
    wh = np.asarray(sizes, dtype=np.float64)
    ratio = wh.max(axis=1) / wh.min(axis=1)
    square = np.abs(ratio - 1) <= _RATIO_TOLERANCE
    four_three = np.abs(ratio / (4 / 3) - 1) <= _RATIO_TOLERANCE
    counts = pd.Series([f"{w}x{h}" for w, h in sizes]).value_counts()
    part |= {
        "median_width": float(np.median(wh[:, 0])),
        "median_height": float(np.median(wh[:, 1])),
        "min_side": int(wh.min()),
        "max_side": int(wh.max()),
        "share_square": float(square.mean()),
        "share_4_3": float(four_three.mean()),
        "share_other_ratio": float((~square & ~four_three).mean()),
        "share_portrait": float((wh[:, 1] > wh[:, 0]).mean()),
        "most_common_size": str(counts.index[0]),
        "formats": _shares(formats),
    }
    return part


def _column_part(column: pd.Series) -> dict:
    missing = column.isna() | column.astype(str).str.strip().str.lower().isin(["", "unknown"])
    part = {"missing": float(missing.mean()) if len(column) else 0.0}
    present = column[~missing]
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        values = present.astype(np.float64)
        part["kind"] = "numeric"
        if len(values):
            part |= {"mean": float(values.mean()), "min": float(values.min()),
                     "max": float(values.max())}  # fmt: skip
    else:
        part["kind"] = "categorical"
        part["categories"] = _shares(present.astype(str).tolist())
    return part


@validate_params(
    {
        "X": ["array-like"],
        "y": ["array-like", None],
        "proba": ["array-like", None],
        "classes": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def dataset_summary(X, y=None, proba=None, *, classes=None):
    """Describe a dataset as a model sees it: images, class mix, metadata, confidence.

    Cheap: image sizes come from the file headers (nothing is decoded). Put it next to
    the training data's with :func:`shift_report`; ``skinfuse train`` stores the training
    data's summary in the model file and ``skinfuse evaluate`` prints both.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples,)
        The model's input: a DataFrame with the ``image_path`` column and metadata
        columns (``age``, ``sex``, ``localization``: every other column counts as
        metadata), or image paths alone.
    y : array-like of shape (n_samples,), default=None
        Labels; given, the class mix is described.
    proba : array-like of shape (n_samples, n_classes), default=None
        A model's probabilities on ``X``; given, the mean confidence (mean of the highest
        probability) and the predicted class mix are described. Needs ``classes``.
    classes : array-like of shape (n_classes,), default=None
        The model's classes (``model.classes_``): the columns of ``proba`` and the order
        of the class mixes.

    Returns
    -------
    summary : dict
        JSON-serialisable: ``n_images``; ``images`` (``n_read``, ``share_unreadable``,
        ``median_width``, ``median_height``, ``min_side``, ``max_side``,
        ``share_square``, ``share_4_3`` (either orientation), ``share_other_ratio``,
        ``share_portrait``, ``most_common_size`` (``"WxH"``), ``formats``); ``metadata``:
        per column, ``missing`` (the share of rows without a value; ``"unknown"`` and
        empty text count as missing), ``kind``, and ``categories`` (share of each among
        the rows with a value) or ``mean``/``min``/``max``; with ``y``: ``classes``
        (share of each class); with ``proba``: ``mean_confidence`` and ``predicted``
        (share of each predicted class).

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"image_path": ["missing.jpg", "missing.jpg"], "age": [40.0, None],
    ...                   "sex": ["male", "female"]})
    >>> summary = dataset_summary(X, ["nv", "mel"], [[0.2, 0.8], [0.6, 0.4]],
    ...                           classes=["mel", "nv"])
    >>> summary["metadata"]["age"]["missing"], summary["metadata"]["sex"]["categories"]
    (0.5, {'male': 0.5, 'female': 0.5})
    >>> summary["classes"], summary["mean_confidence"]
    ({'mel': 0.5, 'nv': 0.5}, 0.7)
    >>> summary["images"]["share_unreadable"]
    1.0
    """
    if isinstance(X, pd.DataFrame):
        if IMAGE_COLUMN not in X.columns:
            raise ValueError(
                f"X has no {IMAGE_COLUMN!r} column (columns: {list(X.columns)}); pass the "
                "model's input, e.g. the data of a skinfuse.datasets loader"
            )
        images, metadata = X[IMAGE_COLUMN].tolist(), X.drop(columns=IMAGE_COLUMN)
    else:
        images, metadata = list(np.asarray(X, dtype=object).ravel()), pd.DataFrame()
    n = len(images)
    order = None if classes is None else np.asarray(classes).tolist()
    summary = {
        "n_images": n,
        "images": _image_part(images),
        "metadata": {str(name): _column_part(metadata[name]) for name in metadata.columns},
    }
    if y is not None:
        y = np.asarray(y, dtype=object)
        if len(y) != n:
            raise ValueError(f"y has {len(y)} labels for {n} images; pass one per image")
        summary["classes"] = _shares(y.tolist(), order)
    if proba is not None:
        if classes is None:
            raise ValueError("proba needs classes, the model's classes_ (its columns)")
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape != (n, len(order)):
            raise ValueError(
                f"proba has shape {proba.shape}; expected ({n}, {len(order)}): one row per "
                "image, one column per class"
            )
        summary["mean_confidence"] = float(proba.max(axis=1).mean()) if n else float("nan")
        predicted = np.asarray(order, dtype=object)[proba.argmax(axis=1)]
        summary["predicted"] = _shares(predicted.tolist(), order)
    return summary


def _percent(share) -> str:
    return f"{100 * share:.0f}%" if share is not None else ""


def _rows(summary) -> dict:
    """``{row name: text}`` of one summary (``None``: no rows)."""
    if summary is None:
        return {}
    rows = {"images": str(summary["n_images"])}
    images = summary["images"]
    if "median_width" in images:
        rows["median size (WxH)"] = f"{images['median_width']:.0f}x{images['median_height']:.0f}"
        rows["most common size"] = images["most_common_size"]
        rows["square / 4:3 / other"] = " / ".join(
            _percent(images[k]) for k in ("share_square", "share_4_3", "share_other_ratio")
        )
    if images.get("share_unreadable"):
        rows["unreadable images"] = _percent(images["share_unreadable"])
    for name, share in summary.get("classes", {}).items():
        rows[f"class {name}"] = _percent(share)
    for name, column in summary["metadata"].items():
        rows[f"{name} missing"] = _percent(column["missing"])
        if column["kind"] == "numeric" and "mean" in column:
            rows[f"{name} mean"] = f"{column['mean']:.1f}"
        elif column["kind"] == "categorical":
            rows[f"{name} categories"] = str(len(column["categories"]))
    if "mean_confidence" in summary:
        rows["mean confidence"] = f"{summary['mean_confidence']:.3f}"
        for name, share in summary["predicted"].items():
            rows[f"predicted {name}"] = _percent(share)
    return rows


@validate_params(
    {"summary": [dict], "reference": [dict, None], "names": [tuple, list]},
    prefer_skip_nested_validation=True,
)
def shift_report(summary, reference=None, *, names=("training", "data")):
    """Two :func:`dataset_summary` results side by side, and what the data has new.

    Parameters
    ----------
    summary : dict
        The summary of the data the model is applied to.
    reference : dict or None, default=None
        The summary of the training data (``None``: ``summary`` alone).
    names : tuple of two str, default=("training", "data")
        Column names for ``reference`` and ``summary``.

    Returns
    -------
    table : pandas.DataFrame
        One row per quantity (image count, median size, shares of square and 4:3 images,
        class mix, per metadata column the share missing and the number of categories or
        the mean, mean confidence, predicted class mix), as text; a column per summary;
        empty text where a summary lacks the quantity. ``table.attrs`` holds
        ``unseen_categories`` (``{column: [categories of summary that reference never
        had]}``), ``missing_columns`` (metadata columns with no value at all in
        ``summary`` that ``reference`` has values of, or that ``summary`` lacks) and
        ``new_classes`` (classes of ``summary`` absent from ``reference``); all empty
        without ``reference``.

    Examples
    --------
    >>> import pandas as pd
    >>> train = dataset_summary(pd.DataFrame({"image_path": ["a.jpg"], "age": [40.0],
    ...                                       "localization": ["back"]}))
    >>> data = dataset_summary(pd.DataFrame({"image_path": ["b.jpg"], "age": [None],
    ...                                      "localization": ["acral"]}))
    >>> table = shift_report(data, train)
    >>> table.loc["age missing"].tolist()
    ['0%', '100%']
    >>> table.attrs["unseen_categories"], table.attrs["missing_columns"]
    ({'localization': ['acral']}, ['age'])
    """
    if len(names) != 2:
        raise ValueError(f"names must hold two column names; got {names!r}")
    ours, theirs = _rows(summary), _rows(reference)
    index = list(theirs) + [row for row in ours if row not in theirs]
    table = pd.DataFrame(
        {names[0]: [theirs.get(r, "") for r in index], names[1]: [ours.get(r, "") for r in index]},
        index=pd.Index(index, name="quantity"),
    )
    if reference is None:
        table = table[[names[1]]]
    unseen, missing = {}, []
    if reference is not None:
        for name, column in reference["metadata"].items():
            mine = summary["metadata"].get(name)
            if mine is None or (mine["missing"] == 1 and column["missing"] < 1):
                missing.append(name)
            elif column["kind"] == "categorical" and mine["kind"] == "categorical":
                new = [c for c in mine["categories"] if c not in column["categories"]]
                if new:
                    unseen[name] = new
    new_classes = [] if reference is None else [
        c for c in summary.get("classes", {}) if c not in reference.get("classes", {})
    ]  # fmt: skip
    table.attrs.update(unseen_categories=unseen, missing_columns=missing, new_classes=new_classes)
    return table
