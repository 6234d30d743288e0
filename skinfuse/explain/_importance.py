"""Which input mattered over a whole data set: permutation importance of the original columns."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.metrics import get_scorer_names

from .._utils._sklearn import HasMethods, Interval, StrOptions, validate_params


@validate_params(
    {
        "model": [HasMethods(["fit"])],  # as in sklearn.inspection.permutation_importance
        "X": [pd.DataFrame],
        "y": ["array-like"],
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "image_column": [str],
    },
    prefer_skip_nested_validation=True,
)
def modality_importance(
    model,
    X,
    y,
    *,
    scoring=None,
    n_repeats=5,
    random_state=None,
    n_jobs=None,
    image_column="image_path",
):
    """Permutation importance of each original input column (image, age, sex, localization).

    Each column of ``X`` is shuffled across cases in turn (the image column as a
    whole: images move to other cases) and the drop of the model's score is its
    importance, with :func:`sklearn.inspection.permutation_importance`. Shuffled
    images are images already seen, so the image encoder's embedding cache makes
    every repeat free. Evaluate on held-out cases: on training cases the importance
    says what the model memorised.

    Parameters
    ----------
    model : fitted estimator
        Takes a DataFrame like ``X``.
    X : DataFrame
        Held-out cases, with the model's input columns; at least 2 (shuffling the
        columns of a single case changes nothing, so its importances would all be 0).
    y : array-like of shape (n_cases,)
        Their labels.
    scoring : str, callable or None, default=None
        As in scikit-learn (``None``: ``model.score``, accuracy for classifiers).
        ``"neg_log_loss"`` or ``"balanced_accuracy"`` are often more telling.
    n_repeats : int, default=5
        Shuffles per column.
    random_state : int, RandomState or None, default=None
        Seed of the shuffles.
    n_jobs : int or None, default=None
        Parallel columns. Worker processes do not share the embedding cache (each
        encodes the images again): keep ``None`` for models with an image encoder.
    image_column : str, default="image_path"
        The column of images, called ``"image"`` in the result.

    Returns
    -------
    result : sklearn.utils.Bunch
        Sorted by decreasing mean importance: ``feature_names`` (``"image"``,
        ``"age"``...), ``importances_mean``, ``importances_std``, ``importances``
        (``(n_columns, n_repeats)``) and ``frame``, the same as a DataFrame indexed by
        column name.

    Examples
    --------
    >>> result = modality_importance(model, X_test, y_test, random_state=0)  # doctest: +SKIP
    >>> result.frame  # doctest: +SKIP
    >>> plot_importance(result)  # doctest: +SKIP
    """
    from sklearn.inspection import permutation_importance
    from sklearn.utils import Bunch

    if len(X) < 2:
        raise ValueError(
            f"modality_importance needs at least 2 cases, got {len(X)}: shuffling a column "
            "of a single case changes nothing, so every importance would be 0; pass the "
            "held-out cases (X_test)"
        )
    raw = permutation_importance(
        model, X, y, scoring=scoring, n_repeats=n_repeats, random_state=random_state,
        n_jobs=n_jobs,
    )  # fmt: skip
    names = np.array(["image" if c == image_column else str(c) for c in X.columns], dtype=object)
    order = np.argsort(-raw.importances_mean, kind="stable")
    frame = pd.DataFrame(
        {
            "importances_mean": raw.importances_mean[order],
            "importances_std": raw.importances_std[order],
        },
        index=pd.Index(names[order], name="feature"),
    )
    return Bunch(
        feature_names=names[order],
        importances_mean=raw.importances_mean[order],
        importances_std=raw.importances_std[order],
        importances=raw.importances[order],
        frame=frame,
    )
