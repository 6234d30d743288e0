"""Ready-made models by name: the recipes of ``skinfuse train --recipe NAME`` and of the
benchmarks, defined in one place.

Each recipe is an unfitted scikit-learn classifier built by :func:`make_recipe`;
:data:`RECIPES` lists them with a one-line description. Every recipe ends in temperature
scaling fitted on lesion-grouped inner folds
(:class:`~skinfuse.calibration.TemperatureCalibratedClassifier`; ``calibrate=False``: the
bare model). Fit it with ``groups=lesion_ids``. A soft vote of one network per seed is
:func:`seed_ensemble`.

Examples
--------
>>> from skinfuse.recipes import RECIPES, make_recipe
>>> model = make_recipe("partial", random_state=0)
>>> type(model).__name__, type(model.estimator).__name__, "partial-ensemble" in RECIPES
('TemperatureCalibratedClassifier', 'FusionNetClassifier', True)
>>> type(make_recipe("partial", calibrate=False)).__name__
'FusionNetClassifier'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from numbers import Integral
from typing import NamedTuple

from ._utils._sklearn import Interval, StrOptions, validate_params

__all__ = ["RECIPES", "Recipe", "make_recipe", "seed_ensemble"]


class Recipe(NamedTuple):
    """A named model: its one-line description, its builder, and whether it needs a GPU."""

    #: One line, shown by ``skinfuse train --help``.
    description: str
    #: ``build(random_state, cache_dir, verbose)`` -> an unfitted classifier.
    build: Callable
    #: True when training it on a CPU would take days: ``skinfuse train`` refuses it
    #: without a CUDA device unless ``--force`` is given.
    needs_gpu: bool = False


def _mlp(random_state):
    from .pipeline import make_mlp

    return make_mlp("best", random_state)


def _frozen(backbones, random_state, cache_dir, verbose):
    from .encoders import FrozenCNNEncoder
    from .pipeline import make_fusion_pipeline

    names = tuple(name for name, _ in backbones)
    encoder = FrozenCNNEncoder(
        names[0] if len(names) == 1 else names,
        image_size=None,  # each backbone's native size
        pooling="multi",
        cache_dir=cache_dir,
        verbose=verbose,
    )
    return make_fusion_pipeline(
        encoder, classifier=_mlp(random_state), sampler=None, random_state=random_state
    )


def _frozen_lite0_lite2(random_state, cache_dir, verbose):
    backbones = [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)]
    return _frozen(backbones, random_state, cache_dir, verbose)


def _frozen_lite0(random_state, cache_dir, verbose):
    return _frozen([("efficientnet_lite0", 224)], random_state, cache_dir, verbose)


def _autoencoder(random_state, cache_dir, verbose):
    from .encoders import ConvAutoencoderEncoder
    from .pipeline import make_fusion_pipeline

    encoder = ConvAutoencoderEncoder(
        features="multi",
        image_size=64,
        max_epochs=20,
        cache_dir=cache_dir,
        random_state=random_state,
        verbose=verbose,
    )
    return make_fusion_pipeline(
        encoder, classifier=_mlp(random_state), sampler=None, random_state=random_state
    )


def _finetuned(random_state, cache_dir, verbose):
    from .fusion import FusionNetClassifier

    return FusionNetClassifier(random_state=random_state, verbose=verbose)


def _partial(random_state, cache_dir, verbose):
    from .fusion import FusionNetClassifier

    return FusionNetClassifier(
        trainable_blocks=2,
        cached_views=4,
        tta=4,
        class_weight="sqrt",
        label_smoothing=0.1,
        max_epochs=15,
        lr=1e-3,
        batch_size=128,
        # the image alone in a quarter of the training rows, single columns besides: as good
        # as the image-only recipe when a clinic records no metadata, no cost with it
        # (held-out HAM lesions, docs/external.md "Modality dropout")
        metadata_dropout=0.1,
        modality_dropout=0.25,
        cache_dir=cache_dir,
        random_state=random_state,
        verbose=verbose,
    )


@validate_params({"build": [callable], "seeds": ["array-like"]}, prefer_skip_nested_validation=True)
def seed_ensemble(build, seeds):
    """A soft vote of ``build(seed)`` for each of ``seeds``; one seed: ``build(seed)`` itself.

    Members are named by position (``net0``, ``net1``, ...): two ``None`` seeds need
    distinct names.

    Parameters
    ----------
    build : callable
        ``build(seed)`` -> an unfitted classifier with ``predict_proba``.
    seeds : sequence of int or None
        One ``random_state`` per member, in order.

    Returns
    -------
    model : sklearn.ensemble.VotingClassifier or the single member

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> vote = seed_ensemble(lambda s: SGDClassifier(loss="log_loss", random_state=s), [3, 4])
    >>> [(name, member.random_state) for name, member in vote.estimators]
    [('net0', 3), ('net1', 4)]
    """
    from sklearn.ensemble import VotingClassifier

    seeds = list(seeds)
    if len(seeds) == 1:
        return build(seeds[0])
    members = [(f"net{i}", build(s)) for i, s in enumerate(seeds)]
    return VotingClassifier(members, voting="soft")


def _two_seeds(recipe, random_state, cache_dir, verbose):
    """Soft vote of two networks of ``recipe`` with seeds ``random_state`` and the next one."""
    seeds = (None, None) if random_state is None else (random_state, random_state + 1)
    return seed_ensemble(lambda s: recipe(s, cache_dir, verbose), seeds)


def _partial_ensemble(random_state, cache_dir, verbose):
    return _two_seeds(_partial, random_state, cache_dir, verbose)


def _gpu(random_state, cache_dir, verbose):
    from .fusion import FusionNetClassifier

    # settings fixed before any GPU run (docs/results.md says how they were chosen)
    return FusionNetClassifier(
        "efficientnet_lite2",
        image_size=260,
        class_weight="balanced",
        label_smoothing=0.1,
        max_epochs=30,
        lr=5e-4,
        warmup_epochs=1,
        batch_size=64,
        validation_fraction=0.0,
        tta=4,
        cache_dir=cache_dir,
        random_state=random_state,
        verbose=verbose,
    )


def _gpu_ensemble(random_state, cache_dir, verbose):
    return _two_seeds(_gpu, random_state, cache_dir, verbose)


def _tiny(random_state, cache_dir, verbose):
    from sklearn.neural_network import MLPClassifier

    from .encoders import FrozenCNNEncoder
    from .pipeline import make_fusion_pipeline

    encoder = FrozenCNNEncoder(
        "tiny_cnn", weights=None, image_size=32, cache_dir=cache_dir, verbose=verbose
    )
    classifier = MLPClassifier((32,), max_iter=300, random_state=random_state)
    return make_fusion_pipeline(
        encoder, classifier=classifier, sampler=None, random_state=random_state
    )


#: name -> :class:`Recipe` (description, builder)
RECIPES = {
    "frozen": Recipe(
        "frozen EfficientNet-Lite0 (224 px) + Lite2 (260 px), multi-scale pooling, "
        "+ metadata, MLP(512): the best frozen recipe (FrozenCNNEncoder()'s defaults)",
        _frozen_lite0_lite2,
    ),
    "frozen-lite0": Recipe(
        "frozen EfficientNet-Lite0 (224 px, multi-scale pooling) + metadata, MLP(512): "
        "about half the time of 'frozen'",
        _frozen_lite0,
    ),
    "autoencoder": Recipe(
        "convolutional autoencoder trained on the images (64 px, 20 epochs, multi-scale "
        "features) + metadata, MLP(512)",
        _autoencoder,
    ),
    "partial": Recipe(
        "FusionNetClassifier fine-tuning the last two stages of EfficientNet-Lite0 on cached "
        "activations (4 views, TTA): about 42 minutes for 5 folds on 2 cores",
        _partial,
    ),
    "partial-ensemble": Recipe(
        "soft vote (VotingClassifier) of two 'partial' networks with different seeds, "
        "sharing the cached activations: the best CPU recipe, about 73 minutes for 5 folds "
        "on 2 cores",
        _partial_ensemble,
    ),
    "finetuned": Recipe(
        "FusionNetClassifier: EfficientNet-Lite0 fine-tuned jointly with a metadata branch "
        "(GPU advised)",
        _finetuned,
    ),
    "gpu": Recipe(
        "FusionNetClassifier fine-tuning all of EfficientNet-Lite2 at 260 px (30 epochs, "
        "warm-up + cosine, balanced class weights, label smoothing, TTA): needs a GPU",
        _gpu,
        needs_gpu=True,
    ),
    "gpu-ensemble": Recipe(
        "soft vote (VotingClassifier) of two 'gpu' networks with different seeds",
        _gpu_ensemble,
        needs_gpu=True,
    ),
    "tiny": Recipe(
        "untrained tiny CNN at 32 px + metadata: seconds, for tests only",
        _tiny,
    ),
}


@validate_params(
    {
        "name": [str],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "cache_dir": [str, os.PathLike, None],
        "verbose": ["verbose"],
        "device": [str, None],
        "precision": [StrOptions({"auto", "fp32", "bf16"}), None],
        "calibrate": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def make_recipe(name, *, random_state=0, cache_dir=None, verbose=0, device=None, calibrate=True,
                precision=None):  # fmt: skip
    """The unfitted model of recipe ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`RECIPES`.
    random_state : int or None, default=0
        Seed of the model (of the first member of an ensemble; the next ones count up).
    cache_dir : str or None, default=None
        Embedding cache of the recipe's encoders (ignored by recipes without one).
    verbose : int, default=0
        Progress bars of the recipe's estimators.
    device : str or None, default=None
        ``device`` of every estimator in the recipe that takes one (``"auto"``, ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``, ``"mps"``); ``None`` keeps their own (``"auto"``).
    precision : {"auto", "fp32", "bf16"} or None, default=None
        ``precision`` of every estimator in the recipe that takes one; ``None`` keeps their
        own (``"auto"``: bf16 on CUDA and on CPUs with native bf16 units, else fp32).
    calibrate : bool, default=True
        End in temperature scaling on 3 lesion-grouped inner folds
        (:class:`~skinfuse.calibration.TemperatureCalibratedClassifier`, seeded by
        ``random_state``): calibrated probabilities, the same predictions, 3 extra fits on
        2/3 of the data (a recipe's cached embeddings and activations are reused).
        ``fit(X, y, groups=lesion_ids)`` groups the inner folds by lesion. ``False``: the
        model alone.

    Returns
    -------
    model : classifier
        Unfitted.

    Raises
    ------
    ValueError
        If ``name`` is not a recipe.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    model = RECIPES[name].build(random_state, cache_dir, verbose)
    from ._utils._estimators import walk_estimators

    for name, value in (("device", device), ("precision", precision)):
        if value is None:
            continue
        for est in walk_estimators(model):
            if name in est.get_params(deep=False):
                est.set_params(**{name: value})
    if not calibrate:
        return model
    from .calibration import TemperatureCalibratedClassifier

    return TemperatureCalibratedClassifier(model, n_splits=3, random_state=random_state)
