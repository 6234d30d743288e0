"""Validation helpers shared by the estimators (beyond scikit-learn's own)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d


def scalar(value):
    """A NumPy scalar as the Python value (for messages: 'a', not np.str_('a'))."""
    return value.item() if isinstance(value, np.generic) else value


def check_labels(estimator, X_rows, y):
    """Check classification targets for a network trained on them.

    Returns ``(classes, y_idx)``: the sorted labels and ``y`` as int64 class indices.
    Raises scikit-learn's messages for ``y=None`` and a single class.
    """
    name = type(estimator).__name__
    if y is None:
        raise ValueError(
            f"{name} requires y to be passed, but the target y is None; it is trained on "
            "the labels: call fit(X, y)."
        )
    y = column_or_1d(y, warn=True)
    check_consistent_length(X_rows, y)
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"{name} needs at least 2 classes to learn, but y has 1 class "
            f"({scalar(encoder.classes_[0])!r}); pass labels of 2 or more classes."
        )
    return encoder.classes_, encoder.transform(y).astype(np.int64)


def store_params(estimator, arguments: dict) -> None:
    """The whole body of an estimator's ``__init__``: ``store_params(self, locals())``.

    Stores each parameter of the signature, unchanged, under its own name (scikit-learn's
    contract: no validation, no conversion), so that estimators with long signatures do not
    repeat thirty lines of ``self.x = x``.
    """
    for name in type(estimator)._get_param_names():
        setattr(estimator, name, arguments[name])


def user_stacklevel() -> int:
    """The ``stacklevel`` for a warning raised by the caller of this function that points at
    the first frame outside skinfuse and the scikit-learn stack (the user's line)."""
    import sys

    internal = ("skinfuse", "sklearn", "sklearn_compat", "imblearn", "joblib")
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in internal:
        frame, level = frame.f_back, level + 1
    return level
