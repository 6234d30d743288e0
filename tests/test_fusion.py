import itertools
import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from skinfuse.datasets import make_synthetic_lesions
from skinfuse.fusion import FusionNetClassifier

TINY = dict(
    backbone="tiny_cnn",
    weights=None,
    image_size=32,
    max_epochs=3,
    batch_size=32,
    validation_fraction=0.0,
    augment=False,
    num_workers=0,
    lr=3e-3,
    random_state=0,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    lesions = make_synthetic_lesions(
        n_samples=320, image_size=32, n_classes=4, random_state=1,
        data_dir=tmp_path_factory.mktemp("fusion"),
    )  # fmt: skip
    train, test = next(
        StratifiedGroupKFold(4, shuffle=True, random_state=0).split(
            lesions.data, lesions.target, lesions.groups
        )
    )
    return lesions, train, test


def test_fusion_net_learns_and_metadata_helps(data):
    lesions, train, test = data
    X, y = lesions.data, lesions.target
    scores = {}
    for name, metadata in [("fusion", "default"), ("image only", None)]:
        net = FusionNetClassifier(**{**TINY, "max_epochs": 8}, metadata=metadata)
        net.fit(X.iloc[train], y.iloc[train])
        scores[name] = net.score(X.iloc[test], y.iloc[test])
    majority = y.iloc[test].value_counts(normalize=True).max()
    assert scores["image only"] > majority + 0.1, scores
    assert scores["fusion"] > scores["image only"] + 0.05, scores


def test_predict_proba_classes_and_string_labels(data):
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:80]], lesions.target.iloc[train[:80]]
    net = FusionNetClassifier(**TINY).fit(X, y)
    proba = net.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert list(net.classes_) == sorted(y.unique())
    assert set(net.predict(X)) <= set(y)
    assert net.module_.metadata is not None and net.cam_layer_.startswith("embedder.features")
    assert len(net.history_) == 3


def test_same_random_state_same_model_and_clone(data):
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    a = FusionNetClassifier(**TINY).fit(X, y).predict_proba(X)
    b = FusionNetClassifier(**TINY).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    c = clone(FusionNetClassifier(**TINY)).set_params(random_state=1).fit(X, y).predict_proba(X)
    assert np.abs(a - c).max() > 1e-4


def test_pickle_joblib_round_trip(data, tmp_path):
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    net = FusionNetClassifier(**TINY).fit(X, y)
    expected = net.predict_proba(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net)).predict_proba(X), expected)
    joblib.dump(net, tmp_path / "net.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "net.joblib").predict_proba(X), expected)


def test_gpu_fitted_net_predicts_on_a_cpu_only_machine(data, monkeypatch):
    import torch

    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    net = FusionNetClassifier(**TINY).fit(X, y)
    expected = net.predict_proba(X)
    net.device_ = "cuda"  # as if fitted on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net)).predict_proba(X), expected)


def test_grid_search(data):
    lesions, train, _ = data
    X, y, g = lesions.data.iloc[train], lesions.target.iloc[train], lesions.groups[train]
    grid = GridSearchCV(
        FusionNetClassifier(**{**TINY, "max_epochs": 1}),
        {"lr": [1e-3, 3e-3], "metadata_hidden": [8, 16]},
        cv=StratifiedGroupKFold(2),
    )
    grid.fit(X, y, groups=g)
    assert set(grid.best_params_) == {"lr", "metadata_hidden"}


def test_unseen_location_and_missing_values(data):
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    net = FusionNetClassifier(**TINY).fit(X, y)
    new = X.iloc[:3].copy()
    new["localization"] = ["the moon", np.nan, "back"]
    new["age"] = [np.nan, 30.0, np.nan]
    proba = net.predict_proba(new)
    assert np.isfinite(proba).all() and proba.shape == (3, len(net.classes_))


def test_augmentation_and_validation_split_train(data):
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:96]], lesions.target.iloc[train[:96]]
    net = FusionNetClassifier(
        **{**TINY, "augment": True, "validation_fraction": 0.25, "patience": 2, "max_epochs": 3}
    ).fit(X, y)
    assert "valid_loss" in net.history_[-1]
    np.testing.assert_array_equal(net.predict(X), net.predict(X))  # no augmentation at predict


def test_grad_cam_with_fixed_metadata(data):
    from skinfuse.explain import grad_cam

    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    net = FusionNetClassifier(**TINY).fit(X, y)
    module, _layer, size, _classes = net.__skinfuse_gradcam__(X.iloc[:4])
    import torch

    from skinfuse.images import load_images

    pixels, _ = load_images(X["image_path"].iloc[:4], size=size)
    with torch.no_grad():
        logits = module(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(
        torch.softmax(logits, 1).numpy(), net.predict_proba(X.iloc[:4]), rtol=1e-4, atol=1e-5
    )
    maps = grad_cam(net, X.iloc[:4])
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()
    assert not net.module_.training  # grad_cam hands the network back in eval mode


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((4, 3)), "DataFrame"),
        (pd.DataFrame({"age": [1.0] * 4}), "no image column"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises((TypeError, ValueError), match=match):
        FusionNetClassifier(**TINY).fit(X, [0, 1, 0, 1])


def test_bad_parameters():
    with pytest.raises(ValueError, match="pooling"):
        FusionNetClassifier(**TINY, pooling="median").fit(pd.DataFrame({"image_path": ["x"]}), [0])


def test_image_only_takes_a_column_of_images(data):
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    net = FusionNetClassifier(**{**TINY, "metadata": None}).fit(X, y)
    assert list(net.feature_names_in_) == ["image_path"]  # the metadata columns are unused
    proba = net.predict_proba(X)
    np.testing.assert_allclose(net.predict_proba(X[["image_path"]]), proba, rtol=1e-6)
    # a plain column of paths trains the same network
    paths = X["image_path"].to_numpy()
    same = FusionNetClassifier(**{**TINY, "metadata": None}).fit(paths, y)
    np.testing.assert_allclose(same.predict_proba(paths), proba, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="DataFrame"):
        FusionNetClassifier(**TINY).fit(paths, y)  # metadata needs its columns


def test_warmup_then_cosine_learning_rate(data):
    from skinfuse._nn.training import WarmupCosine

    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    net = FusionNetClassifier(**{**TINY, "batch_size": 16, "warmup_epochs": 1, "lr": 0.01}).fit(
        X, y
    )
    lrs = [b["event_lr"] for epoch in net.history_ for b in epoch["batches"]]
    assert len(lrs) == 12  # 3 epochs of 4 batches, stepped per batch
    # batch 1 trains at lr/4, the warm-up reaches lr at batch 4, then the cosine decays it
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert all(a > b for a, b in itertools.pairwise(lrs[3:])) and lrs[-1] < 0.001
    schedule = WarmupCosine(4, 12)
    assert schedule(3) == 1.0 and schedule(4) < 1.0 and schedule(12) == pytest.approx(0.0)


def test_compile_trains_the_same_network_and_keeps_the_plain_module(data, monkeypatch):
    """compile=True goes through skorch's torch.compile (here with dynamo's eager backend,
    so the test does not wait for code generation); the fitted net holds the plain module."""
    import torch

    real, calls = torch.compile, []

    def eager_compile(module, **kwargs):
        calls.append(type(module).__name__)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    lesions, train, _ = data
    X, y = lesions.data.iloc[train[:64]], lesions.target.iloc[train[:64]]
    one_epoch = {**TINY, "max_epochs": 1}
    plain = FusionNetClassifier(**one_epoch).fit(X, y)
    compiled = FusionNetClassifier(**one_epoch, compile=True).fit(X, y)
    assert "ClassifierNetwork" in calls
    assert type(compiled.module_).__name__ == "ClassifierNetwork"
    assert compiled.net_.compile is False and not hasattr(compiled.module_, "_orig_mod")
    np.testing.assert_allclose(compiled.predict_proba(X), plain.predict_proba(X), atol=1e-5)
    pickle.loads(pickle.dumps(compiled))


@pytest.mark.parametrize(
    "params, ignored",
    [
        ({"cached_views": 2}, "cached_views is only used with trainable_blocks"),
        ({"trainable_blocks": 1, "freeze": 1}, "freeze is replaced by trainable_blocks"),
        ({"trainable_blocks": 1, "image_store": None}, "image_store is only used without"),
        ({"activation_memory": None}, "activation_memory is only used with trainable_blocks"),
        ({"metadata_columns": ["age"]}, "metadata_columns is only used with a metadata"),
        ({"metadata": None, "metadata_hidden": 8}, "metadata_hidden is not used without"),
    ],
)
def test_settings_without_effect_are_named_in_a_warning(params, ignored):
    lesions = make_synthetic_lesions(12, image_size=16, n_classes=2, random_state=0)
    net = FusionNetClassifier(
        "tiny_cnn", weights=None, image_size=16, max_epochs=1, validation_fraction=0,
        random_state=0, **params,
    )  # fmt: skip
    with pytest.warns(UserWarning, match=ignored) as caught:
        net.fit(lesions.data, lesions.target)
    assert caught[0].filename == __file__  # it points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults are all used: no warning
        FusionNetClassifier(
            "tiny_cnn", weights=None, image_size=16, max_epochs=1, validation_fraction=0,
            random_state=0,
        ).fit(lesions.data, lesions.target)  # fmt: skip
