"""LateFusionClassifier: Bayes' rule over an image model and a metadata model."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from skinfuse.encoders import FrozenCNNEncoder
from skinfuse.fusion import LateFusionClassifier
from skinfuse.pipeline import make_fusion_pipeline


def _image_model():
    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32, pooling="avg")
    return make_fusion_pipeline(encoder, metadata=None, classifier="logreg")


@pytest.fixture(scope="module")
def fitted(lesions):
    return LateFusionClassifier(_image_model()).fit(lesions.data, lesions.target)


def test_probabilities_follow_bayes_rule(fitted, lesions):
    X = lesions.data
    image = fitted.image_model_.predict_proba(X)
    metadata = fitted.metadata_model_.predict_proba(X)
    expected = image * metadata / fitted.class_prior_
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(fitted.predict_proba(X), expected, rtol=1e-6, atol=1e-9)
    assert (fitted.predict(X) == fitted.classes_[expected.argmax(axis=1)]).all()
    prior = np.unique(lesions.target, return_counts=True)[1] / len(lesions.target)
    np.testing.assert_allclose(fitted.class_prior_, prior)


def test_weight_zero_is_the_image_model_alone(fitted, lesions):
    X = lesions.data
    alone = clone(fitted).set_params(metadata_weight=0.0).fit(X, lesions.target)
    np.testing.assert_allclose(
        alone.predict_proba(X), alone.image_model_.predict_proba(X), rtol=1e-6, atol=1e-9
    )


def test_grid_search_over_the_weight_with_lesion_groups(lesions):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    search = GridSearchCV(
        LateFusionClassifier(_image_model()),
        {"metadata_weight": [0.0, 1.0], "image_model__classifier__C": [0.1, 1.0]},
        cv=StratifiedGroupKFold(3, shuffle=True, random_state=0),
        scoring="balanced_accuracy",
    ).fit(X, y, groups=groups)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    again = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_allclose(again.predict_proba(X), search.predict_proba(X))


def test_a_model_without_predict_proba_is_refused(lesions):
    from sklearn.svm import LinearSVC

    with pytest.raises(ValueError, match="image_model"):
        LateFusionClassifier(LinearSVC()).fit(lesions.data, lesions.target)
