"""Tiny synthetic fixtures shared by the test suite (no network, no real data)."""

import io
import warnings

import numpy as np
import pytest
from PIL import Image

import skinfuse
from skinfuse.datasets import make_synthetic_lesions


@pytest.fixture(scope="session")
def lesions(tmp_path_factory):
    """120 synthetic 32-px lesions of 4 classes, written once per session."""
    folder = tmp_path_factory.mktemp("lesions")
    return make_synthetic_lesions(
        n_samples=120, image_size=32, n_classes=4, data_dir=folder, random_state=0
    )


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny convolutions run several times faster on one thread than on two busy cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_embedding_cache():
    """Every test starts with an empty in-memory embedding cache and zeroed counters."""
    from skinfuse.encoders import clear_cache

    clear_cache()
    yield


# The serve page (tests/app): a tiny fitted model saved with its training data's summary.
@pytest.fixture(scope="session")
def app_lesions(tmp_path_factory):
    return make_synthetic_lesions(60, image_size=24, random_state=3,
                                  data_dir=tmp_path_factory.mktemp("app_lesions"))  # fmt: skip


@pytest.fixture(scope="session")
def app_models(app_lesions, tmp_path_factory):
    """``(with_sets, plain)``: two model files; the first has 90 % prediction sets."""
    from sklearn.linear_model import LogisticRegression

    from skinfuse.conformal import PredictionSets
    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.metrics import dataset_summary
    from skinfuse.pipeline import make_fusion_pipeline

    X, y = app_lesions.data, app_lesions.target
    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32, verbose=0)
    pipeline = make_fusion_pipeline(encoder, classifier=LogisticRegression(max_iter=200),
                                    sampler=None, random_state=0)  # fmt: skip
    with warnings.catch_warnings():  # sites of the held-out lesions unseen in the 40
        warnings.simplefilter("ignore", UserWarning)
        pipeline.fit(X.iloc[:40], y[:40])
        sets = PredictionSets(pipeline, coverage=0.9).fit(X.iloc[40:], y[40:])
    folder = tmp_path_factory.mktemp("app_models")
    summary = dataset_summary(X, y, classes=pipeline.classes_)
    with_sets = skinfuse.save(sets, folder / "sets.skinfuse", training_data=summary)
    plain = skinfuse.save(pipeline, folder / "plain.skinfuse", training_data=summary)
    return with_sets, plain


@pytest.fixture(scope="session")
def lesion_png():
    """``lesion_png(height, width)``: the bytes of a synthetic lesion PNG."""
    return _png_bytes


def _png_bytes(height=40, width=50, seed=0):
    """A synthetic lesion-like PNG: a dark disc on skin colour, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2
    image = np.full((height, width, 3), (224, 172, 150), dtype=np.float64)
    image[disc] = (90, 50, 40)
    image += rng.normal(0, 8, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
