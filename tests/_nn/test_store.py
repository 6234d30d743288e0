"""The decoded-image store, its loader, and batch augmentation on the device."""

import os

import joblib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from skinfuse._nn.augment import BatchAugment
from skinfuse._nn.data import decode_images
from skinfuse._nn.store import (
    MEMORY_BUDGET,
    StoreDataset,
    StoreLoader,
    decoded_store,
    resolve_store,
)
from skinfuse._nn.views import VIEWS, apply_view
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FineTunedCNNEncoder
from skinfuse.fusion import FusionNetClassifier

TINY = dict(
    backbone="tiny_cnn", weights=None, image_size=32, max_epochs=3, batch_size=16,
    num_workers=0, random_state=0, lr=3e-3,
)  # fmt: skip


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    return make_synthetic_lesions(
        n_samples=90, image_size=32, n_classes=3, random_state=0,
        data_dir=tmp_path_factory.mktemp("store"),
    )  # fmt: skip


# -- batch augmentation -----------------------------------------------------------------------
def test_batch_augment_without_crop_or_colour_is_one_of_the_eight_symmetries():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    out = BatchAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    unit = x.float() / 255
    hits = []
    for img, src in zip(out, unit):
        match = [v for v in VIEWS if torch.allclose(img, apply_view(src, v), atol=1e-5)]
        assert len(match) == 1
        hits.append(match[0])
    assert len(set(hits)) == 8  # every symmetry drawn, each image its own draw


def test_batch_augment_draws_per_image_and_stays_in_range():
    torch.manual_seed(0)
    x = torch.linspace(0, 1, 16 * 16).reshape(1, 1, 16, 16).expand(32, 3, 16, 16).contiguous()
    out = BatchAugment()(x)
    assert out.min() >= 0 and out.max() <= 1
    flat = out.reshape(32, -1)
    assert len({tuple(row.round(decimals=4).tolist()) for row in flat}) == 32
    # the crop stays inside the image: a constant image stays constant without colour jitter
    grey = torch.full((8, 3, 16, 16), 0.25)
    torch.testing.assert_close(BatchAugment(jitter=0.0)(grey), grey)
    # colour jitter: brightness factors in [0.8, 1.2] (then contrast/saturation of grey: none)
    scaled = BatchAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0))(grey)
    means = scaled.mean(dim=(1, 2, 3))
    assert means.min() >= 0.2 - 1e-6 and means.max() <= 0.3 + 1e-6 and means.std() > 0.005


def test_batch_augment_is_seeded_by_torch():
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(3)
    a = BatchAugment()(x)
    torch.manual_seed(3)
    torch.testing.assert_close(BatchAugment()(x), a)


# -- the store --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_store_holds_the_decoded_images(lesions, mode, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    items = list(lesions.data["image_path"][:20])
    expected = decode_images(items, 24, batch_size=8, num_workers=0)
    with decoded_store(items, 24, mode, batch_size=8, num_workers=0) as pixels:
        torch.testing.assert_close(pixels, expected, rtol=0, atol=0)
        assert len(os.listdir(tmp_path)) == (mode == "disk")
    assert os.listdir(tmp_path) == []  # the memory-mapped file is removed


def test_store_loader_yields_the_batches_of_a_dataloader():
    y = np.arange(50)
    store = StoreDataset(torch.zeros(50, 3, 2, 2, dtype=torch.uint8), np.arange(50), y=y)
    ours = StoreLoader(
        store, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5)
    )
    torch_loader = DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(y)), batch_size=16, shuffle=True,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    for _ in range(2):  # two epochs: the generators advance alike
        got = [batch_y.tolist() for _, batch_y in ours]
        want = [batch[0].tolist() for batch in torch_loader]
        assert got == want
    assert len(StoreLoader(store, batch_size=16, drop_last=True)) == 3


def test_resolve_store():
    assert resolve_store("auto", "cpu", True, 10_000, 224) is None  # nothing changes on CPU
    assert resolve_store("auto", "cuda", True, 10_000, 224) == "memory"
    too_many = MEMORY_BUDGET // (3 * 224**2) + 1
    assert resolve_store("auto", "cuda", True, too_many, 224) == "disk"
    assert resolve_store("auto", "cuda", lambda img: img, 10, 224) is None
    assert resolve_store("memory", "cpu", True, 10, 224) == "memory"
    assert resolve_store(None, "cuda", True, 10, 224) is None


# -- the estimators on the store --------------------------------------------------------------
def test_store_without_augmentation_trains_the_same_network(lesions):
    """Same decoded pixels, same batches, same random stream: the same weights."""
    X, y = lesions.data, lesions.target
    params = {**TINY, "augment": False, "validation_fraction": 0.2, "patience": 2}
    a = FusionNetClassifier(**params, image_store=None).fit(X, y)
    b = FusionNetClassifier(**params, image_store="memory").fit(X, y)
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=0, atol=1e-6)
    assert [h["valid_loss"] for h in b.history_] == pytest.approx(
        [h["valid_loss"] for h in a.history_], abs=1e-6
    )


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_store_with_batch_augmentation_learns_and_saves(lesions, mode, tmp_path):
    import skinfuse

    X, y = lesions.data, lesions.target
    net = FusionNetClassifier(**{**TINY, "max_epochs": 6}, image_store=mode, augment=True,
                              validation_fraction=0.0).fit(X, y)  # fmt: skip
    assert net.score(X, y) > y.value_counts(normalize=True).max() + 0.1
    assert net.net_.batch_transform is None and net.net_.iterator_valid is DataLoader
    joblib.dump(net, tmp_path / "net.joblib")
    skinfuse.save(net, tmp_path / "net.skops")
    loaded = skinfuse.load(tmp_path / "net.skops")
    np.testing.assert_allclose(loaded.predict_proba(X), net.predict_proba(X), atol=1e-6)


def test_fine_tuned_encoder_on_the_store_with_a_callable_augment(lesions):
    X, y = lesions.data["image_path"], lesions.target
    calls = []

    def flip(img):
        calls.append(img.shape)
        return img.flip(-1)

    encoder = FineTunedCNNEncoder(**{**TINY, "max_epochs": 1}, image_store="memory",
                                  augment=flip, validation_fraction=0.0)  # fmt: skip
    emb = encoder.fit(X, y).transform(X)
    assert emb.shape == (90, encoder.n_features_out_) and np.isfinite(emb).all()
    assert calls and calls[0] == (3, 32, 32)  # one image at a time, on the device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_store_lives_on_the_gpu_and_the_fitted_net_on_the_cpu(lesions, monkeypatch):
    from skinfuse._nn import store

    devices, real = [], store.StoreDataset.__init__

    def spy(self, pixels, rows, **kwargs):
        devices.append(pixels.device.type)
        real(self, pixels, rows, **kwargs)

    monkeypatch.setattr(store.StoreDataset, "__init__", spy)
    X, y = lesions.data, lesions.target
    net = FusionNetClassifier(**TINY, device="cuda", augment=True, validation_fraction=0.2,
                              patience=2).fit(X, y)  # fmt: skip
    assert devices == ["cuda", "cuda"]  # training and validation rows of one store
    assert next(net.module_.parameters()).device.type == "cpu"
    assert np.isfinite(net.predict_proba(X)).all()
