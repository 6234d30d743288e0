"""The first step of each branch of the metadata preprocessor: read, check and clean the values.

:func:`~skinfuse.metadata.make_metadata_preprocessor` puts :class:`CategoryNormalizer` in
front of the one-hot encoder and :class:`NumberChecker` in front of the numeric imputer.
They turn whatever pandas holds (NumPy dtypes, nullable ``Int64``/``Float64``/``string``/
``boolean`` dtypes, ``None``/``NaN``/``pd.NA``) into plain NumPy arrays with ``NaN`` for
missing values, and refuse or warn about values that would otherwise be misused without a
word: numeric codes for a category, ``"BACK"`` next to ``"back"``, a body site never seen
in ``fit``, ages in months. For well-formed input they change no value.
"""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._utils._sklearn import _check_feature_names, _check_n_features, _fit_context
from ._utils._validation import user_stacklevel

#: Numbers of this magnitude or more are refused: no clinical value is that large, and
#: standardising them overflows float64 (their square is infinite beyond about 1e154).
MAX_MAGNITUDE = 1e12

_SHOWN = 5  # values quoted in a message


def _columns(estimator, X, *, reset):
    """The columns of ``X`` as 1-D object arrays with ``NaN`` for every missing value,
    and their names (``x0``, ``x1``... without feature names)."""
    _check_feature_names(estimator, X, reset=reset)
    if isinstance(X, pd.DataFrame):
        columns = [X.iloc[:, j] for j in range(X.shape[1])]
    else:
        X = np.asarray(X, dtype=object)
        if X.ndim != 2:
            raise ValueError(
                f"{type(estimator).__name__} expects a 2-D table of metadata; "
                f"got an array of shape {X.shape}"
            )
        columns = [pd.Series(X[:, j], dtype=object) for j in range(X.shape[1])]
    _check_n_features(estimator, X, reset=reset)
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
    elif hasattr(estimator, "feature_names_in_"):
        names = [str(c) for c in estimator.feature_names_in_]
    else:
        names = [f"x{j}" for j in range(X.shape[1])]
    return names, columns


def _quote(values):
    shown = ", ".join(repr(v) for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


def _missing(values):
    """True where a value of an object array is missing (None, NaN, pd.NA, NaT)."""
    return np.asarray(pd.isna(values), dtype=bool)


class CategoryNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Clean categorical metadata (sex, localization) before one-hot encoding.

    Each value is stripped of surrounding spaces and lower-cased, so ``"BACK"``,
    ``" back "`` and ``"back"`` are one category. Missing values (``None``, ``NaN``,
    ``pd.NA``, and strings that are empty once stripped) become ``NaN``; any pandas
    dtype is accepted (``object``, ``str``, ``string``, ``category``). Numbers are
    refused: a column of codes (sex as 0/1) must be mapped to the category names first,
    or the model learns the codes as if they were names and a new coding is silently
    misread. In ``transform``, values never seen in ``fit`` are reported by a
    ``UserWarning`` naming the column, the values and the number of rows (the one-hot
    encoder that follows encodes them as an unknown category: all zeros).

    Attributes
    ----------
    categories_ : list of ndarray
        The sorted normalised categories seen in ``fit``, per column (missing excluded).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"localization": [" Back", "back", None, "FACE"]})
    >>> CategoryNormalizer().fit_transform(X).ravel().tolist()
    ['back', 'back', nan, 'face']
    """

    _parameter_constraints: dict = {}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.input_tags.allow_nan = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the normalised categories of each column.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)
            Category names (strings) or missing values.
        y : None
            Ignored.

        Returns
        -------
        self : CategoryNormalizer
        """
        self._fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit, then return the normalised values (no unseen values to warn about).

        Returns
        -------
        values : ndarray of object, shape (n_samples, n_columns)
        """
        self._validate_params()
        return self._fit_transform(X)

    def transform(self, X):
        """Normalise ``X`` and warn about values never seen in ``fit``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)

        Returns
        -------
        values : ndarray of object, shape (n_samples, n_columns)
            Normalised strings, ``NaN`` where a value is missing.
        """
        check_is_fitted(self, "categories_")
        names, columns = _columns(self, X, reset=False)
        out = self._normalise(names, columns)
        for j, name in enumerate(names):
            values = out[:, j]
            present = ~_missing(values)
            unseen = present & ~pd.Series(values).isin(self.categories_[j]).to_numpy()
            if unseen.any():
                new = sorted(set(values[unseen]))
                warnings.warn(
                    f"column {name!r} has {len(new)} value(s) not seen in fit: {_quote(new)} "
                    f"(in {int(unseen.sum())} of {len(values)} rows); they are encoded as an "
                    f"unknown category (all zeros in the one-hot columns of {name!r}, or its "
                    "infrequent column when min_frequency groups rare categories). Known: "
                    f"{_quote(list(self.categories_[j])) or 'none'}",
                    UserWarning,
                    stacklevel=user_stacklevel(),
                )
        return out

    def _fit_transform(self, X):
        names, columns = _columns(self, X, reset=True)
        out = self._normalise(names, columns)
        self.categories_ = [
            np.array(sorted(set(out[~_missing(out[:, j]), j])), dtype=object)
            for j in range(out.shape[1])
        ]
        return out

    def _normalise(self, names, columns):
        out = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=object)
        for j, (name, column) in enumerate(zip(names, columns)):
            values = column.to_numpy(dtype=object, na_value=np.nan)
            missing = _missing(values)
            wrong = [v for v in values[~missing] if not isinstance(v, str)]
            numbers = [v for v in wrong if isinstance(v, (Real, np.bool_))]
            if numbers:
                codes = sorted(set(numbers), key=repr)
                raise ValueError(
                    f"column {name!r} is categorical but holds numbers ({_quote(codes)}) in "
                    f"{len(numbers)} rows: map the codes to the category names first, e.g. "
                    f"X[{name!r}] = X[{name!r}].map({{{codes[0]!r}: '<category name>', ...}}); "
                    "numbers would be taken for names and a different coding misread without "
                    "a word"
                )
            if wrong:
                kinds = sorted({type(v).__name__ for v in wrong})
                raise TypeError(
                    f"column {name!r} is categorical: its values must be strings or missing, "
                    f"got values of type {', '.join(kinds)} (e.g. {wrong[0]!r})"
                )
            cleaned = np.array(
                [np.nan if m else v.strip().lower() for v, m in zip(values, missing)],
                dtype=object,
            )
            empty = cleaned == ""
            cleaned[empty] = np.nan  # "" and "  " are missing values, not a category
            out[:, j] = cleaned
        return out


class NumberChecker(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Check numeric metadata (age) and hand it on as float64 with ``NaN`` for missing.

    Any numeric pandas dtype is accepted, nullable ones (``Int64``, ``Float64``, with
    ``pd.NA``) included, and ``object`` columns of numbers and missing values. Text,
    booleans, infinite values and magnitudes of ``1e12`` or more are refused with an
    error naming the column. Values outside ``valid_ranges[column]`` are kept but
    reported by a ``UserWarning`` (in ``fit`` and in ``transform``): an age of 480 or
    -3 is more likely months or a data-entry error than a patient.

    Parameters
    ----------
    valid_ranges : dict of str to (float, float) or None, default=None
        Plausible ``(low, high)`` of columns by name (inclusive); ``None``: no range.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"age": pd.array([40, None, 75], dtype="Int64")})
    >>> NumberChecker(valid_ranges={"age": (0, 120)}).fit_transform(X).ravel().tolist()
    [40.0, nan, 75.0]
    """

    _parameter_constraints: dict = {"valid_ranges": [dict, None]}

    def __init__(self, valid_ranges=None):
        self.valid_ranges = valid_ranges

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check ``X`` (warning about values outside their valid range).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)
            Numbers or missing values.
        y : None
            Ignored.

        Returns
        -------
        self : NumberChecker
        """
        self._check(X, reset=True)
        return self

    def fit_transform(self, X, y=None):
        """Fit, then return ``X`` as float64 (warning once, not twice).

        Returns
        -------
        values : ndarray of float64, shape (n_samples, n_columns)
        """
        self._validate_params()
        return self._check(X, reset=True)

    def transform(self, X):
        """Return ``X`` as float64 with ``NaN`` for missing values, after the checks.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)

        Returns
        -------
        values : ndarray of float64, shape (n_samples, n_columns)
        """
        check_is_fitted(self, "n_features_in_")
        return self._check(X, reset=False)

    def _check(self, X, *, reset):
        names, columns = _columns(self, X, reset=reset)
        out = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=np.float64)
        for j, (name, column) in enumerate(zip(names, columns)):
            out[:, j] = _as_float(name, column)
            low, high = (self.valid_ranges or {}).get(name, (-np.inf, np.inf))
            values = out[:, j]
            outside = (values < low) | (values > high)
            if outside.any():
                warnings.warn(
                    f"column {name!r}: {int(outside.sum())} of {len(values)} values lie outside "
                    f"[{low:g}, {high:g}] (seen: {np.nanmin(values):g} to {np.nanmax(values):g}); "
                    f"{name!r} is expected in years: values in months, negative values or "
                    "placeholder codes (999) look wrong. They are used as they are; fix or "
                    "set them to NaN (then they are imputed)",
                    UserWarning,
                    stacklevel=user_stacklevel(),
                )
        return out


def _as_float(name, column):
    """One column as float64 with NaN for missing values, or an error naming the column."""
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise TypeError(f"column {name!r} must hold numbers; got booleans (dtype {dtype})")
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raw = column.to_numpy(dtype=object, na_value=np.nan)
        missing = _missing(raw)
        text = [v for v in raw[~missing] if isinstance(v, str)]
        if text:
            raise ValueError(
                f"column {name!r} must hold numbers; got text ({_quote(sorted(set(text)))}) in "
                f"{len(text)} rows: convert it first, e.g. with pd.to_numeric(X[{name!r}])"
            )
        wrong = [
            v for v in raw[~missing] if isinstance(v, (bool, np.bool_)) or not isinstance(v, Real)
        ]
        if wrong:
            kinds = sorted({type(v).__name__ for v in wrong})
            raise TypeError(
                f"column {name!r} must hold numbers; got values of type {', '.join(kinds)} "
                f"(e.g. {wrong[0]!r})"
            )
        values = np.full(len(raw), np.nan)
        for i in np.flatnonzero(~missing):
            try:
                values[i] = float(raw[i])
            except OverflowError:  # an int too large for a float
                values[i] = np.inf
    present = values[~np.isnan(values)]
    if not np.isfinite(present).all():
        raise ValueError(
            f"column {name!r} holds infinite values in {int(np.isinf(values).sum())} rows; "
            "use NaN for a missing value"
        )
    huge = np.abs(present) >= MAX_MAGNITUDE
    if huge.any():
        raise ValueError(
            f"column {name!r} holds {int(huge.sum())} values of magnitude {MAX_MAGNITUDE:g} or "
            f"more (e.g. {present[huge][0]:g}), which no clinical value has: an identifier or "
            "a unit error?"
        )
    return values
