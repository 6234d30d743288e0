"""scikit-learn's own estimator checks over every torch-backed estimator.

Small constructor settings live in one table (imbalanced-learn's INIT_PARAMS idiom).

The checks send 2-D numeric arrays (feature matrices). The image encoders, and the
fusion network without metadata, take a column of images and refuse a feature matrix
with a clear error, so those checks fail on them by design: they are listed in
EXPECTED_FAILED_CHECKS with that reason. To still run every check on the real code,
the whole suite also runs on test-only subclasses (``rows_as_images``) that read each
row of a numeric array as a one-row grayscale image and leave everything else alone.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_array

from skinfuse._utils._sklearn import _check_feature_names, _check_n_features
from skinfuse.encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
from skinfuse.fusion import FusionNetClassifier

INIT_PARAMS = {
    "FrozenCNNEncoder": dict(backbone="tiny_cnn", weights=None, image_size=8, batch_size=32),
    "FineTunedCNNEncoder": dict(
        backbone="tiny_cnn", weights=None, image_size=8, max_epochs=2, batch_size=32,
        cross_fit=None, validation_fraction=0.0, random_state=0, num_workers=0,
    ),
    "ConvAutoencoderEncoder": dict(
        latent_dim=4, image_size=8, channels=(4,), max_epochs=1, batch_size=16, num_workers=0,
        random_state=0,
    ),
    "FusionNetClassifier": dict(
        backbone="tiny_cnn", weights=None, metadata=None, image_size=8, max_epochs=2,
        batch_size=32, validation_fraction=0.0, num_workers=0, random_state=0,
    ),
}  # fmt: skip

_NOT_IMAGES = (
    "sends a 2-D numeric array (a feature matrix); the estimator takes a column of images "
    "and refuses it with a clear ValueError. Run for real on the rows_as_images subclass."
)
_CHECKS_WITH_FEATURE_MATRICES = [
    "check_complex_data", "check_dict_unchanged", "check_dont_overwrite_parameters",
    "check_dtype_object", "check_estimators_dtypes", "check_estimators_empty_data_messages",
    "check_estimators_fit_returns_self", "check_estimators_nan_inf",
    "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_1sample",
    "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent",
    "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
]  # fmt: skip
_TRANSFORMER_CHECKS = [
    "check_transformer_data_not_an_array", "check_transformer_general",
    "check_transformer_preserve_dtypes",
]  # fmt: skip
# classifier checks; the y checks fail because X is refused before y is looked at
_CLASSIFIER_CHECKS = [
    "check_class_weight_classifiers", "check_classifier_data_not_an_array",
    "check_classifiers_classes", "check_classifiers_one_label",
    "check_classifiers_regression_target", "check_classifiers_train", "check_requires_y_none",
    "check_supervised_y_2d",
]  # fmt: skip


def _expected(*groups):
    return {check: _NOT_IMAGES for group in groups for check in group}


EXPECTED_FAILED_CHECKS = {
    "FrozenCNNEncoder": _expected(_CHECKS_WITH_FEATURE_MATRICES, _TRANSFORMER_CHECKS),
    "ConvAutoencoderEncoder": _expected(_CHECKS_WITH_FEATURE_MATRICES, _TRANSFORMER_CHECKS),
    "FineTunedCNNEncoder": _expected(
        _CHECKS_WITH_FEATURE_MATRICES, _TRANSFORMER_CHECKS, _CLASSIFIER_CHECKS
    ),
    "FusionNetClassifier": _expected(_CHECKS_WITH_FEATURE_MATRICES, _CLASSIFIER_CHECKS),
}

ESTIMATORS = (FrozenCNNEncoder, FineTunedCNNEncoder, ConvAutoencoderEncoder, FusionNetClassifier)


def _instances(classes, **extra):
    return [cls(**{**INIT_PARAMS[cls.__name__.removesuffix("Rows")], **extra}) for cls in classes]


# -- the estimators as users get them --------------------------------------------------------
@parametrize_with_checks(
    _instances(ESTIMATORS) + _instances([ConvAutoencoderEncoder], features="multi"),
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__],
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_every_expected_failure_names_a_real_check():
    """A renamed or removed check must not hide in the table."""
    from sklearn.utils.estimator_checks import check_estimator

    for cls in ESTIMATORS:
        estimator = cls(**INIT_PARAMS[cls.__name__])
        results = check_estimator(
            estimator,
            expected_failed_checks=EXPECTED_FAILED_CHECKS[cls.__name__],
            on_fail=None,
        )
        by_check = {r["check_name"]: r["status"] for r in results}
        for check in EXPECTED_FAILED_CHECKS[cls.__name__]:
            assert by_check.get(check) == "xfail", (cls.__name__, check, by_check.get(check))
        assert "failed" not in by_check.values(), {
            k: v for k, v in by_check.items() if v == "failed"
        }


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_a_feature_matrix_is_refused(cls):
    X = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=r"feature matrix, not images.*image column"):
        cls(**INIT_PARAMS[cls.__name__]).fit(X, np.arange(10) % 2)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_init_stores_parameters_unchanged(cls):
    params = cls(**INIT_PARAMS[cls.__name__]).get_params()
    for name, value in INIT_PARAMS[cls.__name__].items():
        assert params[name] == value


# -- every check for real: rows of a feature matrix read as one-row images --------------------
def _rows_as_images(estimator, X, reset):
    """A 2-D X that is not a column of paths (what the checks send) as one-row grayscale
    images, as skinfuse 0.1 read it; None for anything else."""
    if sp.issparse(X):
        return None
    if hasattr(X, "iloc"):
        if X.ndim != 2 or not all(d.kind in "biuf" for d in X.dtypes):
            return None
    elif isinstance(X, (list, tuple)) and len(X) and isinstance(X[0], np.ndarray):
        return None  # a list of images
    else:
        arr = np.asarray(X, dtype=object) if isinstance(X, (list, tuple)) else np.asarray(X)
        if arr.ndim != 2 or arr.dtype.kind in "US":
            return None
        if arr.shape[1] == 1 and all(isinstance(v, str) for v in arr.ravel()):
            return None  # a column of paths
    _check_feature_names(estimator, X, reset=reset)
    arr = check_array(X, dtype="numeric", ensure_min_samples=1)
    _check_n_features(estimator, arr, reset=reset)
    return list(arr[:, None, :])


class _RowsAsImagesEncoder:
    def _validate_images(self, X, *, reset):
        rows = _rows_as_images(self, X, reset)
        return rows if rows is not None else super()._validate_images(X, reset=reset)


class FrozenCNNEncoderRows(_RowsAsImagesEncoder, FrozenCNNEncoder):
    pass


class FineTunedCNNEncoderRows(_RowsAsImagesEncoder, FineTunedCNNEncoder):
    pass


class ConvAutoencoderEncoderRows(_RowsAsImagesEncoder, ConvAutoencoderEncoder):
    pass


class FusionNetClassifierRows(FusionNetClassifier):
    def _columns(self, X, *, reset):
        rows = _rows_as_images(self, X, reset)
        return (rows, None) if rows is not None else super()._columns(X, reset=reset)


ROWS_AS_IMAGES = (
    FrozenCNNEncoderRows, FineTunedCNNEncoderRows, ConvAutoencoderEncoderRows,
    FusionNetClassifierRows,
)  # fmt: skip


@parametrize_with_checks(
    _instances(ROWS_AS_IMAGES) + _instances([ConvAutoencoderEncoderRows], features="multi")
)
def test_sklearn_compatible_rows_as_images(estimator, check):
    check(estimator)
