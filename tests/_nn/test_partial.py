"""Test-time augmentation views and partial fine-tuning from cached activations."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from skinfuse._nn.fitting import class_weights
from skinfuse._nn.modules import ClassifierNetwork
from skinfuse._nn.partial import split_network
from skinfuse._nn.views import VIEWS, apply_view, check_views
from skinfuse.encoders import FineTunedCNNEncoder, FrozenCNNEncoder, cache_info
from skinfuse.fusion import FusionNetClassifier

TINY = dict(backbone="tiny_cnn", weights=None, image_size=32, random_state=0)


def test_the_eight_views_are_the_symmetries_of_the_square():
    x = torch.arange(9.0).view(1, 3, 3)
    seen = {tuple(apply_view(x, v).flatten().tolist()) for v in VIEWS}
    assert len(seen) == 8  # all distinct
    assert torch.equal(apply_view(x, "hflip"), x.flip(-1))
    assert torch.equal(apply_view(x, "rot90"), torch.rot90(x, 1, dims=(-2, -1)))
    # each view is a permutation of the pixels
    for v in VIEWS:
        assert sorted(apply_view(x, v).flatten().tolist()) == list(range(9))


@pytest.mark.parametrize("bad", [0, 9, 2.5, True, "4"])
def test_a_number_of_views_outside_1_to_8_is_refused(bad):
    with pytest.raises(ValueError, match="number of views"):
        check_views(bad)


def test_sqrt_class_weights_are_the_root_of_balanced():
    y = np.array([0] * 8 + [1] * 2)
    balanced = class_weights("balanced", np.array([0, 1]), y)
    np.testing.assert_allclose(class_weights("sqrt", np.array([0, 1]), y), np.sqrt(balanced))


@pytest.mark.parametrize("k", [1, 2])
def test_trunk_then_top_compute_the_whole_network(k):
    torch.manual_seed(0)
    net = ClassifierNetwork("tiny_cnn", weights=None, n_classes=3, image_size=32).eval()
    trunk, top, shape = split_network(net, k, 32)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        staged = top(trunk(x).view(4, *shape))
        assert torch.allclose(staged, net.embedder(x), atol=1e-6)


def test_trainable_blocks_out_of_range_says_how_many_stages_there_are():
    net = ClassifierNetwork("tiny_cnn", weights=None, n_classes=3, image_size=32)
    with pytest.raises(ValueError, match=r"3 stages.*from 1.*to 2"):
        split_network(net, 3, 32)


class _Residual(nn.Module):
    """Stages that are not run one after the other: the input is added back at the end."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x)) + x


def test_a_backbone_that_is_not_a_chain_of_stages_is_refused_clearly():
    net = ClassifierNetwork(_Residual(), n_classes=2, image_size=16)
    with pytest.raises(ValueError, match="one after the other.*freeze="):
        split_network(net, 1, 16)


@pytest.fixture(scope="module")
def partial_fit(lesions):
    before = ClassifierNetwork("tiny_cnn", weights=None, n_classes=4, image_size=32)
    net = FusionNetClassifier(
        **TINY, max_epochs=3, trainable_blocks=1, cached_views=2, validation_fraction=0.2
    ).fit(lesions.data, lesions.target)
    return net, before


def test_partial_fine_tuning_trains_only_the_last_stages(partial_fit):
    net, _ = partial_fit
    assert net.module_.frozen == ["embedder.features.0", "embedder.features.1"]
    trainable = {n for n, p in net.module_.named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith(("embedder.features.0", "embedder.features.1"))
                             for n in trainable)  # fmt: skip
    assert "head.weight" in trainable and "metadata.0.weight" in trainable


def test_partial_predictions_are_those_of_the_whole_network(partial_fit, lesions):
    """Predicting from cached activations gives what the whole network gives on the images."""
    from skinfuse._nn.inference import embed

    net, _ = partial_fit
    X = lesions.data
    proba = net.predict_proba(X)
    logits = embed(
        net.module_, list(X["image_path"]), 32, batch_size=32, device="cpu",
        metadata=net._metadata_matrix(X, len(X)),
    )  # fmt: skip
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_activations_are_computed_once_per_image_and_view(lesions):
    X, y = lesions.data, lesions.target
    params = dict(**TINY, max_epochs=1, trainable_blocks=1, cached_views=2, validation_fraction=0)
    FusionNetClassifier(**params).fit(X, y)
    encoded = cache_info()["encoded"]
    assert encoded == 2 * len(X)  # two views of every image
    net = FusionNetClassifier(**{**params, "max_epochs": 2}).fit(X, y)  # another candidate
    net.predict_proba(X)  # test-time: the cached identity view
    assert cache_info()["encoded"] == encoded


def test_partial_fit_is_reproducible_and_tta_averages_views(lesions):
    X, y = lesions.data, lesions.target
    params = dict(**TINY, max_epochs=2, trainable_blocks=2, validation_fraction=0)
    a = FusionNetClassifier(**params, tta=4).fit(X, y)
    b = FusionNetClassifier(**params, tta=4).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    views = [a.set_params(tta=1).predict_proba(X)]
    # the tta=4 mean is the mean of the four views' probabilities
    logits = a.set_params(tta=4)._view_logits(X)
    assert logits.shape == (4, len(X), 4)
    single = torch.softmax(torch.from_numpy(logits), dim=2).numpy()
    np.testing.assert_allclose(single[0], views[0], atol=1e-12)
    np.testing.assert_allclose(a.predict_proba(X), single.mean(axis=0), atol=1e-12)


def test_soft_voting_of_seeds_is_the_mean_of_the_members(lesions):
    """The seed ensemble of docs/results.md: VotingClassifier fits each network on its own
    (integer-encoded labels, class weights computed by the network) and averages them, so
    benchmarks/soft_voting.py's mean of saved out-of-fold probabilities is what it scores."""
    from sklearn.ensemble import VotingClassifier

    X, y = lesions.data, np.asarray(lesions.target).astype(str)
    params = dict(TINY, max_epochs=2, trainable_blocks=1, class_weight="sqrt",
                  validation_fraction=0)  # fmt: skip
    members = [FusionNetClassifier(**{**params, "random_state": s}) for s in (0, 1)]
    vote = VotingClassifier([("a", members[0]), ("b", members[1])], voting="soft").fit(X, y)
    alone = [clone(m).fit(X, y).predict_proba(X) for m in members]
    assert not np.allclose(alone[0], alone[1])  # the seeds differ
    np.testing.assert_allclose(vote.predict_proba(X), np.mean(alone, axis=0), atol=1e-6)
    assert set(vote.predict(X)) <= set(y)


def test_label_smoothing_reaches_the_loss(lesions):
    net = FusionNetClassifier(**TINY, max_epochs=1, label_smoothing=0.1, trainable_blocks=1,
                              validation_fraction=0).fit(lesions.data, lesions.target)  # fmt: skip
    assert net.net_.criterion_.label_smoothing == pytest.approx(0.1)


def test_frozen_tta_is_the_mean_embedding_of_the_views():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    plain = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32).fit(images)
    mirrored = plain.transform(np.ascontiguousarray(images[:, :, ::-1]))
    tta = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32, tta=2).fit(images)
    np.testing.assert_allclose(
        tta.transform(images), (plain.transform(images) + mirrored) / 2, rtol=1e-5, atol=1e-6
    )


def test_partially_fine_tuned_encoder_cross_fits_from_cached_activations(lesions):
    X, y = lesions.data[["image_path"]], lesions.target
    enc = FineTunedCNNEncoder(**TINY, max_epochs=2, trainable_blocks=1, cross_fit=2,
                              validation_fraction=0, cached_views=2, tta=2)  # fmt: skip
    out = enc.fit_transform(X, y)
    assert out.shape == (len(X), 64) and np.isfinite(out).all()
    # the trunk ran once per image and view (the folds and the test-time views reuse it);
    # the final network's embeddings of the two views are cached too
    assert cache_info()["encoded"] == 2 * len(X) + 2 * len(X)
    np.testing.assert_allclose(enc.transform(X), enc.transform(X))
    assert enc.predict_proba(X).shape == (len(X), 4)


def test_predicting_leaves_the_fitted_network_untouched(partial_fit, lesions):
    """Regression: a wrapper in training mode (a view, the trunk) once put the fitted network
    back in training mode after a prediction, so the next one updated its batch-norm
    statistics."""
    net, _ = partial_fit
    X = lesions.data
    state = {k: v.clone() for k, v in net.module_.state_dict().items()}
    try:
        first = net.set_params(tta=2).predict_proba(X)
        assert not any(m.training for m in net.module_.modules())
        np.testing.assert_array_equal(net.predict_proba(X), first)
    finally:
        net.set_params(tta=1)
    for k, v in net.module_.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_partial_model_saves_as_a_safe_model_file_and_predicts_the_same(partial_fit, lesions,
                                                                        tmp_path):  # fmt: skip
    import skinfuse
    from skinfuse._nn.partial import split_network, trunk_key

    net, _ = partial_fit
    path = tmp_path / "partial.skinfuse"
    skinfuse.save(net, path)
    loaded = skinfuse.load(path)
    X = lesions.data
    np.testing.assert_allclose(loaded.predict_proba(X), net.predict_proba(X), atol=1e-6)
    assert loaded.module_.frozen == net.module_.frozen
    # the activations' cache key depends on the frozen part only: the same after loading
    keys = [
        trunk_key(split_network(m.module_, 1, 32, check=False)[0], m.backbone)
        for m in (net, loaded)
    ]
    assert keys[0] == keys[1]


def test_trunk_key_is_the_same_before_and_after_training(lesions):
    from skinfuse._nn.partial import split_network, trunk_key

    torch.manual_seed(0)
    before = ClassifierNetwork("tiny_cnn", weights=None, n_classes=4, image_size=32)
    torch.manual_seed(0)
    net = ClassifierNetwork("tiny_cnn", weights=None, n_classes=4, image_size=32)
    with torch.no_grad():
        net.embedder.features[2][0].weight.add_(1.0)  # the trainable last stage changes
    key = [trunk_key(split_network(m, 1, 32, check=False)[0], "tiny_cnn") for m in (before, net)]
    assert key[0] == key[1]
    with torch.no_grad():
        net.embedder.features[0][0].weight.add_(1.0)  # a frozen stage changes: a new key
    assert trunk_key(split_network(net, 1, 32, check=False)[0], "tiny_cnn") != key[0]


def test_jitter_is_fixed_per_image_and_changes_colour_and_scale():
    from skinfuse._nn.views import jitter, jittered

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=gen)
    a = jitter(x)
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert 0 <= a.min() and a.max() <= 1
    # an image's jitter depends on its pixels only: alone, in another batch, as float
    torch.testing.assert_close(jitter(x[2:3]), a[2:3])
    torch.testing.assert_close(jitter(x.flip(0)), a.flip(0))
    torch.testing.assert_close(jitter(x.float() / 255), a, atol=1e-5, rtol=0)
    assert not torch.allclose(a, x.float() / 255, atol=0.02)
    assert jittered(("identity", "hflip", "vflip")) == ("identity", "hflip+jitter", "vflip+jitter")


def test_view_jitter_caches_its_own_views_and_changes_training(lesions):
    X, y = lesions.data, lesions.target
    params = dict(**TINY, max_epochs=2, trainable_blocks=1, cached_views=2,
                  validation_fraction=0)  # fmt: skip
    plain = FusionNetClassifier(**params).fit(X, y)
    encoded = cache_info()["encoded"]
    jit = FusionNetClassifier(**params, view_jitter=True).fit(X, y)
    assert cache_info()["encoded"] == encoded + len(X)  # the jittered flip only
    assert not np.allclose(plain.predict_proba(X), jit.predict_proba(X))
    # prediction sees the images as they are: the same cached identity view
    assert cache_info()["encoded"] == encoded + len(X)


def test_view_jitter_without_trainable_blocks_warns(lesions):
    net = FusionNetClassifier(**TINY, max_epochs=1, view_jitter=True)
    with pytest.warns(UserWarning, match="view_jitter is only used with trainable_blocks"):
        net.fit(lesions.data, lesions.target)
