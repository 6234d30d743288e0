"""ConvAutoencoderEncoder: learned signal, reconstruction, and the estimator contract."""

import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import cache_info, clear_cache
from skinfuse.encoders._autoencoder import ConvAutoencoderEncoder
from skinfuse.images import load_images

SMALL = dict(
    latent_dim=4, image_size=16, channels=(8, 16), max_epochs=2, batch_size=16, num_workers=0
)


def _small(**params):
    return ConvAutoencoderEncoder(**{**SMALL, "random_state": 0, **params})


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny networks gain nothing from intra-op threads, and on a busy 2-core machine their
    spin-waiting makes each fit up to 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paths(lesions):
    """40 lesion image paths (32 px files, read at 16 px by the small encoders)."""
    return lesions.data["image_path"].to_numpy()[:40]


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory):
    """300 lesions of 6 classes, a lesion-grouped split, and an encoder fitted on its train part."""
    bunch = make_synthetic_lesions(
        300,
        image_size=32,
        n_classes=6,
        data_dir=tmp_path_factory.mktemp("six_classes"),
        random_state=0,
    )
    X = bunch.data["image_path"].to_numpy()
    y = np.searchsorted(bunch.target_names, bunch.target.to_numpy())
    train, test = next(
        GroupShuffleSplit(1, test_size=0.3, random_state=0).split(X, y, bunch.groups)
    )
    cae = ConvAutoencoderEncoder(
        32,
        image_size=32,
        channels=(16, 32, 64),
        max_epochs=10,
        batch_size=32,
        num_workers=0,
        random_state=0,
    )
    Z_train = cae.fit_transform(X[train])
    return X, y, train, test, cae, Z_train


# -- what it learns ----------------------------------------------------------------------
def test_embeddings_carry_the_lesion_signal(six_classes):
    # the synthetic images encode the class pair k // 2 (colour, size, border, texture)
    X, y, train, test, cae, Z_train = six_classes
    Z_test = cae.transform(X[test])
    assert Z_train.dtype == np.float32 and Z_test.shape == (len(test), 32)
    pair = y // 2
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = probe.fit(Z_train, pair[train]).score(Z_test, pair[test])
    majority = np.bincount(pair[test]).max() / len(test)
    assert accuracy > majority + 0.3, (accuracy, majority)  # measured: 0.78 vs 0.35
    # all 6 classes: only the weak darkening of odd classes tells a pair apart in the images
    accuracy = probe.fit(Z_train, y[train]).score(Z_test, y[test])
    majority = np.bincount(y[test]).max() / len(test)
    assert accuracy > majority + 0.1, (accuracy, majority)  # measured: 0.40 vs 0.23


def test_reconstruction_beats_untrained_and_mean_image(six_classes):
    X, _, train, test, cae, _ = six_classes
    untrained = clone(cae).set_params(max_epochs=0).fit(X[train])
    assert untrained.history_ == []
    assert cae.history_[-1] < 0.5 * cae.history_[0]
    pixels = load_images(X, size=32)[0].astype(np.float32) / 255
    mean_image = -np.mean((pixels[test] - pixels[train].mean(axis=0)) ** 2)
    score = cae.score(X[test])
    assert score > untrained.score(X[test]) + 0.005
    assert score > mean_image, (score, mean_image)


def test_score_is_negative_reconstruction_mse(paths):
    cae = _small().fit(paths)
    recon = cae.reconstruct(paths)
    assert recon.shape == (40, 16, 16, 3) and recon.dtype == np.float32
    assert recon.min() >= 0.0 and recon.max() <= 1.0
    target = load_images(paths, size=16)[0].astype(np.float32) / 255
    np.testing.assert_allclose(cae.score(paths), -np.mean((recon - target) ** 2), rtol=1e-5)
    np.testing.assert_array_equal(cae.inverse_transform(cae.transform(paths)), recon)


def test_grid_search_tunes_on_reconstruction_score(paths):
    search = GridSearchCV(_small(lr=1e-2), {"max_epochs": [0, 10]}, cv=2).fit(paths)
    assert search.best_params_ == {"max_epochs": 10}
    means = search.cv_results_["mean_test_score"]
    assert np.all(means < 0) and means[1] > means[0]


# -- fitted attributes -------------------------------------------------------------------
def test_fitted_attributes(paths):
    cae = _small().fit(paths)
    assert cae.n_features_out_ == 4 and cae.n_features_in_ == 1
    assert cae.device_ == "cpu"
    assert cae.module_ is cae.net_.module_
    assert not cae.module_.training
    assert all(p.device.type == "cpu" for p in cae.module_.parameters())
    assert cae.cnn_ is cae.module_.encoder.cnn
    assert cae.cam_layer_ == "encoder.cnn.1"
    last_block = cae.module_.get_submodule(cae.cam_layer_)
    assert isinstance(last_block[0], torch.nn.Conv2d) and last_block[0].out_channels == 16
    assert len(cae.history_) == 2 and all(np.isfinite(cae.history_))
    assert cae.history_ == pytest.approx(list(cae.net_.history[:, "train_loss"]))
    assert isinstance(cae.config_key_, str) and len(cae.config_key_) == 32


def test_feature_names_and_pandas_output(paths):
    cae = _small().fit(paths)
    names = [f"convautoencoderencoder{i}" for i in range(4)]
    assert cae.get_feature_names_out().tolist() == names
    frame = cae.set_output(transform="pandas").transform(pd.Series(paths[:5]))
    assert isinstance(frame, pd.DataFrame) and frame.columns.tolist() == names
    np.testing.assert_array_equal(
        frame.to_numpy(), cae.set_output(transform="default").transform(paths[:5])
    )
    fitted_frame = _small().set_output(transform="pandas").fit_transform(paths)
    assert isinstance(fitted_frame, pd.DataFrame) and fitted_frame.columns.tolist() == names
    # a pandas embedding decodes like an array
    assert cae.inverse_transform(frame).shape == (5, 16, 16, 3)


def test_input_forms_agree(paths):
    cae = _small().fit(list(paths))
    Z = cae.transform(list(paths[:6]))
    np.testing.assert_array_equal(cae.transform(pd.Series(paths[:6])), Z)
    pixels = load_images(paths[:6], size=16)[0]  # in-memory images give the same embeddings
    np.testing.assert_allclose(cae.transform(pixels), Z, atol=1e-6)
    framed = _small().fit(pd.DataFrame({"image_path": paths}))
    assert framed.feature_names_in_.tolist() == ["image_path"]
    np.testing.assert_array_equal(framed.transform(pd.DataFrame({"image_path": paths[:6]})), Z)


# -- the estimator contract -------------------------------------------------------------
def test_init_stores_params_and_clone():
    cae = ConvAutoencoderEncoder(8, channels=[4, 8], optimizer="sgd", random_state=3)
    params = cae.get_params()
    assert params["latent_dim"] == 8 and params["channels"] == [4, 8]
    assert params["optimizer"] == "sgd" and params["random_state"] == 3
    assert clone(cae).get_params() == params
    assert cae.set_params(latent_dim=5, max_epochs=1) is cae and cae.latent_dim == 5


def test_set_params_then_refit(paths):
    cae = _small().fit(paths)
    first_key = cae.config_key_
    cae.set_params(latent_dim=6).fit(paths)
    assert cae.transform(paths[:3]).shape == (3, 6)
    assert cae.config_key_ != first_key


def test_not_fitted_raises(paths):
    cae = _small()
    for method in (cae.transform, cae.reconstruct, cae.score):
        with pytest.raises(NotFittedError):
            method(paths)
    with pytest.raises(NotFittedError):
        cae.inverse_transform(np.zeros((2, 4)))


@pytest.mark.parametrize("dump_load", ["pickle", "joblib"])
def test_pickle_round_trip_gives_identical_outputs(paths, tmp_path, dump_load):
    cae = _small().fit(paths)
    Z = cae.transform(paths)
    if dump_load == "pickle":
        loaded = pickle.loads(pickle.dumps(cae))
    else:
        joblib.dump(cae, tmp_path / "cae.joblib")
        loaded = joblib.load(tmp_path / "cae.joblib")
    assert loaded.config_key_ == cae.config_key_
    clear_cache()  # the loaded network must compute the same embeddings itself
    np.testing.assert_array_equal(loaded.transform(paths), Z)
    assert cache_info()["encoded"] == 40
    np.testing.assert_array_equal(loaded.inverse_transform(Z), cae.inverse_transform(Z))
    assert loaded.history_ == cae.history_


@pytest.mark.slow
def test_unpickles_in_a_fresh_process(paths, tmp_path):
    # the torch classes are defined on first use: unpickling must define them too
    cae = _small().fit(paths)
    joblib.dump(cae, tmp_path / "cae.joblib")
    np.save(tmp_path / "expected.npy", cae.transform(paths))
    code = (
        "import sys, joblib, numpy as np; "
        "cae = joblib.load(sys.argv[1]); "
        "Z = cae.transform(list(sys.argv[3:])); "
        "np.testing.assert_array_equal(Z, np.load(sys.argv[2])); print('same')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, tmp_path / "cae.joblib", tmp_path / "expected.npy", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "same"


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a CPU-only machine")
def test_gpu_fitted_encoder_runs_on_cpu_only_machine(paths):
    cae = _small().fit(paths)
    Z = cae.transform(paths)
    cae.device_ = "cuda"  # as if fitted on a GPU: module_ and net_ are on the CPU anyway
    loaded = pickle.loads(pickle.dumps(cae))
    clear_cache()
    np.testing.assert_array_equal(loaded.transform(paths), Z)
    assert loaded.reconstruct(paths[:2]).shape == (2, 16, 16, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_leaves_everything_on_cpu(paths):
    cae = _small(device="cuda").fit(paths)
    assert cae.device_ == "cuda" and cae.net_.device == "cpu"
    assert all(p.device.type == "cpu" for p in cae.module_.parameters())
    for state in cae.net_.optimizer_.state.values():
        assert all(v.device.type == "cpu" for v in state.values() if torch.is_tensor(v))
    Z = cae.transform(paths)
    loaded = pickle.loads(pickle.dumps(cae))
    clear_cache()
    np.testing.assert_allclose(loaded.transform(paths), Z, atol=1e-5)


def test_same_random_state_same_embeddings(paths):
    first = _small(random_state=7, cache=False).fit(paths)
    second = _small(random_state=7, cache=False).fit(paths)
    other = _small(random_state=8, cache=False).fit(paths)
    assert first.config_key_ == second.config_key_ != other.config_key_
    np.testing.assert_array_equal(first.transform(paths), second.transform(paths))
    assert np.abs(first.transform(paths) - other.transform(paths)).max() > 1e-3


def test_augment_changes_training_reproducibly(paths):
    plain = _small().fit(paths)
    augmented = _small(augment=True).fit(paths)
    again = _small(augment=True).fit(paths)
    assert augmented.config_key_ == again.config_key_ != plain.config_key_


def test_seeding_leaves_global_rng_alone(paths):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _small(random_state=0).fit(paths)
    np.testing.assert_array_equal(torch.rand(3), expected)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", torch.optim.RMSprop])
def test_optimizers(paths, optimizer, monkeypatch):
    from skinfuse._nn import training

    seen = {}

    def spy(net):  # the optimizer is dropped when the net is trimmed: look before
        seen["optimizer"] = net.optimizer_
        return finish_training(net)

    finish_training = training.finish_training
    monkeypatch.setattr(training, "finish_training", spy)
    cae = _small(optimizer=optimizer, weight_decay=1e-4).fit(paths)
    expected = {"adamw": "AdamW", "sgd": "SGD"}.get(optimizer, "RMSprop")
    assert type(seen["optimizer"]).__name__ == expected
    assert seen["optimizer"].param_groups[0]["weight_decay"] == 1e-4
    assert getattr(cae.net_, "optimizer_", None) is None  # not kept in the fitted model
    assert all(np.isfinite(cae.history_))


# -- the cache ---------------------------------------------------------------------------
def test_transform_goes_through_the_cache(paths):
    cae = _small()
    Z_fit = cae.fit_transform(paths)  # embeds the already decoded training images
    assert cache_info()["encoded"] == 40
    np.testing.assert_array_equal(cae.transform(paths), Z_fit)
    assert cache_info()["encoded"] == 40 and cache_info()["hits"] == 40
    clone(cae).fit(paths).transform(paths[:5])  # same seed -> same weights -> same key
    assert cache_info()["encoded"] == 40
    _small(random_state=1).fit(paths).transform(paths[:5])
    assert cache_info()["encoded"] == 45


def test_fit_transform_equals_fit_then_transform(paths):
    Z = _small(cache=False).fit_transform(paths)
    np.testing.assert_allclose(_small(cache=False).fit(paths).transform(paths), Z, atol=1e-6)


# -- errors and output -------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"image_size": 20, "channels": (8, 16, 32)},
            r"image_size=20 is not a multiple of 2\*\*len\(channels\)=8.*image_size=16 or 24",
        ),
        (
            {"channels": ()},
            r"channels must be a non-empty sequence of positive ints.*channels=\(\)",
        ),
        ({"channels": (8, 0)}, r"channels=\(8, 0\)"),
        ({"latent_dim": 0}, r"'latent_dim' parameter .* must be an int in the range \[1, inf\)"),
        ({"optimizer": "lbfgs"}, r"'optimizer' parameter"),
    ],
)
def test_bad_parameters_raise_clear_errors(paths, params, match):
    with pytest.raises(ValueError, match=match):
        _small(**params).fit(paths)


def test_decoding_with_workers(paths, tmp_path):
    # a DataLoader worker decodes the same pixels as the main process
    in_process = _small(num_workers=0).fit(paths)
    with_workers = _small(num_workers=1).fit(paths)
    assert with_workers.config_key_ == in_process.config_key_
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode image file .*broken\.png"):
        _small(num_workers=1).fit([*paths, str(broken)])


def test_needs_two_images(paths):
    with pytest.raises(ValueError, match=r"at least 2 images.*n_samples=1"):
        _small().fit(paths[:1])


def test_inverse_transform_checks_width(paths):
    cae = _small().fit(paths)
    with pytest.raises(ValueError, match=r"X has 3 features .* latent_dim=4"):
        cae.inverse_transform(np.zeros((2, 3)))


def test_multi_features_append_pooled_block_maps(paths):
    latent = _small().fit(paths)
    multi = _small(features="multi").fit(paths)  # same seed: the same network
    Z, M = latent.transform(paths), multi.transform(paths)
    assert M.shape == (len(paths), 4 + 2 * (8 + 16)) == (len(paths), multi.n_features_out_)
    np.testing.assert_array_equal(M[:, :4], Z)  # the bottleneck comes first
    assert len(multi.get_feature_names_out()) == M.shape[1]
    assert not multi.module_.encoder.training  # encoding leaves the network in eval mode
    # the pooled columns are the avg and max over space of each block's output
    module = multi.module_.encoder
    x = torch.from_numpy(load_images(paths[:3], size=16)[0]).permute(0, 3, 1, 2)
    with torch.no_grad():
        h1 = module.cnn[0](x.float().div(255) * 2 - 1)
        h2 = module.cnn[1](h1)
    expected = torch.cat([h1.mean((2, 3)), h1.amax((2, 3)), h2.mean((2, 3)), h2.amax((2, 3))], 1)
    np.testing.assert_allclose(M[:3, 4:], expected.numpy(), rtol=1e-4, atol=1e-5)
    # settings that change the output change the cache key; decoding uses the bottleneck
    assert multi.config_key_ != latent.config_key_
    np.testing.assert_array_equal(multi.inverse_transform(M), latent.inverse_transform(Z))
    np.testing.assert_array_equal(multi.inverse_transform(M[:, :4]), latent.inverse_transform(Z))
    with pytest.raises(ValueError, match=r"latent_dim=4 \(transform returns 52\)"):
        multi.inverse_transform(M[:, :10])


def test_missing_image_is_named(paths, tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="image file not found: .*nope.png"):
        _small().fit([*paths[:3], missing])


def test_verbose_zero_prints_nothing_and_verbose_prints_epochs(paths, capsys):
    cae = _small(verbose=0).fit(paths)
    cae.transform(paths)
    cae.score(paths)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    _small(verbose=1).fit(paths)
    out = capsys.readouterr().out
    assert "train_loss" in out and out.count("\n") >= 4
