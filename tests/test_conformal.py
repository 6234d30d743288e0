"""Prediction sets (skinfuse.conformal): coverage over many random splits, per class."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.naive_bayes import GaussianNB

from skinfuse.calibration import TemperatureCalibratedClassifier
from skinfuse.conformal import PredictionSets, conformal_thresholds

pytest.importorskip("mapie")


def _lesions(n, seed, weights=(0.55, 0.2, 0.15, 0.1)):
    """Four overlapping classes (imbalanced, like HAM10000), two images per lesion."""
    rng = np.random.RandomState(seed)
    n_lesions = n // 2
    y_lesion = rng.choice(len(weights), n_lesions, p=weights)
    centres = np.array([[0, 0], [1.5, 0], [0, 1.5], [1.5, 1.5]])
    X_lesion = centres[y_lesion] + rng.normal(size=(n_lesions, 2))
    groups = np.repeat(np.arange(n_lesions), 2)
    X = X_lesion[groups] + 0.3 * rng.normal(size=(n, 2))
    return X, np.array(list("abcd"))[y_lesion[groups]], groups


def _covered(sets, classes, y):
    return sets[np.arange(len(y)), np.searchsorted(classes, y)]


@pytest.mark.parametrize("class_conditional", [True, False])
def test_coverage_holds_over_many_random_lesion_splits(class_conditional):
    X, y, groups = _lesions(6000, seed=0)
    model = LogisticRegression().fit(X[:2000], y[:2000])  # lesions 0..999
    rest = np.arange(2000, 6000)
    split = GroupShuffleSplit(n_splits=100, train_size=0.5, random_state=0)
    overall, per_class, sizes = [], {c: [] for c in "abcd"}, []
    for cal, test in split.split(rest, groups=groups[rest]):
        cal, test = rest[cal], rest[test]
        sets = PredictionSets(model, coverage=0.9, class_conditional=class_conditional)
        covered = _covered(sets.fit(X[cal], y[cal]).predict_sets(X[test]), sets.classes_, y[test])
        overall.append(covered.mean())
        sizes.append(sets.predict_sets(X[test]).sum(axis=1).mean())
        for c in per_class:
            per_class[c].append(covered[y[test] == c].mean())
    assert 0.895 <= np.mean(overall) <= 0.92, np.mean(overall)
    means = {c: np.mean(v) for c, v in per_class.items()}
    if class_conditional:  # every class on its own, the rarest (d: 10 %) included
        assert all(0.89 <= m <= 0.94 for m in means.values()), means
    else:  # marginal: the common class over-covered, the rare ones under
        assert means["a"] > 0.9 and min(means.values()) < 0.88, means
    assert 1 < np.mean(sizes) < 4


def test_out_of_fold_conformalization_covers_new_lesions():
    X, y, groups = _lesions(3000, seed=1)
    train, test = np.arange(1500), np.arange(1500, 3000)
    sets = PredictionSets(TemperatureCalibratedClassifier(GaussianNB()), prefit=False)
    sets.fit(X[train], y[train], groups=groups[train])
    assert sets.scores_.shape == (1500,) and sets.thresholds_.shape == (4,)
    covered = _covered(sets.predict_sets(X[test]), sets.classes_, y[test])
    assert 0.86 <= covered.mean() <= 0.95
    for c in "abcd":
        assert covered[y[test] == c].mean() >= 0.83, c


def test_other_coverage_levels_come_from_the_stored_scores():
    X, y, _ = _lesions(2000, seed=2)
    model = LogisticRegression().fit(X[:1000], y[:1000])
    sets = PredictionSets(model, coverage=0.9).fit(X[1000:1500], y[1000:1500])
    proba = sets.predict_proba(X[1500:])
    at_90 = sets.sets_from_proba(proba)
    np.testing.assert_array_equal(at_90, sets.sets_from_proba(proba, coverage=0.9))
    refit = PredictionSets(model, coverage=0.8).fit(X[1000:1500], y[1000:1500])
    np.testing.assert_array_equal(sets.predict_sets(X[1500:], coverage=0.8),
                                  refit.predict_sets(X[1500:]))  # fmt: skip
    assert (sets.sets_from_proba(proba, coverage=0.8) <= at_90).all()  # nested
    assert sets.sets_from_proba(proba, coverage=0.99).sum() > at_90.sum()


def test_marginal_sets_are_mapies_split_conformal_sets():
    from mapie.classification import SplitConformalClassifier

    X, y, _ = _lesions(2000, seed=3)
    model = LogisticRegression().fit(X[:1000], y[:1000])
    ours = PredictionSets(model, coverage=0.9, class_conditional=False).fit(X[1000:1600],
                                                                            y[1000:1600])  # fmt: skip
    mapie = SplitConformalClassifier(model, confidence_level=0.9, prefit=True)
    mapie.conformalize(X[1000:1600], y[1000:1600])
    _, theirs = mapie.predict_set(X[1600:])
    np.testing.assert_array_equal(ours.predict_sets(X[1600:]), theirs[:, :, 0])


def test_thresholds_of_a_class_with_too_few_images_keep_it_in_every_set():
    proba = np.array([[0.9, 0.1]] * 30 + [[0.2, 0.8]] * 3)
    y_idx = np.array([0] * 30 + [1] * 3)
    thresholds = conformal_thresholds(proba, y_idx, 0.9)
    assert np.isfinite(thresholds[0]) and thresholds[1] == np.inf


def test_prefit_false_needs_out_of_fold_probabilities():
    X, y, _ = _lesions(200, seed=4)
    with pytest.raises(TypeError, match="TemperatureCalibratedClassifier"):
        PredictionSets(LogisticRegression(), prefit=False).fit(X, y)


def test_unknown_labels_and_missing_mapie_are_refused_with_the_fix(monkeypatch):
    X, y, _ = _lesions(400, seed=5)
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match=r"classes the model does not predict: \['z'\]"):
        PredictionSets(model).fit(X[:4], ["a", "b", "z", "a"])
    monkeypatch.setitem(__import__("sys").modules, "mapie.conformity_scores", None)
    with pytest.raises(ImportError, match=r"pip install skinfuse\[conformal\]"):
        PredictionSets(model).fit(X, y)
