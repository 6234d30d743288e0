"""Temperature scaling on lesion-grouped inner folds (skinfuse.calibration, the recipes)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit
from sklearn.naive_bayes import GaussianNB

from skinfuse.calibration import TemperatureCalibratedClassifier, inner_folds
from skinfuse.metrics import expected_calibration_error


def _blobs(n=600, n_classes=4, seed=0, spread=1.0):
    """Overlapping Gaussian classes, three images per lesion; every feature five times (a
    naive Bayes model counts each copy as new evidence: over-confident)."""
    rng = np.random.RandomState(seed)
    y = rng.choice([f"c{k}" for k in range(n_classes)], n)
    centres = rng.normal(scale=2.0, size=(n_classes, 5))
    X = centres[np.searchsorted(np.unique(y), y)] + spread * rng.normal(size=(n, 5))
    return np.hstack([X] * 5), y, np.arange(n) // 3


def _overconfident():
    # predict_proba only (no decision_function): CalibratedClassifierCV scales the same logits
    return GaussianNB()


def test_predictions_are_exactly_those_of_the_uncalibrated_model():
    X, y, groups = _blobs()
    model = TemperatureCalibratedClassifier(_overconfident()).fit(X, y, groups=groups)
    bare = model.estimator_.predict_proba(X)
    calibrated = model.predict_proba(X)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), bare.argmax(axis=1))
    np.testing.assert_array_equal(model.predict(X), model.estimator_.predict(X))
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    assert not np.allclose(calibrated, bare)  # the temperature did change the probabilities


def test_temperature_lowers_the_ece_on_unseen_lesions():
    X, y, groups = _blobs(1200, spread=1.6, seed=1)
    train, test = np.arange(900), np.arange(900, 1200)
    model = TemperatureCalibratedClassifier(_overconfident()).fit(
        X[train], y[train], groups=groups[train]
    )
    classes = model.classes_
    before = expected_calibration_error(y[test], model.estimator_.predict_proba(X[test]),
                                        classes=classes)  # fmt: skip
    after = expected_calibration_error(y[test], model.predict_proba(X[test]), classes=classes)
    assert model.temperature_ > 1  # over-confident network: T above 1
    assert after < before / 2, (before, after)


def test_same_numbers_as_calibrated_classifier_cv_on_the_same_grouped_folds():
    X, y, groups = _blobs(300)
    model = TemperatureCalibratedClassifier(_overconfident(), random_state=5).fit(
        X, y, groups=groups
    )
    test_fold = np.empty(len(y), dtype=int)
    for k, (_, test) in enumerate(inner_folds(np.unique(y, return_inverse=True)[1], groups, 3, 5)):
        test_fold[test] = k
    reference = CalibratedClassifierCV(
        _overconfident(), method="temperature", ensemble=False, cv=PredefinedSplit(test_fold)
    ).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-7)


def test_inner_folds_hold_whole_lesions_and_groups_reach_the_estimator():
    X, y, groups = _blobs(240)
    seen = []

    class Recording(LogisticRegression):
        def fit(self, X, y, groups=None):
            seen.append(None if groups is None else set(groups.tolist()))
            return super().fit(X, y)

    TemperatureCalibratedClassifier(Recording(), n_splits=3).fit(X, y, groups=groups)
    assert len(seen) == 4 and seen[-1] == set(groups.tolist())  # 3 folds, then all
    for trained in seen[:3]:
        held = set(groups.tolist()) - trained
        assert held and not held & trained
    folds = inner_folds(np.unique(y, return_inverse=True)[1], groups, 3, 0)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])


def test_out_of_fold_probabilities_are_calibrated_and_kept():
    X, y, groups = _blobs(300)
    model = TemperatureCalibratedClassifier(_overconfident()).fit(X, y, groups=groups)
    assert model.oof_proba_.shape == (300, 4) and model.oof_proba_.dtype == np.float32
    np.testing.assert_allclose(model.oof_proba_.sum(axis=1), 1.0, atol=1e-5)


def test_without_groups_it_warns_and_splits_images():
    X, y, _ = _blobs(120)
    with pytest.warns(UserWarning, match="without groups"):
        TemperatureCalibratedClassifier(LogisticRegression()).fit(X, y)


def test_bad_input_is_refused_with_the_fix():
    X, y, groups = _blobs(60)
    with pytest.raises(ValueError, match="at least 3 distinct groups"):
        TemperatureCalibratedClassifier(LogisticRegression()).fit(X, y, groups=np.arange(60) % 2)
    with pytest.raises(ValueError, match="one lesion label per image"):
        TemperatureCalibratedClassifier(LogisticRegression()).fit(X, y, groups=groups[:10])
    with pytest.raises(ValueError, match="one class"):
        TemperatureCalibratedClassifier(LogisticRegression()).fit(X, ["a"] * 60, groups=groups)


def test_clone_keeps_the_parameters_and_random_state_repeats():
    X, y, groups = _blobs(150)
    model = TemperatureCalibratedClassifier(LogisticRegression(), n_splits=4, random_state=2)
    assert clone(model).get_params()["n_splits"] == 4
    a = clone(model).fit(X, y, groups=groups).temperature_
    b = clone(model).fit(X, y, groups=groups).temperature_
    assert a == b


def test_every_recipe_ends_in_temperature_scaling_unless_told_not_to():
    from skinfuse.recipes import RECIPES, make_recipe

    for name in RECIPES:
        model = make_recipe(name, random_state=4)
        assert isinstance(model, TemperatureCalibratedClassifier) and model.random_state == 4
        assert not isinstance(make_recipe(name, calibrate=False), TemperatureCalibratedClassifier)


def test_too_few_images_for_the_inner_folds_says_how_to_go_on():
    from skinfuse.calibration import inner_folds

    y = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="--no-calibration"):
        inner_folds(y, np.arange(6), 3, 0)
