"""scikit-learn's private API, imported in one place (through sklearn-compat)."""

from sklearn.calibration import _TemperatureScaling  # scikit-learn >= 1.8
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn_compat.base import _fit_context
from sklearn_compat.utils.validation import _check_feature_names, _check_n_features, validate_data

__all__ = [
    "HasMethods",
    "Interval",
    "StrOptions",
    "_TemperatureScaling",
    "_check_feature_names",
    "_check_n_features",
    "_fit_context",
    "_safe_indexing",
    "validate_data",
    "validate_params",
]
