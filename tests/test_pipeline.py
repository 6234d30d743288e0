import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    StratifiedGroupKFold,
    cross_val_predict,
    cross_val_score,
    cross_validate,
)
from sklearn.neural_network import MLPClassifier

from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder, cache_info
from skinfuse.imbalance import AdaptiveSMOTE, PriorCorrectedClassifier
from skinfuse.pipeline import make_fusion_pipeline

TINY = dict(backbone="tiny_cnn", weights=None, image_size=32, batch_size=64, pooling="avg")


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory):
    return make_synthetic_lesions(
        n_samples=300,
        image_size=32,
        n_classes=6,
        random_state=0,
        data_dir=tmp_path_factory.mktemp("six"),
    )


def _cv():
    return StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)


def test_steps_and_parameter_paths():
    model = make_fusion_pipeline(
        FrozenCNNEncoder(**TINY), select_k=10, classifier="logreg", preset="seed"
    )
    assert [n for n, _ in model.steps] == ["features", "scale", "select", "sampler", "classifier"]
    params = model.get_params()
    for key in (
        "features__image__image_size",
        "select__k",
        "sampler__k_neighbors",
        "classifier__C",
    ):
        assert key in params
    assert isinstance(model.named_steps["sampler"], AdaptiveSMOTE)
    off = make_fusion_pipeline(FrozenCNNEncoder(**TINY), sampler=None, scale=False)
    assert off.named_steps["sampler"] == "passthrough" and off.named_steps["scale"] == "passthrough"


def test_presets_best_by_default_and_the_seed_recipe_one_argument_away():
    best = make_fusion_pipeline(FrozenCNNEncoder(**TINY))
    assert best.named_steps["sampler"] == "passthrough"
    mlp = best.named_steps["classifier"]
    assert (mlp.hidden_layer_sizes, mlp.alpha, mlp.early_stopping) == ((512,), 1e-2, True)
    seed = make_fusion_pipeline(FrozenCNNEncoder(**TINY), preset="seed")
    assert isinstance(seed.named_steps["sampler"], AdaptiveSMOTE)
    mlp = seed.named_steps["classifier"]
    assert (mlp.hidden_layer_sizes, mlp.alpha) == ((256,), 1e-3)
    # an explicit argument wins over the preset
    assert (
        make_fusion_pipeline(FrozenCNNEncoder(**TINY), sampler="smote").named_steps["sampler"]
        != "passthrough"
    )
    assert (
        make_fusion_pipeline(FrozenCNNEncoder(**TINY), preset="seed", sampler=None).named_steps[
            "sampler"
        ]
        == "passthrough"
    )


def test_default_frozen_encoder_is_the_two_backbone_multi_scale_recipe():
    enc = FrozenCNNEncoder()
    assert enc.backbone == ("efficientnet_lite0", "efficientnet_lite2")
    assert enc.pooling == "auto" and enc._pooling() == "multi" and enc.image_size is None


def test_fusion_beats_each_modality_alone(six_classes):
    X, y, groups = six_classes.data, six_classes.target, six_classes.groups
    scores = {}
    for name, kwargs in {
        "metadata": dict(encoder=None),
        "image": dict(encoder=FrozenCNNEncoder(**TINY), metadata=None),
        "fusion": dict(encoder=FrozenCNNEncoder(**TINY)),
    }.items():
        model = make_fusion_pipeline(**kwargs, classifier="logreg", random_state=0)
        scores[name] = cross_val_score(model, X, y, groups=groups, cv=_cv()).mean()
    majority = y.value_counts(normalize=True).max()
    assert scores["metadata"] > majority + 0.1 and scores["image"] > majority + 0.1
    assert scores["fusion"] > max(scores["metadata"], scores["image"]) + 0.1, scores
    # the frozen encoder encoded every image once for both image models and all folds
    assert cache_info()["encoded"] == len(X)


@pytest.mark.parametrize("classifier", ["mlp", "rf", "logreg"])
def test_each_classifier_fits_and_predicts(lesions, classifier):
    X, y = lesions.data, lesions.target
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier=classifier, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence on tiny data
        model.fit(X, y)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(model.predict(X)) <= set(y)
    assert model.score(X, y) > 0.4


def test_grid_search_grouped_encodes_each_image_once(lesions):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier="logreg", random_state=0)
    grid = GridSearchCV(
        model, {"classifier__C": [0.1, 1.0], "scale__with_std": [True, False]}, cv=_cv()
    )
    grid.fit(X, y, groups=groups)
    assert set(grid.best_params_) == {"classifier__C", "scale__with_std"}
    assert cache_info()["encoded"] == len(X)  # 4 candidates x 3 folds + refit: one pass


def test_clone_pickle_joblib_give_identical_predictions(lesions, tmp_path):
    X, y = lesions.data, lesions.target
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier="rf", random_state=0).fit(
        X, y
    )
    expected = model.predict_proba(X)
    refit = clone(model).fit(X, y)
    np.testing.assert_array_equal(refit.predict_proba(X), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict_proba(X), expected)
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(X), expected)


def test_permutation_importance_per_original_column(six_classes):
    X, y = six_classes.data, six_classes.target
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier="logreg", random_state=0)
    model.fit(X, y)
    encoded = cache_info()["encoded"]
    result = permutation_importance(model, X, y, n_repeats=3, random_state=0)
    assert result.importances_mean.shape == (4,)  # image_path, age, sex, localization
    imp = dict(zip(X.columns, result.importances_mean))
    assert imp["image_path"] > 0.1 and imp["age"] > 0.05
    assert imp["image_path"] > imp["sex"] and imp["age"] > imp["sex"]
    assert cache_info()["encoded"] == encoded  # permuted paths come from the cache


def test_cross_validate_and_cross_val_predict(lesions):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier="logreg", random_state=0)
    res = cross_validate(model, X, y, groups=groups, cv=_cv(), scoring=["accuracy", "f1_macro"])
    assert res["test_accuracy"].shape == (3,)
    pred = cross_val_predict(model, X, y, groups=groups, cv=_cv())
    assert pred.shape == y.shape and (pred == y).mean() > 0.3


def test_unseen_location_and_missing_metadata_at_predict(lesions):
    X, y = lesions.data, lesions.target
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier="logreg", random_state=0)
    model.fit(X, y)
    new = X.iloc[:3].copy()
    new["localization"] = ["a place never seen", np.nan, "back"]
    new["age"] = [np.nan, np.nan, 40.0]
    new["sex"] = [np.nan, "female", "male"]
    proba = model.predict_proba(new)
    assert proba.shape == (3, len(model.classes_)) and np.isfinite(proba).all()


def test_smote_with_a_tiny_class_adapts_instead_of_crashing(lesions):
    X, y = lesions.data, lesions.target.copy().astype(object)
    y.iloc[:3] = "rare"  # 3 samples: in a 3-fold CV the training folds hold 1 or 2
    model = make_fusion_pipeline(
        FrozenCNNEncoder(**TINY), classifier="logreg", random_state=0, sampler="smote"
    )
    grid = GridSearchCV(model, {"classifier__C": [0.1, 1.0]}, cv=3, error_score="raise")
    with pytest.warns(UserWarning, match="class 'rare' has only"):
        grid.fit(X, y)
    assert "rare" in grid.best_estimator_.classes_


def test_bad_arguments():
    with pytest.raises(ValueError, match="neither"):
        make_fusion_pipeline(None, metadata=None)
    with pytest.raises(ValueError, match="'classifier' parameter of make_fusion_pipeline"):
        make_fusion_pipeline(FrozenCNNEncoder(), classifier="svm-ish")
    with pytest.raises(ValueError, match="does not take class_weight"):
        make_fusion_pipeline(FrozenCNNEncoder(), classifier="mlp", class_weight="balanced")
    with pytest.raises(ValueError, match="'select_k' parameter of make_fusion_pipeline"):
        make_fusion_pipeline(FrozenCNNEncoder(), select_k=0)
    with pytest.raises(ValueError, match="'sampler' parameter of make_fusion_pipeline"):
        make_fusion_pipeline(FrozenCNNEncoder(), sampler="smoat")
    with pytest.raises(ValueError, match="'prior_correction' parameter of make_fusion_pipeline"):
        make_fusion_pipeline(FrozenCNNEncoder(), sampler=None, prior_correction=2)
    with pytest.raises(TypeError, match="'encoder' parameter of make_fusion_pipeline"):
        make_fusion_pipeline("frozen")
    with pytest.raises(ValueError, match="has no class_weight parameter"):
        make_fusion_pipeline(None, classifier=MLPClassifier(), class_weight="balanced")
    rf = make_fusion_pipeline(None, classifier=RandomForestClassifier(), class_weight="balanced")
    assert rf.named_steps["classifier"].class_weight == "balanced"
    lr = make_fusion_pipeline(None, classifier="logreg", class_weight="balanced")
    assert isinstance(lr.named_steps["classifier"], LogisticRegression)


def test_select_k_keeps_the_most_informative_features(six_classes):
    X, y = six_classes.data, six_classes.target
    model = make_fusion_pipeline(
        FrozenCNNEncoder(**TINY), select_k=20, classifier="logreg", random_state=0
    ).set_output(transform="pandas")
    model.fit(X, y)
    names = model[:3].get_feature_names_out()
    assert len(names) == 20
    assert "metadata__age" in names  # age carries signal on synthetic lesions
    selected = model[:3].transform(X)
    assert isinstance(selected, pd.DataFrame) and list(selected.columns) == list(names)


def _approaches():
    from skinfuse.encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder
    from skinfuse.fusion import FusionNetClassifier

    tiny_cnn = dict(backbone="tiny_cnn", weights=None, image_size=32, num_workers=0)
    return {
        "frozen": make_fusion_pipeline(FrozenCNNEncoder(**TINY), random_state=0),
        "fine-tuned": make_fusion_pipeline(
            FineTunedCNNEncoder(
                **tiny_cnn, max_epochs=2, cross_fit=2, validation_fraction=0, random_state=0
            ),
            random_state=0,
        ),
        "autoencoder": make_fusion_pipeline(
            ConvAutoencoderEncoder(
                latent_dim=16, image_size=32, channels=(8, 16), max_epochs=2, random_state=0
            ),
            random_state=0,
        ),
        "joint": FusionNetClassifier(
            **tiny_cnn, max_epochs=4, lr=3e-3, validation_fraction=0, random_state=0
        ),
    }


@pytest.mark.parametrize("name", ["frozen", "fine-tuned", "autoencoder", "joint"])
def test_each_approach_fits_predicts_and_round_trips(lesions, name, tmp_path):
    X, y = lesions.data, lesions.target
    model = _approaches()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence on tiny data
        model.fit(X, y)
        proba = model.predict_proba(X)
        assert proba.shape == (len(X), 4)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        assert (model.predict(X) == y).mean() > 0.3
        joblib.dump(model, tmp_path / "model.joblib")
        np.testing.assert_array_equal(
            joblib.load(tmp_path / "model.joblib").predict_proba(X), proba
        )
        refit = clone(model).fit(X, y)  # same random_state, same data: same model
        np.testing.assert_allclose(refit.predict_proba(X), proba, rtol=1e-5, atol=1e-6)


def test_prior_correction_in_the_fusion_pipeline(lesions):
    X, y = lesions.data, lesions.target
    model = make_fusion_pipeline(
        FrozenCNNEncoder(**TINY), sampler=None, classifier="logreg", prior_correction=0.5
    )
    assert isinstance(model.named_steps["classifier"], PriorCorrectedClassifier)
    grid = GridSearchCV(model, {"classifier__power": [0.0, 1.0]}, cv=_cv())
    grid.fit(X, y, groups=lesions.groups)
    assert set(grid.cv_results_["param_classifier__power"]) == {0.0, 1.0}
    assert grid.predict(X.iloc[:3]).shape == (3,)


@pytest.mark.parametrize("name", ["frozen", "fine-tuned", "autoencoder", "joint"])
def test_each_approach_cross_validates_and_is_explained(lesions, name):
    """What the brief promises of every approach: grouped CV, permutation importance per
    original column, SHAP per column, and Grad-CAM heatmaps of what the CNN looked at."""
    from skinfuse.explain import explain_metadata, grad_cam, modality_importance

    X, y = lesions.data, lesions.target
    model = _approaches()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence on tiny data
        cv = cross_validate(model, X, y, groups=lesions.groups, cv=GroupKFold(2))
        assert cv["test_score"].shape == (2,) and np.isfinite(cv["test_score"]).all()
        model.fit(X, y)
        heat = grad_cam(model, X.iloc[:3])
        assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.max() > 0
        importance = modality_importance(model, X.iloc[:40], y.iloc[:40], n_repeats=2)
        assert set(importance.feature_names) == {"image", "age", "sex", "localization"}
        explanation = explain_metadata(model, X.iloc[:4], background=X.iloc[40:50])
        assert explanation.values.shape == (4, 4, 4)  # cases x columns x classes
        # SHAP values add up to the predicted probabilities
        total = explanation.values.sum(axis=1) + explanation.base_values
        np.testing.assert_allclose(total, model.predict_proba(X.iloc[:4]), atol=1e-4)
