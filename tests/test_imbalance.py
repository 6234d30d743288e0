import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from skinfuse.imbalance import AdaptiveSMOTE, PriorCorrectedClassifier, fit_triage_classifier


def test_adaptive_smote_values():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = np.array([0] * 15 + [1] * 4 + [2])
    with pytest.warns(UserWarning, match="random over-sampling"):
        sampler = AdaptiveSMOTE(random_state=0)
        X_res, y_res = sampler.fit_resample(X, y)
    assert np.bincount(y_res).tolist() == [15, 15, 15] and sampler.k_neighbors_ == 0
    y2 = np.array([0] * 15 + [1] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X_res, y_res = AdaptiveSMOTE(k_neighbors=4, random_state=0).fit_resample(X, y2)
    assert np.bincount(y_res).tolist() == [15, 15]
    new = X_res[20:]  # synthetic samples lie between class-1 samples
    assert (new.min(axis=0) >= X[15:].min(axis=0) - 1e-9).all()


@parametrize_with_checks([PriorCorrectedClassifier(LogisticRegression(), power=0.5)])
def test_prior_corrected_classifier_follows_the_sklearn_contract(estimator, check):
    check(estimator)


def _imbalanced(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    X = rng.normal(size=(n, 2)) + np.eye(3)[y][:, :2] * 1.2
    return X, y


def test_prior_correction_trades_accuracy_for_balanced_accuracy():
    X, y = _imbalanced()
    X_test, y_test = _imbalanced(seed=1)
    plain = LogisticRegression().fit(X, y)
    bal = {}
    for power in (0.0, 0.5, 1.0):
        model = PriorCorrectedClassifier(LogisticRegression(), power=power).fit(X, y)
        proba = model.predict_proba(X_test)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(model.predict(X_test), proba.argmax(axis=1))
        bal[power] = balanced_accuracy_score(y_test, model.predict(X_test))
        if power == 0.0:  # no correction: the wrapped model itself
            np.testing.assert_allclose(proba, plain.predict_proba(X_test))
    np.testing.assert_allclose(model.class_prior_, np.bincount(y) / len(y))
    assert bal[0.0] < bal[0.5] < bal[1.0]
    # power=1 divides by the prior exactly
    expected = plain.predict_proba(X_test) / model.class_prior_
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True))


def test_parameters_are_validated_in_fit():
    X, y = _imbalanced()
    with pytest.raises(ValueError, match="'power' parameter of PriorCorrectedClassifier"):
        PriorCorrectedClassifier(LogisticRegression(), power=2).fit(X, y)
    with pytest.raises(ValueError, match="'k_neighbors' parameter of AdaptiveSMOTE"):
        AdaptiveSMOTE(k_neighbors=0).fit_resample(X, y)


def _lesion_images(n_lesions=150, seed=0):
    """Two to four noisy "images" (2 features) per lesion; about 20 % of lesions melanomas."""
    rng = np.random.default_rng(seed)
    lesion = np.repeat(np.arange(n_lesions), rng.integers(2, 5, n_lesions))
    y = np.where(rng.random(n_lesions) < 0.2, "mel", "nv")[lesion]
    X = rng.normal(size=(len(y), 2)) + 1.5 * (y == "mel")[:, None]
    return X, y, lesion


def test_triage_classifier_reaches_its_sensitivity_out_of_fold():
    X, y, groups = _lesion_images()
    triage, point = fit_triage_classifier(
        LogisticRegression(), X, y, groups=groups, sensitivity=0.9, n_splits=3
    )
    assert point["sensitivity"] >= 0.9 and 0 < point["specificity"] < 1
    assert triage.threshold == point["threshold"]
    called = triage.predict(X)
    assert called.dtype == bool
    scores = triage.estimator_.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(called, scores >= point["threshold"])
    with pytest.raises(ValueError, match="'sensitivity' parameter of fit_triage_classifier"):
        fit_triage_classifier(LogisticRegression(), X, y, groups=groups, sensitivity=1.5)
