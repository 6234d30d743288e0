"""What the three image encoders share: input validation, output names, tags, caching, pickling."""

from __future__ import annotations

import copy
import os

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from .._utils._sklearn import _check_feature_names, _check_n_features
from ..images import as_image_list, check_image_files


class BaseImageEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of skinfuse's image encoders (not for direct use).

    Input: a column of images: a 1-D array/list/Series of paths, a one-column
    DataFrame, a 4-D ``(n, H, W, C)`` array, or a 2-D numeric array whose rows are
    read as one-row grayscale images (what scikit-learn's estimator checks send).
    Output: ``float32`` embeddings of shape ``(n, n_features_out)``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- input ---------------------------------------------------------------------------
    def _validate_images(self, X, *, reset: bool) -> list:
        """Check feature names/counts like ``validate_data`` and return the list of images."""
        return validate_images(self, X, reset=reset)

    # -- output --------------------------------------------------------------------------
    @property
    def _n_features_out(self):
        return self.n_features_out_

    def get_feature_names_out(self, input_features=None):
        """Output names ``<classname><i>``, e.g. ``frozencnnencoder0``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored except for validation against ``feature_names_in_``.
        """
        check_is_fitted(self, "n_features_out_")
        return super().get_feature_names_out(input_features)

    # -- devices -------------------------------------------------------------------------
    def _inference_device(self) -> str:
        """``device_`` where it exists in this process, else the CPU."""
        from .._utils._torch import available_device

        return available_device(self.device_)

    def _module_on(self, module, device):
        """``module`` itself on the CPU; elsewhere a copy on ``device``, made once per fit and
        process and never pickled (``fit`` drops it with ``_forget_device_copy``)."""
        if device == "cpu":
            return module
        cached = self.__dict__.get("_device_copy")
        if cached is None:
            cached = self._device_copy = copy.deepcopy(module).to(device).eval()
        return cached

    def _forget_device_copy(self):
        self.__dict__.pop("_device_copy", None)

    # -- pickling: modules travel on CPU so a GPU-fitted encoder loads anywhere ----------
    def __getstate__(self):
        state = self.__dict__.copy()
        for key in list(state):
            if key.startswith("_device_"):  # per-process device copies (not pickled)
                del state[key]
        for key, value in list(state.items()):
            if _is_module(value):
                state[key] = _cpu_copy(value)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        device = state.get("device_")
        if device is not None and device != "cpu":
            from .._utils._torch import resolve_device

            try:
                resolve_device(device)
            except ValueError:  # fitted on a GPU, loaded where there is none
                self.device_ = "cpu"


def _all_paths(arr):
    return all(isinstance(v, (str, os.PathLike)) for v in arr.ravel())


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
        _check_n_features(estimator, frame, reset=reset)
        if frame.shape[1] > 1 and all(dtype.kind in "biuf" for dtype in frame.dtypes):
            # a numeric DataFrame: rows of pixel values (scikit-learn's classifier checks)
            arr = check_array(frame, dtype="numeric", ensure_min_samples=1)
            return list(arr[:, None, :])
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
        if arr.ndim == 2 and not (arr.shape[1] == 1 and not numeric and _all_paths(arr)):
            # rows of pixel values (what scikit-learn's own checks send)
            arr = check_array(arr, dtype="numeric", ensure_min_samples=1)
            _check_n_features(estimator, arr, reset=reset)
            return list(arr[:, None, :])
        if reset:
            estimator.n_features_in_ = 1
        items = as_image_list(arr)
    if len(items) == 0:
        raise ValueError("Found array with 0 sample(s); at least 1 image is required.")
    check_image_files(items, on_error="raise")
    return items


def _is_list_of_arrays(X):
    return isinstance(X, (list, tuple)) and len(X) > 0 and isinstance(X[0], np.ndarray)


def _is_module(value):
    try:
        from torch import nn
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, nn.Module)


def _cpu_copy(module):
    import copy

    params = list(module.parameters()) + list(module.buffers())
    if all(p.device.type == "cpu" for p in params):
        return module
    return copy.deepcopy(module).cpu()
