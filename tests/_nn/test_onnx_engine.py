"""onnxruntime computing the frozen trunk of partial fine-tuning (``skinfuse.set_config(engine=)``)."""

import numpy as np
import pytest
import torch

import skinfuse
from skinfuse._nn import onnx_engine
from skinfuse._nn.modules import ClassifierNetwork
from skinfuse._nn.onnx_engine import resolve_engine
from skinfuse._nn.partial import split_network, trunk_key, view_activations
from skinfuse.encoders import cache_info
from skinfuse.fusion import FusionNetClassifier

needs_ort = pytest.mark.skipif(
    not onnx_engine.onnxruntime_available(), reason="onnxruntime / onnxscript not installed"
)
TINY = dict(backbone="tiny_cnn", weights=None, image_size=32, random_state=0, max_epochs=1,
            trainable_blocks=1, cached_views=2, validation_fraction=0)  # fmt: skip


def test_config_is_set_read_and_restored():
    assert skinfuse.get_config() == {"engine": "auto"}
    with skinfuse.config_context(engine="torch"):
        assert skinfuse.get_config()["engine"] == "torch"
        with skinfuse.config_context(engine="onnxruntime"):
            assert skinfuse.get_config()["engine"] == "onnxruntime"
        assert skinfuse.get_config()["engine"] == "torch"
    assert skinfuse.get_config()["engine"] == "auto"
    with pytest.raises(ValueError, match="engine must be one of"):
        skinfuse.set_config(engine="tensorrt")


def test_engine_resolution(monkeypatch):
    monkeypatch.setattr(onnx_engine, "onnxruntime_available", lambda: True)
    assert resolve_engine("cpu", "fp32") == "onnxruntime"
    # auto: the export pays for itself on many images only (a fit, a large prediction)
    assert resolve_engine("cpu", "fp32", onnx_engine.AUTO_MIN_IMAGES) == "onnxruntime"
    assert resolve_engine("cpu", "fp32", 16) == "torch"
    with skinfuse.config_context(engine="onnxruntime"):
        assert resolve_engine("cpu", "fp32", 16) == "onnxruntime"
    assert resolve_engine("cpu", "bf16") == "torch"  # onnxruntime runs fp32 only
    assert resolve_engine("cuda", "fp32") == "torch"
    with skinfuse.config_context(engine="torch"):
        assert resolve_engine("cpu", "fp32") == "torch"
    monkeypatch.setattr(onnx_engine, "onnxruntime_available", lambda: False)
    assert resolve_engine("cpu", "fp32") == "torch"  # auto: PyTorch where it is missing
    with skinfuse.config_context(engine="onnxruntime"):
        with pytest.raises(ImportError, match=r"pip install \"skinfuse\[onnx\]\""):
            resolve_engine("cpu", "fp32")


def _trunk_activations(engine, views=("identity", "rot90"), dtype=torch.uint8):
    torch.manual_seed(0)
    net = ClassifierNetwork("tiny_cnn", weights=None, n_classes=3, image_size=32)
    trunk, _, _ = split_network(net, 1, 32)
    images = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
              for i in range(11)]  # fmt: skip

    def fill(items, encode, _view, *, out, keep):  # no cache
        out[:] = encode(items)

    with view_activations(
        images, trunk, list(views), cached=fill, image_size=32, batch_size=4, device="cpu",
        engine=engine, key=trunk_key(trunk, "tiny"), dtype=np.float32,
    ) as acts:  # fmt: skip
        return np.array(acts)


@needs_ort
def test_onnxruntime_activations_are_pytorchs():
    want = _trunk_activations("torch")
    got = _trunk_activations("onnxruntime")  # batches of 4, 4 and 3: the batch axis is dynamic
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(got[0], got[1])  # the views are views


@needs_ort
def test_an_export_that_fails_falls_back_to_pytorch_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(onnx_engine, "_SESSIONS", type(onnx_engine._SESSIONS)())
    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.warns(RuntimeWarning, match="could not be exported to ONNX.*no exporter"):
        got = _trunk_activations("onnxruntime")
    np.testing.assert_array_equal(got, _trunk_activations("torch"))


@needs_ort
def test_each_engine_caches_its_own_activations_and_predictions_agree(lesions):
    X, y = lesions.data, lesions.target
    with skinfuse.config_context(engine="torch"):
        eager = FusionNetClassifier(**TINY).fit(X, y)
    encoded = cache_info()["encoded"]
    assert encoded == 2 * len(X)
    with skinfuse.config_context(engine="onnxruntime"):
        fast = FusionNetClassifier(**TINY).fit(X, y)
        assert cache_info()["encoded"] == 2 * encoded  # not PyTorch's cache
        proba = fast.predict_proba(X)
        assert cache_info()["encoded"] == 2 * encoded  # prediction reads the fit's cache
    np.testing.assert_allclose(proba, eager.predict_proba(X), atol=1e-4)


@needs_ort
def test_encoder_embeddings_by_onnxruntime_are_pytorchs(lesions):
    from skinfuse.encoders import FrozenCNNEncoder

    X = lesions.data[["image_path"]]
    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32).fit(X)
    want = encoder.transform(X)
    with skinfuse.config_context(engine="onnxruntime"):
        got = encoder.transform(X)
    assert cache_info()["encoded"] == 2 * len(X)  # its own cache key
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
