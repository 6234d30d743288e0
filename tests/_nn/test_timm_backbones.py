"""Backbones by timm name ("timm:<model>", "hf-hub:<org>/<name>"): preprocessing from the
model's pretrained_cfg, weights from a local file, saved and rebuilt offline.

timm's smallest test architectures (``test_convnext``: a few thousand parameters, whose
pretrained_cfg has mean = std = (0.5, 0.5, 0.5), not ImageNet's); no network anywhere.
"""

import socket

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from sklearn.utils._param_validation import InvalidParameterError

import skinfuse
from skinfuse.encoders import FineTunedCNNEncoder, FrozenCNNEncoder
from skinfuse.explain import grad_cam
from skinfuse.fusion import FusionNetClassifier

NAME = "timm:test_convnext.r160_in1k"

# timm's tiny test models are newer than skinfuse's timm floor (the lowest-versions CI step)
pytestmark = pytest.mark.skipif(
    not timm.is_model("test_convnext"), reason=f"timm {timm.__version__} has no test_convnext"
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to reach the Hub (or anything else) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def model_and_file(tmp_path_factory):
    """A test_convnext with seeded random weights, written as safetensors."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = timm.create_model("test_convnext", pretrained=False).eval()
    path = tmp_path_factory.mktemp("weights") / "test_convnext.safetensors"
    save_file(model.state_dict(), str(path))
    return model, str(path)


def _images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_cfg_is_not_imagenet(model_and_file):
    model, _ = model_and_file
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    assert model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)


def test_embeds_exactly_as_the_model_normalised_by_hand(model_and_file):
    model, path = model_and_file
    images = _images()
    enc = FrozenCNNEncoder(NAME, weights=path, image_size=32, pooling="avg").fit(images)
    got = enc.transform(images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        want = model.forward_features((x - 0.5) / 0.5).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # ImageNet normalisation would give other embeddings: the test can fail
    with torch.inference_mode():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        imagenet = model.forward_features((x - mean) / std).mean(dim=(2, 3)).numpy()
    assert np.abs(got - imagenet).max() > 1e-3
    # the native size and the Grad-CAM layer come from the model
    assert FrozenCNNEncoder(NAME, weights=path).fit(images)._size() == 160
    assert enc.cam_layer_ == "features.model.stages.3"


def test_multi_pooling_uses_feature_info_stages(model_and_file):
    model, path = model_and_file
    images = _images(2)
    enc = FrozenCNNEncoder(NAME, weights=path, image_size=32, pooling="multi").fit(images)
    assert enc.embedder_.taps == ("model.stages.0", "model.stages.1", "model.stages.2")
    widths = [info["num_chs"] for info in model.feature_info]
    assert enc.transform(images).shape == (2, 2 * sum(widths))


def test_other_weights_other_cache_key(model_and_file, tmp_path):
    model, path = model_and_file
    images = _images(2)
    other = tmp_path / "other.safetensors"
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_file(state, str(other))
    a = FrozenCNNEncoder(NAME, weights=path, image_size=32).fit(images)
    b = FrozenCNNEncoder(NAME, weights=str(other), image_size=32).fit(images)
    assert a.config_key_ != b.config_key_
    assert not np.allclose(a.transform(images), b.transform(images))


def test_module_with_pretrained_cfg_is_normalised_with_it(model_and_file):
    model, path = model_and_file
    images = _images(3)
    by_name = FrozenCNNEncoder(NAME, weights=path, image_size=32).fit(images)
    by_module = FrozenCNNEncoder(model, image_size=32).fit(images)  # model.pretrained_cfg
    np.testing.assert_allclose(by_module.transform(images), by_name.transform(images), atol=1e-6)

    class Plain(torch.nn.Module):  # a plain module saying how it was trained
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

        def forward(self, x):
            return self.conv(x)

    plain = FrozenCNNEncoder(Plain(), image_size=32).fit(images)
    assert plain.embedder_.mean.flatten().tolist() == pytest.approx([127.5] * 3)
    assert plain.embedder_.std.flatten().tolist() == pytest.approx([63.75] * 3)


@pytest.mark.parametrize(
    "name, message",
    [
        ("timm:no_such_net", "unknown timm model 'no_such_net'"),
        ("timm:", "'timm:<model name>"),
        ("hf-hub:no-slash", "'hf-hub:<org>/<name>'"),
        ("convnext_tiny", "'timm:<model name>"),
    ],
)
def test_unknown_or_malformed_names_say_the_accepted_forms(name, message):
    with pytest.raises((ValueError, InvalidParameterError), match=message) as excinfo:
        FrozenCNNEncoder(name, weights=None, image_size=32).fit(_images(1))
    assert "efficientnet_lite0" in str(excinfo.value)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="weights checkpoint not found"):
        FrozenCNNEncoder(NAME, weights=str(tmp_path / "nope.safetensors")).fit(_images(1))


def test_trains_in_fusion_net_and_round_trips_offline(lesions, model_and_file, tmp_path):
    _, path = model_and_file
    X, y = lesions.data.iloc[:48], lesions.target[:48]
    net = FusionNetClassifier(
        backbone=NAME, weights=path, image_size=32, max_epochs=2, batch_size=16,
        validation_fraction=0.0, augment=False, num_workers=0, random_state=0,
    ).fit(X, y)  # fmt: skip
    assert len(net.history_) == 2
    # the weights file was loaded, then trained
    trained = net.module_.embedder.features.model.stem[0].weight.detach()
    assert not torch.allclose(trained, load_file(path)["stem.0.weight"])
    proba = net.predict_proba(X)
    skinfuse.save(net, tmp_path / "net.skinfuse")
    back = skinfuse.load(tmp_path / "net.skinfuse")
    assert back.backbone == NAME
    np.testing.assert_array_equal(back.predict_proba(X), proba)
    # Grad-CAM's layer is timm's last feature_info stage (a 1x1 map at 32 px: uniform maps)
    assert back.module_.cam_layer == "embedder.features.model.stages.3"
    assert np.asarray(grad_cam(back, X.iloc[:2])).shape == (2, 32, 32)


def test_finetuned_encoder_by_name_round_trips(lesions, model_and_file, tmp_path):
    _, path = model_and_file
    X, y = lesions.data["image_path"].iloc[:32], lesions.target[:32]
    enc = FineTunedCNNEncoder(
        NAME, weights=path, image_size=32, max_epochs=1, num_workers=0, random_state=0
    ).fit(X, y)
    assert enc.module_.embedder.mean.flatten().tolist() == pytest.approx([127.5] * 3)
    skinfuse.save(enc, tmp_path / "enc.skinfuse")
    back = skinfuse.load(tmp_path / "enc.skinfuse")
    np.testing.assert_array_equal(back.transform(X), enc.transform(X))
