"""What a network is trained on and how: typed settings built once from an estimator.

:class:`TrainingConfig` is how :func:`.training.train_network` trains any module (the
optimisation, the schedule, early stopping); :class:`NetworkSpec` adds what a
:class:`.modules.ClassifierNetwork` is (backbone, pooling, size, what is frozen) and what
it learns from (augmentation, class weights, the validation share, partial fine-tuning,
the decoded-image store). Both are frozen dataclasses read by attribute, never a dict of
parameters read by key. No torch here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace


def _from_estimator(cls, estimator, values):
    """``cls`` with each field read from the estimator's parameter of the same name, where it
    has one, updated by ``values``."""
    params = estimator.get_params(deep=False)
    found = {f.name: params[f.name] for f in fields(cls) if f.name in params}
    return cls(**{**found, **values})


def activation_dir(estimator):
    """Where an estimator's activations past ``activation_memory`` are memory-mapped: its
    ``cache_dir`` (a folder with room, checked in ``fit``) when it caches, else None (the
    temporary directory)."""
    cache_dir = getattr(estimator, "cache_dir", None)
    return cache_dir if getattr(estimator, "cache", True) else None


@dataclass(frozen=True)
class TrainingConfig:
    """How :func:`.training.train_network` trains: optimisation, schedule, stopping, loaders.

    Build it from an estimator with :meth:`from_estimator`: a new training setting is one
    field here and one parameter of the same name on each estimator that offers it.
    """

    device: str
    max_epochs: int
    lr: float
    batch_size: int
    optimizer: object = "adamw"
    weight_decay: float = 0.0
    #: epochs without a better validation loss before stopping; None: never stop early
    patience: int | None = None
    #: DataLoader workers; None: :func:`.data.default_num_workers`
    num_workers: int | None = None
    verbose: int = 0
    #: "cosine" (annealed to 0 at max_epochs) or None (constant)
    lr_schedule: str | None = "cosine"
    #: cross-entropy label smoothing (classification)
    label_smoothing: float = 0.0
    #: linear warm-up (in epochs, stepped per batch) before the cosine schedule
    warmup_epochs: float = 0.0
    #: train through torch.compile (skorch's compile=True); the plain modules are kept
    compile: bool = False
    #: "auto", "fp32" or "bf16" (:func:`.device.resolve_precision`)
    precision: str = "auto"
    #: the user's skorch callbacks, added after the built-in ones (used as given, as skorch does)
    callbacks: object = None
    #: where this run's resumable state is written after every epoch; None: nowhere
    checkpoint_dir: object = None

    @classmethod
    def from_estimator(cls, estimator, *, run="final", **values) -> TrainingConfig:
        """The estimator's parameters of the fields' names, updated by ``values``;
        ``checkpoint_dir`` is the estimator's joined with ``run`` (one network of its fit)."""
        config = _from_estimator(cls, estimator, values)
        if config.checkpoint_dir is not None:
            config = replace(config, checkpoint_dir=os.path.join(config.checkpoint_dir, run))
        return config


@dataclass(frozen=True)
class NetworkSpec:
    """A :class:`.modules.ClassifierNetwork` to train, and what it learns from.

    Built once per fit from the fine-tuned encoder or the fusion network
    (:meth:`from_estimator`); :func:`.fitting.train_classifier` reads it.
    """

    backbone: object
    weights: object
    pooling: str
    image_size: int
    freeze: object
    #: True (the built-in augmentation), False, or a per-image callable
    augment: object
    class_weight: object
    validation_fraction: float
    #: partial fine-tuning of the last k stages on cached activations; None: from images
    trainable_blocks: int | None
    #: views whose activations are cached for partial fine-tuning
    cached_views: int
    #: the cached views but the first also changed in colour, light and scale
    view_jitter: bool
    #: "auto", "memory", "disk" or None (:func:`.store.resolve_store`)
    image_store: str | None
    training: TrainingConfig
    #: bytes of cached activations held in memory (None: no limit); beyond, memory-mapped
    activation_memory: int | None = None
    #: where activations beyond ``activation_memory`` are memory-mapped (None: TMPDIR)
    activation_dir: object = None

    @classmethod
    def from_estimator(cls, estimator, *, device, run="final") -> NetworkSpec:
        """The estimator's parameters, its training on ``device`` (``run``: see
        :meth:`TrainingConfig.from_estimator`)."""
        from .params import parse_memory

        training = TrainingConfig.from_estimator(estimator, device=device, run=run)
        spec = _from_estimator(cls, estimator, {"training": training})
        return replace(
            spec, image_size=int(spec.image_size),
            activation_memory=parse_memory(spec.activation_memory),
            activation_dir=activation_dir(estimator),
        )  # fmt: skip

    def module_kwargs(self, n_classes: int, **extra) -> dict:
        """The arguments of :class:`.modules.ClassifierNetwork` (``extra``: the metadata
        branch of the fusion network)."""
        return dict(
            backbone=self.backbone, weights=self.weights, pooling=self.pooling,
            n_classes=n_classes, image_size=self.image_size, freeze=self.freeze, **extra,
        )  # fmt: skip
