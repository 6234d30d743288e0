"""An estimator's column of images, validated like scikit-learn's ``validate_data``.

Shared by the image encoders and by ``FusionNetClassifier`` without metadata.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ..images import as_image_list, check_image_files
from ._sklearn import _check_feature_names, _check_n_features


def _all_paths(arr):
    return all(isinstance(v, (str, os.PathLike)) for v in arr.ravel())


def _not_images(estimator, what, shape):
    return ValueError(
        f"{type(estimator).__name__} takes a column of images (file paths, a one-column "
        f"DataFrame of paths, or an (n, H, W, C) array of images); got {what} of shape "
        f"{shape}, which looks like a feature matrix, not images. Pass the image column "
        "(e.g. X[['image_path']]) or the images themselves."
    )


def validate_images(estimator, X, *, reset: bool) -> list:
    """Check ``X``'s feature names/counts like ``validate_data``; return the list of images.

    ``estimator`` (an image encoder, or ``FusionNetClassifier`` without
    metadata) gets its ``n_features_in_`` / ``feature_names_in_`` set or checked.
    """
    if sp.issparse(X):
        raise TypeError(
            f"{type(estimator).__name__} does not support sparse input: pass a column of "
            "image paths or an array of images"
        )
    _check_feature_names(estimator, X, reset=reset)
    if hasattr(X, "iloc"):  # pandas Series / DataFrame of paths
        frame = X.to_frame() if X.ndim == 1 else X
        if all(dtype.kind in "biuf" for dtype in frame.dtypes):
            raise _not_images(estimator, "a numeric DataFrame", frame.shape)
        _check_n_features(estimator, frame, reset=reset)
        items = as_image_list(frame)
    elif _is_list_of_arrays(X):
        if reset:
            estimator.n_features_in_ = 1
        items = as_image_list(X)
    else:
        arr = np.asarray(X, dtype=object) if isinstance(X, (list, tuple)) else np.asarray(X)
        numeric = arr.dtype != object and arr.dtype.kind not in "US"
        if arr.ndim == 1 and numeric:
            raise ValueError(
                "Expected a column of images, got a 1-D numeric array. Reshape your data "
                "either using array.reshape(-1, 1) if it has a single feature or "
                "array.reshape(1, -1) if it contains a single sample; for images pass "
                "file paths or an (n, H, W, C) array."
            )
        if arr.ndim == 2 and numeric:
            raise _not_images(estimator, "a 2-D numeric array", arr.shape)
        if arr.ndim == 2 and not (arr.shape[1] == 1 and _all_paths(arr)):
            raise ValueError(
                f"{type(estimator).__name__} takes one column of images; got an array of "
                f"shape {arr.shape}. Pass the image column alone."
            )
        if reset:
            estimator.n_features_in_ = 1
        items = as_image_list(arr)
    if len(items) == 0:
        raise ValueError("Found array with 0 sample(s); at least 1 image is required.")
    check_image_files(items, on_error="raise")
    return items


def _is_list_of_arrays(X):
    return isinstance(X, (list, tuple)) and len(X) > 0 and isinstance(X[0], np.ndarray)
