"""scikit-learn's own estimator checks over every image encoder.

Small constructor settings live in one table (imbalanced-learn's INIT_PARAMS idiom).
The checks send 2-D numeric arrays; the encoders read each row as a one-row
grayscale image, so every check runs for real.
"""

import importlib

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skinfuse.encoders import FrozenCNNEncoder

INIT_PARAMS = {
    "FrozenCNNEncoder": dict(backbone="tiny_cnn", weights=None, image_size=8, batch_size=32),
    "FineTunedCNNEncoder": dict(
        backbone="tiny_cnn", weights=None, image_size=8, max_epochs=2, batch_size=32,
        cross_fit=None, validation_fraction=0.0, random_state=0, num_workers=0,
    ),
    "ConvAutoencoderEncoder": dict(
        latent_dim=4, image_size=8, channels=(4,), max_epochs=1, batch_size=16, num_workers=0,
        random_state=0,
    ),
}  # fmt: skip

# Expected failures, with the reason: none at present.
EXPECTED_FAILED_CHECKS: dict = {}


def _encoders():
    classes = [FrozenCNNEncoder]
    for module, name in [
        ("skinfuse.encoders._finetuned", "FineTunedCNNEncoder"),
        ("skinfuse.encoders._autoencoder", "ConvAutoencoderEncoder"),
    ]:
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # pragma: no cover - not written yet
            continue
    return [cls(**INIT_PARAMS[cls.__name__]) for cls in classes]


def _variants():
    """Settings that change what ``transform`` computes get their own run of the checks."""
    from skinfuse.encoders import ConvAutoencoderEncoder

    cae = dict(INIT_PARAMS["ConvAutoencoderEncoder"], features="multi")
    return [ConvAutoencoderEncoder(**cae)]


@parametrize_with_checks(
    _encoders() + _variants(),
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
)
def test_sklearn_compatible_encoder(estimator, check):
    check(estimator)


@pytest.mark.parametrize("encoder", _encoders(), ids=lambda e: type(e).__name__)
def test_init_stores_parameters_unchanged(encoder):
    params = encoder.get_params()
    for name, value in INIT_PARAMS[type(encoder).__name__].items():
        assert params[name] == value
