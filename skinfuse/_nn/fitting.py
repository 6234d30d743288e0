"""Training a :class:`.modules.ClassifierNetwork` from a :class:`.spec.NetworkSpec`.

:func:`data_path` is the ONE place that decides what the network trains on: the image
files (decoded by DataLoader workers every epoch), a decoded-image store (decoded once,
augmented batch-wise on the device), or cached activations of its frozen stages (partial
fine-tuning). :func:`train_classifier` then builds that data and hands it to the training
loop (:func:`.training.train_network`); the fine-tuned encoder and the fusion network both
train through it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from . import splits
from .device import torch_seed
from .store import resolve_store
from .training import train_network


def class_weights(class_weight, classes, y_idx):
    """Cross-entropy weights (float32, one per class index) for ``class_weight``, or None.

    ``"balanced"``: ``n / (n_classes * n_c)`` (scikit-learn's); ``"sqrt"``: its square root.
    """
    if class_weight is None:
        return None
    n_classes = len(classes)
    if isinstance(class_weight, dict):
        unknown = [k for k in class_weight if k not in set(classes.tolist())]
        if unknown:
            raise ValueError(
                f"class_weight has labels {unknown!r} that are not in y; the classes are "
                f"{classes.tolist()!r}. Use those labels as keys."
            )
        weights = np.ones(n_classes)
        for label, w in class_weight.items():
            weights[np.searchsorted(classes, label)] = float(w)
        return weights.astype(np.float32)
    present = np.unique(y_idx)
    weights = np.ones(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=y_idx)
    if class_weight == "sqrt":  # milder: rare classes count, the common ones lose less
        weights = np.sqrt(weights)
    return weights.astype(np.float32)


def data_path(spec, device, n_images) -> str:
    """What the network trains on: ``"activations"`` (``trainable_blocks``), ``"memory"`` or
    ``"disk"`` (a decoded-image store, :func:`.store.resolve_store`), or ``"images"``."""
    if spec.trainable_blocks is not None:
        return "activations"
    store = resolve_store(spec.image_store, device, spec.augment, n_images, spec.image_size)
    return "images" if store is None else store


def train_classifier(items, y_idx, classes, *, spec, seed, metadata=None, activation_cache=None,
                     groups=None, **module_kwargs):  # fmt: skip
    """Train a :class:`.modules.ClassifierNetwork` on images (and metadata rows).

    A validation split for early stopping (``spec.validation_fraction``; no group on both
    sides when ``groups`` are given: :func:`.splits.validation_split`), augmentation of the
    training images, class-weighted cross-entropy and ``spec.training``; ``module_kwargs``
    go to the network (the fusion network's metadata branch). The data follow
    :func:`data_path`; with cached activations ``activation_cache(trunk_key)`` gives their
    cache. Returns the skorch net (module on ``spec.training.device``).
    """
    path = data_path(spec, spec.training.device, len(items))
    if path == "activations":
        return _train_partial(
            items, y_idx, classes, spec=spec, seed=seed, metadata=metadata,
            activation_cache=activation_cache, groups=groups, **module_kwargs,
        )  # fmt: skip
    train, valid = splits.validation_split(
        len(items), y_idx, spec.validation_fraction, seed, groups
    )
    args = dict(
        module_args=spec.module_kwargs(len(classes), **module_kwargs), config=spec.training,
        seed=seed, n_classes=len(classes),
        class_weight=class_weights(spec.class_weight, classes, y_idx),
    )  # fmt: skip
    if path == "images":
        return _train_from_images(items, y_idx, train, valid, spec, metadata, **args)
    return _train_from_store(items, y_idx, train, valid, spec, metadata, store=path, **args)


def _train_from_images(items, y_idx, train, valid, spec, metadata, *, module_args, **args):
    """Image files, decoded (and augmented, per image) by DataLoader workers every epoch."""
    from .data import ImageDataset, augmentation
    from .modules import ClassifierNetwork

    size = spec.image_size

    def dataset(rows, transform=None):
        rows_metadata = None if metadata is None else metadata[rows]
        images = [items[i] for i in rows]
        return ImageDataset(
            images, size, y=y_idx[rows], metadata=rows_metadata, transform=transform
        )

    return train_network(
        ClassifierNetwork, module_args, dataset(train, augmentation(spec.augment, size)),
        valid_data=None if valid is None else dataset(valid), **args,
    )  # fmt: skip


def _train_from_store(items, y_idx, train, valid, spec, metadata, *, store, module_args, config,
                      **args):  # fmt: skip
    """Images decoded once (``store``: "memory" or "disk"), served in whole batches (on the
    device when they fit) and augmented there."""
    from .augment import BatchAugment, PerImage
    from .modules import ClassifierNetwork
    from .store import StoreDataset, StoreLoader, decoded_store, on_device_if_it_fits

    augment = spec.augment
    transform = BatchAugment() if augment is True else PerImage(augment) if augment else None
    with decoded_store(
        items, spec.image_size, store, batch_size=int(config.batch_size),
        num_workers=config.num_workers, verbose=int(config.verbose) > 0,
    ) as pixels:  # fmt: skip
        pixels = on_device_if_it_fits(pixels, config.device)

        def dataset(rows):
            rows_metadata = None if metadata is None else metadata[rows]
            return StoreDataset(pixels, rows, y=y_idx[rows], metadata=rows_metadata)

        return train_network(
            ClassifierNetwork, module_args, dataset(train),
            valid_data=None if valid is None else dataset(valid),
            config=replace(config, num_workers=0), iterator=StoreLoader,
            batch_transform=transform, **args,
        )  # fmt: skip


def _train_partial(items, y_idx, classes, *, spec, seed, activation_cache, metadata=None,
                   groups=None, **module_kwargs):  # fmt: skip
    """Train the last ``spec.trainable_blocks`` stages and the head on cached activations.

    The trunk's activations of every image are computed once for each of the first
    ``cached_views`` views (one view without ``augment``), through ``activation_cache``;
    each epoch draws one view per training image. Returns the skorch net whose
    ``module_`` is the whole :class:`.modules.ClassifierNetwork` (its trunk frozen) and
    whose ``module`` / ``module__*`` settings rebuild it, as the other paths' do.
    """
    from .backbones import backbone_stages
    from .modules import ClassifierNetwork
    from .partial import ActivationDataset, split_network, trunk_engine, view_activations
    from .views import jittered, views_for

    config = spec.training
    device, size, k = config.device, spec.image_size, int(spec.trainable_blocks)
    with torch_seed(seed, device):
        net = ClassifierNetwork(
            backbone=spec.backbone, weights=spec.weights, pooling=spec.pooling,
            n_classes=len(classes), image_size=size, **module_kwargs,
        )  # fmt: skip
    n_stages = len(backbone_stages(net.embedder.features))
    if not 1 <= k < n_stages:
        split_network(net, k, size)  # raises the clear error
    net.freeze(n_stages - k)
    trunk, top, shape = split_network(net, k, size)
    top.features_only = False
    net.to(device)
    views = views_for(spec.cached_views if spec.augment else 1)
    if spec.view_jitter:
        views = jittered(views)
    # what computes the trunk (onnxruntime on a CPU in fp32 where installed): its own cache
    engine, key, cache_key = trunk_engine(
        trunk, spec.backbone, device, config.precision, len(items) * len(views)
    )
    train, valid = splits.validation_split(
        len(items), y_idx, spec.validation_fraction, seed, groups
    )

    def dataset(acts, rows, random_view):  # rows by index: no copy of the activations
        return ActivationDataset(
            acts, shape, rows=rows, y=y_idx[rows], random_view=random_view,
            metadata=None if metadata is None else metadata[rows],
        )  # fmt: skip

    from .._utils._malloc import keep_freed_heap
    from .store import StoreLoader

    keep_freed_heap()  # no page faults from the per-step blocks (issue 25)
    with view_activations(
        items, trunk, views, cached=activation_cache(cache_key), image_size=size,
        batch_size=int(config.batch_size), device=device, num_workers=config.num_workers,
        verbose=int(config.verbose) > 0, precision=config.precision, engine=engine, key=key,
        memory=spec.activation_memory, folder=spec.activation_dir,
    ) as acts:  # fmt: skip
        # the top trains in fp32 on the (bf16-computed, float16-stored) activations, each
        # batch converted as it is gathered (StoreLoader: whole batches by index, the random
        # draws of a DataLoader): a bf16 train step of the last stages was not faster on an
        # AMX CPU (0.93x, issue 25)
        trained = train_network(
            top, {}, dataset(acts, train, len(views) > 1),
            valid_data=None if valid is None else dataset(acts, valid, False),
            config=replace(config, num_workers=0, precision="fp32"), seed=seed,
            n_classes=len(classes), class_weight=class_weights(spec.class_weight, classes, y_idx),
            iterator=StoreLoader,
        )  # fmt: skip
    trained.module_ = net
    # the net as the other paths' would be: a class and its arguments (model files read them)
    trained.module = ClassifierNetwork
    module_args = spec.module_kwargs(len(classes), **module_kwargs)
    module_args["freeze"] = n_stages - k
    for name, value in module_args.items():
        setattr(trained, f"module__{name}", value)
    return trained
