import numpy as np
import pandas as pd
import pytest

from skinfuse.encoders import FrozenCNNEncoder, cache_info
from skinfuse.explain import explain_metadata, modality_importance
from skinfuse.pipeline import make_fusion_pipeline

TINY = dict(backbone="tiny_cnn", weights=None, image_size=32, batch_size=64, pooling="avg")
COLUMNS = ["image", "age", "sex", "localization"]

# shap's own colour maps warn on import (matplotlib deprecation, not ours)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def _age_only(bunch, seed):
    """The lesions with sex and localization redrawn at random: of the metadata, only age
    still tells the classes apart (it carries the class parity)."""
    X = bunch.data.copy()
    rng = np.random.default_rng(seed)
    X["sex"] = rng.choice(np.array(["male", "female"], dtype=object), len(X))
    X["localization"] = rng.choice(
        np.array(["back", "face", "trunk", "hand"], dtype=object), len(X)
    )
    return X, bunch.target


@pytest.fixture(scope="module")
def fusion(lesions):
    X, y = _age_only(lesions, seed=0)
    model = make_fusion_pipeline(FrozenCNNEncoder(**TINY), classifier="logreg", sampler=None)
    return model.fit(X, y)


def test_values_add_up_to_predict_proba_and_images_are_encoded_once(fusion, unseen):
    X, _ = _age_only(unseen, seed=1)
    X, background = X.iloc[:12], X.iloc[20:36]
    ex = explain_metadata(fusion, X, background=background)
    assert ex.values.shape == (12, 4, 4) and ex.base_values.shape == (12, 4)
    assert ex.feature_names == COLUMNS and ex.output_names == list(fusion.classes_)
    proba = fusion.predict_proba(X)
    np.testing.assert_allclose(ex.base_values + ex.values.sum(axis=1), proba, atol=1e-8)
    np.testing.assert_allclose(
        ex.base_values, fusion.predict_proba(background).mean(0)[None].repeat(12, 0)
    )
    assert ex.data[0, 0] == X["image_path"].iloc[0] and ex.data[0, 1] == X["age"].iloc[0]
    assert ex.display_data[0, 0] == X["image_path"].iloc[0].rsplit("/", 1)[-1]
    # every image of X and the background was encoded exactly once, however many
    # coalitions shap evaluated; a second explanation encodes nothing
    assert cache_info()["encoded"] == 12 + 16
    explain_metadata(fusion, X, background=background)
    assert cache_info()["encoded"] == 12 + 16
    # a value of a class sums to zero over classes (the probabilities sum to one)
    np.testing.assert_allclose(ex.values.sum(axis=2), 0.0, atol=1e-8)


def test_age_matters_most_among_the_metadata(fusion, unseen):
    X, y = _age_only(unseen, seed=1)
    ex = explain_metadata(fusion, X.iloc[:20], background=20, random_state=0)
    mean_abs = dict(zip(ex.feature_names, np.abs(ex.values).mean(axis=(0, 2))))
    # measured: image 0.22, age 0.16, localization 0.031, sex 0.024
    assert mean_abs["age"] > 0.08 > max(mean_abs["sex"], mean_abs["localization"]), mean_abs
    assert mean_abs["age"] > 3 * max(mean_abs["sex"], mean_abs["localization"]), mean_abs
    fusion.predict(X)
    encoded = cache_info()["encoded"]
    result = modality_importance(fusion, X, y, scoring="neg_log_loss", n_repeats=5, random_state=0)
    assert cache_info()["encoded"] == encoded  # shuffled images are cached images
    assert sorted(result.feature_names) == sorted(COLUMNS)
    assert list(result.frame.index) == list(result.feature_names)
    assert np.all(np.diff(result.importances_mean) <= 0)  # sorted, largest first
    assert result.importances.shape == (4, 5)
    imp = dict(zip(result.feature_names, result.importances_mean))
    # measured (drop in log-loss): image 1.94, age 1.69, localization 0.009, sex -0.019
    assert imp["age"] > 0.8 and max(imp["sex"], imp["localization"]) < 0.15, imp


def test_decision_function_and_default_background(fusion, unseen):
    X, _ = _age_only(unseen, seed=2)
    ex = explain_metadata(fusion, X.iloc[:5], response_method="decision_function")
    np.testing.assert_allclose(
        ex.base_values + ex.values.sum(axis=1), fusion.decision_function(X.iloc[:5]), atol=1e-8
    )


def test_bad_arguments(fusion, unseen):
    X = unseen.data.iloc[:3]
    with pytest.raises(ValueError, match="lacks the columns"):
        explain_metadata(fusion, X, background=X.drop(columns="age"))
    with pytest.raises(ValueError, match="0 rows"):
        explain_metadata(fusion, X.iloc[:0])
    with pytest.raises(ValueError, match="has no decision_function"):
        explain_metadata(FrozenCNNEncoder(), X, response_method="decision_function")


DATAFRAME = "must be an instance of 'pandas[.a-z]*DataFrame'"


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(X=np.zeros((3, 4))), f"'X' parameter of explain_metadata {DATAFRAME}"),
        (dict(algorithm="tree"), "'algorithm' parameter of explain_metadata must be a str among"),
        (dict(background=0), "'background' parameter of explain_metadata must be"),
        (dict(max_evals=0), "'max_evals' parameter of explain_metadata must be"),
        (dict(response_method="predict"), "'response_method' parameter of explain_metadata"),
        (dict(random_state="seed"), "'random_state' parameter of explain_metadata"),
    ],
)
def test_explain_metadata_refuses_bad_parameters(unseen, params, match):
    # refused before the model is called (an unfitted one would raise NotFittedError)
    unfitted = make_fusion_pipeline(FrozenCNNEncoder(**TINY), sampler=None)
    with pytest.raises(ValueError, match=match):
        explain_metadata(unfitted, **{"X": unseen.data.iloc[:3], **params})


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(X=np.zeros((3, 4))), f"'X' parameter of modality_importance {DATAFRAME}"),
        (dict(model=object()), "'model' parameter of modality_importance must be an object"),
        (dict(n_repeats=0), "'n_repeats' parameter of modality_importance must be an int"),
        (dict(scoring="nope"), "'scoring' parameter of modality_importance must be a str among"),
        (dict(n_jobs="all"), "'n_jobs' parameter of modality_importance must be"),
    ],
)
def test_modality_importance_refuses_bad_parameters(unseen, params, match):
    unfitted = make_fusion_pipeline(FrozenCNNEncoder(**TINY), sampler=None)
    kwargs = {"model": unfitted, "X": unseen.data.iloc[:3], "y": unseen.target[:3], **params}
    with pytest.raises(ValueError, match=match):
        modality_importance(**kwargs)


def test_works_with_a_metadata_only_model(lesions):
    X, y = _age_only(lesions, seed=0)
    X = X.drop(columns="image_path")
    model = make_fusion_pipeline(None, classifier="logreg", sampler=None).fit(X, y)
    ex = explain_metadata(model, X.iloc[:4], background=10, random_state=0)
    assert ex.feature_names == ["age", "sex", "localization"]
    np.testing.assert_allclose(
        ex.base_values + ex.values.sum(axis=1), model.predict_proba(X.iloc[:4]), atol=1e-8
    )
    assert isinstance(modality_importance(model, X, y, n_repeats=2).frame, pd.DataFrame)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["exact", "permutation"])
def test_exact_and_permutation_explainers_agree_with_kernel(fusion, unseen, algorithm):
    # slow: shap's numba functions compile on first use in a process (~10 s on 2 cores)
    X, _ = _age_only(unseen, seed=1)
    X, background = X.iloc[:3], X.iloc[20:30]
    kernel = explain_metadata(fusion, X, background=background)
    other = explain_metadata(fusion, X, background=background, algorithm=algorithm,
                             random_state=0)  # fmt: skip
    np.testing.assert_allclose(other.base_values, kernel.base_values, atol=1e-8)
    np.testing.assert_allclose(
        other.base_values + other.values.sum(axis=1), fusion.predict_proba(X), atol=1e-8
    )
    if algorithm == "exact":  # both exact Shapley values
        np.testing.assert_allclose(other.values, kernel.values, atol=1e-8)


@pytest.fixture(scope="module")
def metadata_only(lesions):
    X, y = _age_only(lesions, seed=0)
    X = X.drop(columns="image_path")
    return make_fusion_pipeline(None, classifier="logreg", sampler=None).fit(X, y), X, y


@pytest.mark.parametrize("background", [None, 1, 5])
def test_one_case_with_a_background_drawn_from_it_is_refused(metadata_only, background):
    # the background would be the case itself: every SHAP value 0, which means nothing
    model, X, _ = metadata_only
    with pytest.raises(ValueError, match="single case needs a background.*would be 0"):
        explain_metadata(model, X.iloc[:1], background=background)


def test_one_case_with_training_rows_as_background_is_explained(metadata_only):
    model, X, _ = metadata_only
    case = X.iloc[[0]]
    ex = explain_metadata(model, case, background=X.iloc[40:80])
    assert np.abs(ex.values).max() > 1e-3  # not all zeros
    np.testing.assert_allclose(
        ex.base_values + ex.values.sum(axis=1), model.predict_proba(case), atol=1e-8
    )


@pytest.mark.parametrize("background", ["row", 1])
def test_a_background_of_one_row_warns(metadata_only, background):
    model, X, _ = metadata_only
    background = X.iloc[[50]] if background == "row" else background
    with pytest.warns(UserWarning, match="background of 1 row: every SHAP value compares") as rec:
        explain_metadata(model, X.iloc[:3], background=background, random_state=0)
    assert rec[0].filename == __file__  # points at the caller


def test_modality_importance_of_one_case_is_refused(metadata_only):
    # shuffling the columns of one case changes nothing: every importance would be 0
    model, X, y = metadata_only
    with pytest.raises(ValueError, match="needs at least 2 cases, got 1: shuffling"):
        modality_importance(model, X.iloc[:1], y[:1])
    result = modality_importance(model, X.iloc[:2], y[:2], n_repeats=2, random_state=0)
    assert result.importances.shape == (3, 2)
