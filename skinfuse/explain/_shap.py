"""How much did each input column matter for each case: SHAP values of the original columns."""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
import pandas as pd

from .._utils._sklearn import Interval, StrOptions, validate_params

ALGORITHMS = ("kernel", "exact", "permutation")


@validate_params(
    {
        "model": "no_validation",  # must have response_method: checked below
        "X": [pd.DataFrame],
        "background": [pd.DataFrame, Interval(Integral, 1, None, closed="left"), None],
        "algorithm": [StrOptions(set(ALGORITHMS))],
        "max_evals": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "response_method": [StrOptions({"predict_proba", "decision_function"})],
        "image_column": [str],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def explain_metadata(
    model,
    X,
    *,
    background=None,
    algorithm="kernel",
    max_evals="auto",
    response_method="predict_proba",
    image_column="image_path",
    random_state=None,
):
    """SHAP values of each original input column (image, age, sex, localization) per case.

    The model is explained as a function of the columns of ``X`` (the image is one
    feature, not thousands of pixels or embedding dimensions), with shap's
    model-agnostic explainers and an interventional (independent) masker over
    ``background`` rows: a hidden column takes the values of background rows, and a
    hidden image is *another case's image*. Embeddings are therefore only ever
    computed for the images of ``X`` and ``background``, once: the image encoder's
    embedding cache serves every later evaluation.

    With 4 columns there are 16 coalitions per case: ``"kernel"`` (the default)
    enumerates them all, so its values are exact Shapley values; it needs no JIT
    compilation, unlike ``"exact"`` and ``"permutation"`` (numba compiles them on
    first use in a process, which takes several seconds).

    Parameters
    ----------
    model : fitted estimator
        Anything with ``response_method`` taking a DataFrame like ``X`` (a fusion
        pipeline, a ``FusionNetClassifier``...).
    X : DataFrame
        Cases to explain, with the model's input columns.
    background : DataFrame, int or None, default=None
        Rows whose values stand in for hidden columns; the expected value is the mean
        output over them. An int samples that many rows of ``X``; ``None`` samples
        ``min(50, len(X))``. A background of one row is refused when that row is a case
        of ``X`` itself (``X`` of one row with ``background`` None or an int): its SHAP
        values would all be 0, which says nothing; pass training rows instead. Any other
        one-row background gets a ``UserWarning``: every value then compares a case with
        that single reference case, not with typical cases.
    algorithm : {"kernel", "exact", "permutation"}, default="kernel"
        shap explainer: ``KernelExplainer`` (exact here, see above),
        ``explainers.Exact`` or ``explainers.Permutation``.
    max_evals : int or "auto", default="auto"
        Budget of model evaluations per case (``nsamples`` of the kernel explainer).
    response_method : {"predict_proba", "decision_function"}, default="predict_proba"
        The output explained.
    image_column : str, default="image_path"
        The column of images, called ``"image"`` in the result.
    random_state : int, RandomState or None, default=None
        Sampling of the background rows.

    Returns
    -------
    explanation : shap.Explanation
        ``values`` of shape ``(n_cases, n_columns, n_outputs)`` (one output per class for
        ``predict_proba``), ``base_values`` ``(n_cases, n_outputs)``, ``data`` (the
        original values, ``display_data`` with image file names), ``feature_names``
        (``X``'s columns, the image column as ``"image"``) and ``output_names`` (the
        classes). For every case and output, ``base_values + values.sum(axis=1)`` is
        the model's output.

    Examples
    --------
    >>> ex = explain_metadata(model, X_test[:20], background=X_train)  # doctest: +SKIP
    >>> plot_shap_summary(ex)                                           # doctest: +SKIP
    """
    import shap

    if len(X) == 0:
        raise ValueError("X has 0 rows; explain_metadata needs at least one case")
    if not hasattr(model, response_method):
        raise ValueError(f"{type(model).__name__} has no {response_method}")
    background = _background(X, background, random_state)
    columns = list(X.columns)
    n, m = len(X), len(columns)

    # every value a masked row can hold lives in ``pool``; shap sees row numbers into it
    pool = pd.concat([X, background], ignore_index=True)
    respond = getattr(model, response_method)

    def as_2d(out):
        out = np.asarray(out, dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def f(index):
        index = np.asarray(np.rint(index), dtype=np.intp)
        unique, inverse = np.unique(index, axis=0, return_inverse=True)
        frame = pd.DataFrame(
            {c: pool[c].iloc[unique[:, j]].to_numpy() for j, c in enumerate(columns)}
        ).astype(pool.dtypes.to_dict())
        return as_2d(respond(frame))[np.ravel(inverse)]

    reference = as_2d(respond(pool))  # encodes each image of X and background once
    z_x = np.repeat(np.arange(n, dtype=np.float64)[:, None], m, axis=1)
    z_bg = np.repeat(np.arange(n, len(pool), dtype=np.float64)[:, None], m, axis=1)
    if algorithm == "kernel":
        explainer = shap.KernelExplainer(f, z_bg)
        values = np.asarray(
            explainer.shap_values(z_x, nsamples=max_evals, l1_reg=False, silent=True)
        )
        base = np.broadcast_to(np.atleast_1d(explainer.expected_value), (n, reference.shape[1]))
    else:
        masker = shap.maskers.Independent(z_bg, max_samples=len(z_bg))
        if algorithm == "exact":
            explainer = shap.explainers.Exact(f, masker)
        else:
            seed = np.random.RandomState(random_state).randint(2**31 - 1)
            explainer = shap.explainers.Permutation(f, masker, seed=int(seed))
        result = explainer(z_x, max_evals=max_evals if max_evals != "auto" else 10 * 2**m,
                           silent=True)  # fmt: skip
        values, base = np.asarray(result.values), np.asarray(result.base_values)
    values = values.reshape(n, m, -1)
    base = np.asarray(base, dtype=np.float64).reshape(n, -1)

    names = ["image" if c == image_column else str(c) for c in columns]
    data = X.to_numpy(dtype=object)
    display = data.copy()
    if image_column in columns:
        j = columns.index(image_column)
        display[:, j] = [os.path.basename(v) if isinstance(v, str) else v for v in data[:, j]]
    classes = getattr(model, "classes_", None)
    if classes is not None and len(classes) == values.shape[2]:
        outputs = [str(c) for c in classes]
    elif classes is not None and values.shape[2] == 1:
        outputs = [str(classes[-1])]
    else:
        outputs = [f"output_{k}" for k in range(values.shape[2])]
    return shap.Explanation(
        values=values,
        base_values=base,
        data=data,
        display_data=display,
        feature_names=names,
        output_names=outputs,
    )


def _background(X, background, random_state):
    """The background rows: ``background`` itself, or that many rows of ``X`` (None: 50)."""
    from sklearn.utils import check_random_state

    if not isinstance(background, pd.DataFrame):
        size = min(50, len(X)) if background is None else int(background)
        if len(X) == 1:
            raise ValueError(
                "explain_metadata of a single case needs a background: by default the "
                "background rows are drawn from X, here the case itself, so every SHAP "
                "value would be 0; pass background=<training rows> (a DataFrame, e.g. 50 "
                "rows of X_train)"
            )
        if size == 1:
            _warn_one_row()
        if size >= len(X):
            return X.reset_index(drop=True)
        rows = check_random_state(random_state).choice(len(X), size, replace=False)
        return X.iloc[np.sort(rows)].reset_index(drop=True)
    missing = [c for c in X.columns if c not in background.columns]
    if missing:
        raise ValueError(f"background lacks the columns {missing} of X")
    if len(background) == 0:
        raise ValueError("background has 0 rows")
    if len(background) == 1:
        _warn_one_row()
    return background[list(X.columns)].reset_index(drop=True)


def _warn_one_row():
    warnings.warn(
        "explain_metadata with a background of 1 row: every SHAP value compares a case "
        "with that single row (a case equal to it gets all zeros), not with typical "
        "cases; pass more background rows (e.g. 50 rows of X_train)",
        UserWarning,
        stacklevel=5,  # _background, explain_metadata, validate_params' wrapper, caller
    )
