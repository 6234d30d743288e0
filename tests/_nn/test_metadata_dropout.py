"""Metadata dropout: the fusion network trained with metadata columns missing at random."""

import numpy as np
import pytest
import torch
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

import skinfuse
from skinfuse._nn.modules import MetadataDropout
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.fusion import FusionNetClassifier

TINY = dict(backbone="tiny_cnn", weights=None, image_size=32, random_state=0)


@pytest.fixture(scope="module")
def lesions():
    return make_synthetic_lesions(48, image_size=32, n_classes=3, random_state=0)


def test_each_column_is_set_missing_with_probability_p_in_training_only():
    drop = MetadataDropout(0.3, columns=[[0, 1], [2], [3, 4]], missing=[9, 8, 7, 6, 5])
    rows = torch.zeros(20000, 5)
    torch.manual_seed(0)
    out = drop.train()(rows)
    hit = out != 0
    # a column's features go missing together, to the column's missing encoding
    assert torch.equal(hit[:, 0], hit[:, 1]) and torch.equal(hit[:, 3], hit[:, 4])
    assert torch.equal(out[hit[:, 0], 0], torch.full((int(hit[:, 0].sum()),), 9.0))
    rates = hit[:, [0, 2, 3]].float().mean(0)
    np.testing.assert_allclose(rates, 0.3, atol=0.015)
    # independently: all three missing in about p**3 of the rows
    assert abs(hit[:, [0, 2, 3]].all(1).float().mean().item() - 0.027) < 0.006
    assert torch.equal(drop.eval()(rows), rows)
    assert "member" not in drop.state_dict()  # model files rebuild it from its arguments


def test_the_missing_encoding_is_what_the_preprocessor_gives_a_missing_value(lesions):
    X, y = lesions.data, lesions.target
    net = FusionNetClassifier(**TINY, max_epochs=0, validation_fraction=0).fit(X, y)
    meta = net._metadata_matrix(X, len(X))
    spec = net._missing_encoding(X, meta)
    assert len(spec["columns"]) == 3  # age, sex, localization
    features = [f for column in spec["columns"] for f in column]
    assert len(features) == len(set(features))  # each feature belongs to one column
    gone = X.assign(age=np.nan, sex=np.nan, localization=np.nan)
    expected = net._metadata_matrix(gone, len(X))
    rebuilt = meta.copy()
    for features in spec["columns"]:
        rebuilt[:, features] = np.asarray(spec["missing"])[features]
    np.testing.assert_allclose(rebuilt, expected)


def test_training_with_metadata_dropout_changes_training_not_the_network(lesions, tmp_path):
    X, y = lesions.data, lesions.target
    params = dict(**TINY, max_epochs=2, validation_fraction=0)
    plain = FusionNetClassifier(**params).fit(X, y)
    dropped = FusionNetClassifier(**params, metadata_dropout=0.5).fit(X, y)
    assert dropped.module_.metadata_dropout.p == 0.5
    assert plain.module_.metadata_dropout is None
    assert plain.module_.state_dict().keys() == dropped.module_.state_dict().keys()
    proba = dropped.predict_proba(X)
    assert not np.allclose(proba, plain.predict_proba(X))
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    # evaluation is deterministic, and the model file keeps it
    np.testing.assert_array_equal(proba, dropped.predict_proba(X))
    skinfuse.save(dropped, tmp_path / "m.skinfuse")
    loaded = skinfuse.load(tmp_path / "m.skinfuse")
    np.testing.assert_allclose(loaded.predict_proba(X), proba, atol=1e-6)


def test_partial_fine_tuning_trains_with_metadata_dropout_too(lesions):
    X, y = lesions.data, lesions.target
    params = dict(**TINY, max_epochs=2, trainable_blocks=1, cached_views=2,
                  validation_fraction=0)  # fmt: skip
    a = FusionNetClassifier(**params).fit(X, y).predict_proba(X)
    b = FusionNetClassifier(**params, metadata_dropout=0.5).fit(X, y).predict_proba(X)
    assert not np.allclose(a, b)


def test_a_transformer_that_mixes_columns_is_refused(lesions):
    X, y = lesions.data.copy(), lesions.target
    X["height"] = np.linspace(150, 190, len(X))
    mixing = make_pipeline(SimpleImputer(), PolynomialFeatures(2))
    net = FusionNetClassifier(**TINY, max_epochs=1, validation_fraction=0,
                              metadata=mixing, metadata_columns=["age", "height"],
                              metadata_dropout=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="apart from the others"):
        net.fit(X, y)
    # one that refuses missing values is told to put an imputer in front
    with pytest.raises(ValueError, match="Put an imputer in front"):
        net.set_params(metadata=PolynomialFeatures(2)).fit(X.fillna({"age": 50.0}), y)


def test_metadata_dropout_without_metadata_warns(lesions):
    X, y = lesions.data, lesions.target
    net = FusionNetClassifier(**TINY, metadata=None, max_epochs=1, metadata_dropout=0.2)
    with pytest.warns(UserWarning, match="metadata_dropout is not used without metadata"):
        net.fit(X[["image_path"]], y)


def test_modality_dropout_sets_whole_rows_missing_on_top_of_single_columns():
    columns, missing = [[0, 1], [2], [3, 4]], [9, 8, 7, 6, 5]
    rows = torch.zeros(20000, 5)
    torch.manual_seed(0)
    whole = MetadataDropout(0.0, columns, missing, p_all=0.25).train()(rows)
    hit = (whole != 0)[:, [0, 2, 3]]
    # rows go missing whole, never a column alone
    assert torch.equal(hit.any(1), hit.all(1))
    assert abs(hit.all(1).float().mean().item() - 0.25) < 0.015
    torch.manual_seed(0)
    both = MetadataDropout(0.3, columns, missing, p_all=0.25).train()(rows)
    hit = (both != 0)[:, [0, 2, 3]]
    np.testing.assert_allclose(hit.float().mean(0), 1 - 0.7 * 0.75, atol=0.015)
    assert abs(hit.all(1).float().mean().item() - (0.25 + 0.75 * 0.027)) < 0.015
    assert torch.equal(MetadataDropout(0.3, columns, missing, p_all=0.25).eval()(rows), rows)


def test_a_pickle_made_before_modality_dropout_still_trains():
    drop = MetadataDropout(0.5, [[0], [1]], [1.0, 1.0])
    del drop.p_all  # as unpickled from a model made before the parameter existed
    torch.manual_seed(0)
    out = drop.train()(torch.zeros(1000, 2))
    assert 0.4 < (out != 0).float().mean().item() < 0.6


def test_training_with_modality_dropout_and_its_model_file(lesions, tmp_path):
    X, y = lesions.data, lesions.target
    params = dict(**TINY, max_epochs=2, validation_fraction=0)
    plain = FusionNetClassifier(**params).fit(X, y)
    net = FusionNetClassifier(**params, modality_dropout=0.5).fit(X, y)
    assert (net.module_.metadata_dropout.p, net.module_.metadata_dropout.p_all) == (0.0, 0.5)
    proba = net.predict_proba(X)
    assert not np.allclose(proba, plain.predict_proba(X))
    skinfuse.save(net, tmp_path / "m.skinfuse")
    np.testing.assert_allclose(
        skinfuse.load(tmp_path / "m.skinfuse").predict_proba(X), proba, atol=1e-6
    )
    # the partial path trains with it too
    partial = dict(params, trainable_blocks=1, cached_views=2)
    a = FusionNetClassifier(**partial).fit(X, y).predict_proba(X)
    b = FusionNetClassifier(**partial, modality_dropout=0.5).fit(X, y).predict_proba(X)
    assert not np.allclose(a, b)


def test_modality_dropout_errors_name_it(lesions):
    X, y = lesions.data, lesions.target
    net = FusionNetClassifier(**TINY, metadata=None, max_epochs=1, modality_dropout=0.2)
    with pytest.warns(UserWarning, match="modality_dropout is not used without metadata"):
        net.fit(X[["image_path"]], y)
    net = FusionNetClassifier(**TINY, max_epochs=1, validation_fraction=0,
                              metadata=PolynomialFeatures(2), metadata_columns=["age"],
                              modality_dropout=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="modality_dropout=0.5 sets metadata columns missing"):
        net.fit(X.fillna({"age": 50.0}), y)
