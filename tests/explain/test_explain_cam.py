import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from conftest import SIZE, PairCNNClassifier, lesion_focus, pair_of, randomized
from skinfuse.encoders import FrozenCNNEncoder, cache_info
from skinfuse.explain import grad_cam
from skinfuse.explain._sources import PipelineSource, image_batch
from skinfuse.images import load_images
from skinfuse.pipeline import make_fusion_pipeline

# Measured on 40 unseen 32-px lesions (lesion area 17% of the image), torch 2.14 CPU:
# the trained CNN puts 39-53% of its Grad-CAM mass inside the lesion (median mean-heat
# ratio inside/outside 4.6-8.2 over 5 training seeds); the fusion pipeline on its conv
# stack 47% (ratio 4.9), Score-CAM on a random forest 42% (2.8), occlusion 61% (36).
# Randomized copies (5 draws) average 15% inside: chance level.
MIN_SHARE_ABOVE_AREA = 0.15
MIN_RATIO = 2.5


def _fusion(pair_cnn, classifier, **kwargs):
    """A fusion pipeline whose frozen encoder is the trained conv stack of ``pair_cnn``."""
    encoder = FrozenCNNEncoder(
        pair_cnn.net_[0].features, weights=None, image_size=SIZE, batch_size=64
    )
    return make_fusion_pipeline(encoder, classifier=classifier, sampler=None, **kwargs)


def _fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant (dead ReLU) features, MLP convergence
        return model.fit(X, y)


@pytest.fixture(scope="module")
def fusion_logreg(pair_cnn, lesions):
    model = _fusion(pair_cnn, LogisticRegression(max_iter=500), select_k=20)
    return _fit_quietly(model, lesions.data, lesions.target)


@pytest.fixture(scope="module")
def fusion_forest(pair_cnn, lesions):
    forest = RandomForestClassifier(n_estimators=30, max_depth=5, n_jobs=1, random_state=0)
    return _fit_quietly(_fusion(pair_cnn, forest), lesions.data, lesions.target)


def _check_maps(heat, n):
    assert heat.shape == (n, SIZE, SIZE) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    # each map is scaled to its own maximum, and is not flat
    np.testing.assert_allclose(heat.max(axis=(1, 2)), 1.0, atol=1e-3)
    assert (heat.std(axis=(1, 2)) > 0.05).all()


def _no_hooks(module):
    return all(
        not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        for m in module.modules()
    )


# -- sanity checks: a trained CNN looks at the lesion, a randomized one does not ----------


def test_trained_cnn_looks_inside_the_lesion_and_randomized_does_not(pair_cnn, unseen):
    X, masks = unseen.data, unseen.masks
    assert (pair_cnn.predict(X) == pair_of(unseen.target)).mean() >= 0.9  # it is trained
    heat = grad_cam(pair_cnn, X)
    _check_maps(heat, len(X))
    share, ratio = lesion_focus(heat, masks)
    area = masks.mean()
    assert share > area + MIN_SHARE_ABOVE_AREA and ratio > MIN_RATIO, (share, area, ratio)
    shares = [lesion_focus(grad_cam(randomized(pair_cnn, s), X), masks)[0] for s in range(5)]
    assert np.mean(shares) < area + 0.05 < share, (shares, area)


def test_fusion_pipeline_gradcam_looks_inside_the_lesion(fusion_logreg, unseen):
    heat = grad_cam(fusion_logreg, unseen.data)
    _check_maps(heat, len(unseen.data))
    share, ratio = lesion_focus(heat, unseen.masks)
    assert share > unseen.masks.mean() + MIN_SHARE_ABOVE_AREA and ratio > MIN_RATIO


@pytest.mark.parametrize("method", ["auto", "scorecam", "occlusion"])
def test_gradient_free_methods_on_a_random_forest(fusion_forest, unseen, method):
    X, masks = unseen.data.iloc[:8], unseen.masks[:8]
    heat = grad_cam(fusion_forest, X, method=method)
    _check_maps(heat, 8)
    if method == "auto":  # Score-CAM is picked: same maps
        np.testing.assert_allclose(heat, grad_cam(fusion_forest, X, method="scorecam"))
    share, ratio = lesion_focus(heat, masks)
    assert share > masks.mean() + MIN_SHARE_ABOVE_AREA and ratio > 1.5, (share, ratio)


def test_batched_score_cam_matches_pytorch_grad_cam(pair_cnn, unseen):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from skinfuse.explain._torch_cam import BatchedScoreCAM

    module = copy.deepcopy(pair_cnn.net_).eval()
    layer = module.get_submodule("0.features.6")
    images, _ = load_images(unseen.data["image_path"].iloc[:2], size=SIZE)
    predicted = pair_cnn.predict_proba(unseen.data.iloc[:2]).argmax(axis=1)
    targets = [ClassifierOutputTarget(int(t)) for t in predicted]
    maps = []
    for cam in (ScoreCAM(module, [layer]), BatchedScoreCAM(module, [layer], batch_size=5)):
        try:
            maps.append(cam(input_tensor=image_batch(images), targets=targets))
        finally:
            cam.activations_and_grads.release()
    assert maps[0].shape == (2, SIZE, SIZE) and maps[0].std() > 0.05
    np.testing.assert_allclose(maps[1], maps[0], rtol=1e-4, atol=1e-5)


# -- the torch head is the pipeline ---------------------------------------------------------


@pytest.mark.parametrize(
    "classifier, binary, kwargs",
    [
        (LogisticRegression(max_iter=500), False, dict(select_k=20)),
        (LogisticRegression(max_iter=500, C=0.5), True, {}),
        (MLPClassifier((16,), max_iter=200, random_state=0), False, dict(select_k=30)),
        (MLPClassifier((8, 8), activation="tanh", max_iter=200, random_state=0), True, {}),
    ],
    ids=["logreg", "logreg-binary", "mlp", "mlp-tanh-binary"],
)
def test_torch_head_reproduces_the_pipeline(pair_cnn, lesions, unseen, classifier, binary, kwargs):
    y = pair_of(lesions.target) if binary else lesions.target
    model = _fit_quietly(_fusion(pair_cnn, classifier, **kwargs), lesions.data, y)
    X = unseen.data.iloc[:12]
    source = PipelineSource(model, X)
    assert source.differentiable, source.why_not
    module, layer, size, classes = source.module(np.arange(12))
    assert size == SIZE and layer == "features.6" and list(classes) == list(model.classes_)
    with torch.no_grad():
        logits = module(image_batch(source.images)).numpy()
    proba = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-4, atol=1e-6)
    if hasattr(model, "decision_function"):
        decision = model.decision_function(X)
        got = logits[:, 1] - logits[:, 0] if binary else logits
        np.testing.assert_allclose(got, decision, rtol=1e-4, atol=1e-5)
    # a one-case module broadcasts that case's metadata over any batch
    one, *_ = source.module([3])
    with torch.no_grad():
        out = one(image_batch(source.images[[3, 3, 3]])).numpy()
    np.testing.assert_allclose(out, np.repeat(logits[[3]], 3, axis=0), rtol=1e-5, atol=1e-6)


def test_forest_head_is_not_differentiable(fusion_forest, unseen):
    source = PipelineSource(fusion_forest, unseen.data.iloc[:3])
    assert not source.differentiable and "RandomForestClassifier" in source.why_not
    with pytest.raises(ValueError, match="needs gradients.*RandomForestClassifier"):
        grad_cam(fusion_forest, unseen.data.iloc[:3], method="gradcam")


def test_images_targets_and_layers(fusion_logreg, pair_cnn, unseen):
    X = unseen.data.iloc[:6]
    heat, images = grad_cam(fusion_logreg, X, return_images=True)
    expected, _ = load_images(X["image_path"], size=SIZE)
    np.testing.assert_array_equal(images, expected)
    # target=None explains the predicted class
    predicted = fusion_logreg.predict(X)
    np.testing.assert_allclose(grad_cam(fusion_logreg, X, target=predicted), heat, atol=1e-6)
    other = np.where(predicted == "akiec", "df", "akiec")
    assert np.abs(grad_cam(fusion_logreg, X, target=other) - heat).max() > 0.2
    one = grad_cam(fusion_logreg, X, target="bkl")
    _check_maps(one, 6)
    # another layer of the CNN, by dotted name (inside the encoder's embedder_)
    early = grad_cam(fusion_logreg, X, layer="features.3")
    _check_maps(early, 6)
    assert np.abs(early - heat).max() > 0.1
    # the protocol: a layer inside the estimator's module; other gradient methods
    for method in ("gradcam++", "hirescam", "xgradcam", "layercam"):
        _check_maps(grad_cam(pair_cnn, X, method=method, layer="0.features.3"), 6)


def test_embeddings_are_not_recomputed(fusion_logreg, unseen):
    X = unseen.data.iloc[:10]
    fusion_logreg.predict(X)
    encoded = cache_info()["encoded"]
    grad_cam(fusion_logreg, X)
    assert cache_info()["encoded"] == encoded


# -- the caller's modules come back as they were ---------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "occlusion"])
@pytest.mark.parametrize("training", [True, False])
def test_modes_grads_and_hooks_are_restored(pair_cnn, unseen, method, training):
    est = copy.deepcopy(pair_cnn)
    est.net_.train(training)
    est.net_[0].features[1].train(not training)  # mixed modes survive too
    modes = [m.training for m in est.net_.modules()]
    bias = est.net_[1].bias
    bias.grad = kept = torch.full_like(bias, 7.0)
    grad_cam(est, unseen.data.iloc[:2], method=method)
    assert [m.training for m in est.net_.modules()] == modes
    assert _no_hooks(est.net_)
    assert bias.grad is kept and torch.all(kept == 7.0)
    assert all(p.grad is None for p in est.net_.parameters() if p is not bias)


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_pipeline_encoder_is_left_untouched(fusion_logreg, unseen, method):
    embedder = fusion_logreg.named_steps["features"].named_transformers_["image"].embedder_
    state = {k: v.clone() for k, v in embedder.state_dict().items()}
    assert not embedder.training
    grad_cam(fusion_logreg, unseen.data.iloc[:3], method=method)
    assert not any(m.training for m in embedder.modules())
    assert _no_hooks(embedder) and all(p.grad is None for p in embedder.parameters())
    for k, v in embedder.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_hooks_are_released_when_the_model_fails(pair_cnn, unseen):
    class Broken(PairCNNClassifier):
        def __skinfuse_gradcam__(self, X):
            module, layer, size, _ = super().__skinfuse_gradcam__(X)
            return module, layer, size, np.array(["a", "b", "c"])  # 3 classes, 2 logits

    est = copy.deepcopy(pair_cnn)
    broken = Broken()
    broken.__dict__.update(est.__dict__)
    with pytest.raises(IndexError) as info:
        grad_cam(broken, unseen.data.iloc[:2], target="c")
    # the traceback (alive in ``info``) keeps the CAM object alive: its __del__ cannot help
    assert info.traceback is not None
    assert _no_hooks(broken.net_) and all(p.grad is None for p in broken.net_.parameters())


# -- errors -------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors(fusion_logreg, pair_cnn, lesions, unseen):
    X = unseen.data.iloc[:2]
    with pytest.raises(ValueError, match=r"'melanoma' is not a class of the model.*'akiec'"):
        grad_cam(fusion_logreg, X, target="melanoma")
    with pytest.raises(ValueError, match="3 labels for 2 cases"):
        grad_cam(fusion_logreg, X, target=["bkl", "bkl", "df"])
    with pytest.raises(ValueError, match="layer 'nope' not found"):
        grad_cam(fusion_logreg, X, layer="nope")
    metadata_only = make_fusion_pipeline(None, classifier="logreg", sampler=None)
    metadata_only.fit(lesions.data, lesions.target)
    with pytest.raises(ValueError, match="no CNN image encoder"):
        grad_cam(metadata_only, X)
    plain = LogisticRegression().fit(np.arange(8.0).reshape(4, 2), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="cannot explain a LogisticRegression: it has no CNN"):
        grad_cam(plain, X)
    no_protocol = LogisticRegression()
    no_protocol.net_ = pair_cnn.net_
    with pytest.raises(ValueError, match="does not implement __skinfuse_gradcam__"):
        grad_cam(no_protocol, X)
    with pytest.raises(NotFittedError):
        grad_cam(make_fusion_pipeline(FrozenCNNEncoder(), classifier="logreg"), X)
    with pytest.raises(NotFittedError):
        grad_cam(PairCNNClassifier(), X)

    class Wrong(PairCNNClassifier):
        def __skinfuse_gradcam__(self, X):
            return self.net_

    wrong = Wrong()
    wrong.__dict__.update(pair_cnn.__dict__)
    with pytest.raises(TypeError, match=r"must return a tuple \(module, layer"):
        grad_cam(wrong, X)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(method="magic"), "'method' parameter of grad_cam must be a str among"),
        (dict(batch_size=0), "'batch_size' parameter of grad_cam must be an int in the range"),
        (dict(occlusion_size=1.5), "'occlusion_size' parameter of grad_cam must be an int"),
        (dict(layer=3), "'layer' parameter of grad_cam must be an instance of 'str'"),
        (dict(return_images="yes"), "'return_images' parameter of grad_cam must be"),
    ],
)
def test_grad_cam_refuses_bad_parameters(unseen, params, match):
    # refused before the model is looked at (an unfitted one would raise NotFittedError)
    with pytest.raises(ValueError, match=match):
        grad_cam(PairCNNClassifier(), unseen.data.iloc[:2], **params)


def test_occlusion_size_larger_than_the_images(pair_cnn, unseen):
    with pytest.raises(ValueError, match=rf"occlusion_size must be an int in \[1, {SIZE}\]"):
        grad_cam(pair_cnn, unseen.data.iloc[:1], method="occlusion", occlusion_size=SIZE + 1)


def test_image_only_pipeline_with_the_encoder_as_first_step(lesions):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.explain import grad_cam

    X, y = lesions.data[["image_path"]].iloc[:40], lesions.target.iloc[:40]
    model = make_pipeline(
        FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32),
        StandardScaler(),
        LogisticRegression(max_iter=500),
    ).fit(X, y)
    maps = grad_cam(model, X.iloc[:4], method="gradcam")  # gradient path: head must check out
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()
    peaks = maps.max(axis=(1, 2))  # each map is scaled to its own maximum (or all zero)
    assert np.all(np.isclose(peaks, 1.0, atol=1e-5) | (peaks == 0)) and (peaks > 0).sum() >= 2


@pytest.mark.parametrize("features", ["latent", "multi"])
def test_autoencoder_pipeline_gradcam(lesions, features):
    from skinfuse.encoders import ConvAutoencoderEncoder

    X, y = lesions.data.iloc[:60], lesions.target.iloc[:60]
    cae = ConvAutoencoderEncoder(
        8, image_size=SIZE, channels=(8, 16), features=features, max_epochs=2,
        batch_size=32, num_workers=0, random_state=0,
    )  # fmt: skip
    model = _fit_quietly(make_fusion_pipeline(cae, classifier="logreg", sampler=None), X, y)
    encoder = model.named_steps["features"].named_transformers_["image"]
    assert encoder.cam_layer_ == "encoder.cnn.1"
    # the gradient path rebuilds the pipeline as torch and checks it against predict_proba
    heat = grad_cam(model, X.iloc[:6], method="gradcam")
    assert heat.shape == (6, SIZE, SIZE) and np.isfinite(heat).all()
    assert (heat.max(axis=(1, 2)) > 0).sum() >= 3
    assert _no_hooks(encoder.module_)
