"""One training function for every network skinfuse trains, configured explicitly.

:func:`train_network` trains a module with skorch: seeded (scoped) initialisation and
shuffling, an optimizer from :func:`optimizer_class`, an optional cosine learning-rate
schedule, early stopping on a validation set (restoring the best epoch), bf16 autocast
and channels-last on CUDA. The fine-tuned encoder, the fusion network (task
``"classification"``) and the autoencoder (task ``"reconstruction"``) all use it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
from skorch.helper import predefined_split
from skorch.utils import to_device, to_tensor

from .data import default_num_workers, plain_worker_errors
from .device import torch_seed
from .inference import autocast
from .modules import as_unit_float
from .store import resolve_store


@dataclass(frozen=True)
class TrainingConfig:
    """How :func:`train_network` trains: the estimator parameters it reads, by their names.

    Build it from an estimator's parameters with :meth:`from_params`, so a new training
    setting is one field here and one parameter on each estimator that offers it.
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

    @classmethod
    def from_params(cls, params: dict, **values) -> TrainingConfig:
        """The fields found in ``params`` (``estimator.get_params()``), updated by ``values``."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in params.items() if k in names}, **values})


def optimizer_class(optimizer):
    """The optimizer class for ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or a class,
    and its extra keyword arguments."""
    if optimizer == "adam":
        return torch.optim.Adam, {}
    if optimizer == "adamw":
        return torch.optim.AdamW, {}
    if optimizer == "sgd":
        return torch.optim.SGD, {"momentum": 0.9}
    return optimizer, {}


class WarmupCosine:
    """Learning-rate factor at optimizer step ``t``: linear warm-up over ``warmup`` steps
    (``(t + 1) / warmup``, 1 at step ``warmup - 1``), then a cosine decay that would reach 0
    one step after the last (``total - 1``) (for ``LambdaLR``)."""

    def __init__(self, warmup: int, total: int):
        self.warmup = int(warmup)
        self.total = int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        done = (step + 1 - self.warmup) / max(1, self.total + 1 - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


class _DeviceInference:
    """skorch ``infer`` over uint8 image batches: channels-last and bf16 autocast on CUDA.

    ``batch_transform`` (a callable, e.g. :class:`.augment.BatchAugment`; not a module,
    which skorch would refuse as an attribute) augments the images
    of each training batch on the device, before the forward pass (not in evaluation).
    """

    def __init__(self, *args, batch_transform=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_transform = batch_transform

    def infer(self, x, **fit_params):
        transform = getattr(self, "batch_transform", None)  # nets pickled before it existed
        if transform is not None and self.module_.training:
            x = to_tensor(x, device=self.device)
            if isinstance(x, dict):
                x = {**x, "x": transform(x["x"])}
            else:
                x = transform(x)
        if str(self.device).startswith("cuda"):
            x = to_tensor(x, device=self.device)
            if isinstance(x, dict):  # the fusion network: images under "x", plus metadata
                x = {**x, "x": x["x"].contiguous(memory_format=torch.channels_last)}
            else:
                x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            return super().infer(x, **fit_params).float()


class ClassifierNet(_DeviceInference, NeuralNetClassifier):
    """skorch classifier over image batches (class indices as targets)."""


class ReconstructionNet(_DeviceInference, NeuralNet):
    """skorch net whose loss compares the output with the input images (in [0, 1])."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        target = as_unit_float(to_device(X, y_pred.device))
        return super().get_loss(y_pred, target, X=X, training=training)


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


def stratified_split(n, y_idx, validation_fraction, seed):
    """Training and validation indices (stratified), or (all, None) without validation."""
    if not validation_fraction:
        return np.arange(n), None
    n_classes = len(np.unique(y_idx))
    n_valid = math.ceil(validation_fraction * n)
    counts = np.bincount(y_idx)
    counts = counts[counts > 0]
    if counts.min() < 2 or n_valid < n_classes or n - n_valid < n_classes:
        raise ValueError(
            f"validation_fraction={validation_fraction} holds out {n_valid} of "
            f"{n} training images, too few for a split stratified over {n_classes} "
            f"classes (the rarest has {counts.min()} images; each class needs 2). "
            "Pass a larger validation_fraction, more images, or validation_fraction=0 "
            "to train without validation and early stopping."
        )
    return train_test_split(
        np.arange(n), test_size=n_valid, stratify=y_idx, random_state=seed % 2**32
    )


def validation_split(n, y_idx, validation_fraction, seed, groups=None):
    """Training and validation indices for early stopping; (all, None) without validation.

    Without ``groups``: :func:`stratified_split`. With ``groups`` (one label per image, e.g.
    its lesion), no group has images on both sides: one fold of scikit-learn's
    ``StratifiedGroupKFold(k)``, ``k`` the integer whose ``1 / k`` is nearest to
    ``validation_fraction`` (0.1 -> 10 %, 0.15 -> 1/7, 0.4 -> 1/3; above one half, the
    training side is the fold: 0.6 -> 2/3). Stratified as far as whole groups allow.
    """
    if not validation_fraction or groups is None:
        return stratified_split(n, y_idx, validation_fraction, seed)
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray(groups)
    f = float(validation_fraction)
    swap = f > 0.5
    share = 1 - f if swap else f  # the fold's share
    k = min((max(2, math.floor(1 / share)), max(2, math.ceil(1 / share))),
            key=lambda k: abs(1 / k - share))  # fmt: skip
    n_groups = len(np.unique(groups))
    if n_groups < k:
        held = f"{k - 1}/{k}" if swap else f"1/{k}"
        raise ValueError(
            f"validation_fraction={validation_fraction} with groups holds out {held} of the "
            f"groups, but the {n} training images have only {n_groups} distinct groups. "
            f"Pass a validation_fraction nearer 0.5, more groups, validation_fraction=0 to "
            "train without validation, or no groups for an image-level split."
        )
    cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed % 2**32)
    with warnings.catch_warnings():  # a class rarer than k: fine for a validation set
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        train, valid = next(cv.split(np.zeros((n, 1)), y_idx, groups))
    return (valid, train) if swap else (train, valid)


def check_groups(groups, n):
    """``groups`` as a 1-D array of ``n`` labels, or None; a clear error otherwise."""
    if groups is None:
        return None
    from sklearn.utils import column_or_1d

    groups = column_or_1d(groups, warn=True)
    if len(groups) != n:
        raise ValueError(
            f"groups has {len(groups)} labels but X has {n} images; pass one group label "
            "(e.g. the lesion_id) per image. Inside a pipeline whose sampler (SMOTE, "
            "over- or under-sampling) changes the rows before this step, metadata routing "
            "hands it the groups of the original rows: opt this step out with "
            "set_fit_request(groups=False)."
        )
    return groups


def _loader_settings(config, train_data, valid_data) -> dict:
    settings = {}
    pin = str(config.device).startswith("cuda")
    for prefix, data in (("iterator_train", train_data), ("iterator_valid", valid_data)):
        n = len(data) if data is not None else 0
        workers = default_num_workers(n, int(config.batch_size), config.num_workers)
        settings[f"{prefix}__num_workers"] = workers
        settings[f"{prefix}__pin_memory"] = pin
        settings[f"{prefix}__persistent_workers"] = workers > 0
    return settings


def train_network(module, module_kwargs, train_data, *, config, seed, task="classification",
                  valid_data=None, n_classes=None, class_weight=None, on_initialized=None,
                  iterator=None, batch_transform=None):  # fmt: skip
    """Train ``module(**module_kwargs)`` on a dataset; return the skorch net (on ``config.device``).

    Parameters
    ----------
    module : nn.Module class
        Built inside the seeded block, so its random initialisation is seeded.
    module_kwargs : dict
    train_data : :class:`.data.ImageDataset`
        With targets ``y`` (class indices) for classification; for reconstruction the
        targets are ignored (the loss compares the output with the input images).
    config : TrainingConfig
    seed : int
        Seeds initialisation, shuffling and augmentation, in a scoped block.
    task : {"classification", "reconstruction"}
    valid_data : :class:`.data.ImageDataset` or None
        Scored after every epoch (``valid_loss``, and ``valid_acc`` for classification);
        with ``config.patience``, early stopping on it restores the best epoch.
    n_classes : int
        Classification only.
    class_weight : ndarray of shape (n_classes,) or None
        Weights of the cross-entropy loss.
    on_initialized : callable or None
        Called with the initialised net before training (e.g. to set an output bias).
    iterator : class or None
        skorch's ``iterator_train`` and ``iterator_valid`` (default: PyTorch's DataLoader);
        :class:`.store.StoreLoader` for a :class:`.store.StoreDataset`.
    batch_transform : callable or None
        Applied to the images of each training batch, on the device.
    """
    batch_size = int(config.batch_size)
    n_train = len(train_data)
    # a last batch of 1 image breaks batch norm on a 1x1 feature map
    drop_last = n_train > batch_size and n_train % batch_size == 1
    callbacks = []
    if config.lr_schedule == "cosine" and config.warmup_epochs:
        per_epoch = n_train // batch_size if drop_last else math.ceil(n_train / batch_size)
        schedule = WarmupCosine(
            round(config.warmup_epochs * per_epoch), int(config.max_epochs) * per_epoch
        )
        callbacks.append((
            "lr_scheduler",
            LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, lr_lambda=schedule,
                        step_every="batch"),
        ))  # fmt: skip
    elif config.lr_schedule == "cosine":
        callbacks.append(
            ("lr_scheduler", LRScheduler(policy="CosineAnnealingLR", T_max=config.max_epochs))
        )
    if valid_data is not None and config.patience is not None:
        callbacks.append(
            (
                "early_stopping",
                EarlyStopping(monitor="valid_loss", patience=config.patience, load_best=True),
            )
        )
    if config.verbose > 1:
        callbacks.append(("progress_bar", ProgressBar()))
    if task == "classification":
        net_class, criterion = ClassifierNet, torch.nn.CrossEntropyLoss
        task_kwargs = {
            "classes": np.arange(n_classes),
            "criterion__weight": None if class_weight is None else torch.from_numpy(class_weight),
        }
        if config.label_smoothing:
            task_kwargs["criterion__label_smoothing"] = float(config.label_smoothing)
    else:
        net_class, criterion, task_kwargs = ReconstructionNet, torch.nn.MSELoss, {}
    optimizer, optimizer_kwargs = optimizer_class(config.optimizer)
    if iterator is not None:
        task_kwargs = {**task_kwargs, "iterator_train": iterator, "iterator_valid": iterator}
    if batch_transform is not None:
        task_kwargs = {**task_kwargs, "batch_transform": batch_transform}
    with torch_seed(seed, config.device):
        net = net_class(
            module=module,
            **{f"module__{k}": v for k, v in module_kwargs.items()},
            criterion=criterion,
            **task_kwargs,
            optimizer=optimizer,
            lr=float(config.lr),
            optimizer__weight_decay=float(config.weight_decay),
            **{f"optimizer__{k}": v for k, v in optimizer_kwargs.items()},
            max_epochs=int(config.max_epochs),
            batch_size=batch_size,
            train_split=None if valid_data is None else predefined_split(valid_data),
            callbacks=callbacks,
            iterator_train__shuffle=True,
            iterator_train__generator=torch.Generator().manual_seed(seed),
            iterator_train__drop_last=drop_last,
            **_loader_settings(config, train_data, valid_data),
            device=config.device,
            verbose=int(config.verbose),
            compile=bool(config.compile),
        )
        net.initialize()
        if on_initialized is not None:
            on_initialized(net)
        if str(config.device).startswith("cuda"):
            net.module_.to(memory_format=torch.channels_last)
        with plain_worker_errors(), cudnn_autotune(config.device):
            net.partial_fit(train_data, train_data.y)  # unreadable image: its message
    if config.compile:  # the compiled wrappers share the modules' parameters: unwrap them
        net.module_ = getattr(net.module_, "_orig_mod", net.module_)
        net.criterion_ = getattr(net.criterion_, "_orig_mod", net.criterion_)
        net.compile = False
    return net


@contextlib.contextmanager
def cudnn_autotune(device):
    """cuDNN picks the fastest convolution algorithms inside the block on CUDA (training
    batches have fixed sizes); the global setting comes back after."""
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = was or str(device).startswith("cuda")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


def net_to_cpu(net):
    """Move a trained skorch net (module, criterion, optimizer state if any) to the CPU."""
    if str(net.device) == "cpu":
        return
    net.module_.to("cpu", memory_format=torch.contiguous_format)
    if getattr(net, "criterion_", None) is not None:
        net.criterion_.to("cpu")
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is not None:
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.cpu()
    net.device = "cpu"


def finish_training(net):
    """Trim a trained skorch net for prediction, in place, on the CPU; return its history.

    Drops the optimizer, callbacks, training-loader settings (the shuffling generator,
    workers), a decoded-image store's loaders and the batch augmentation; keeps the history
    and the loss (with its class weights).
    """
    from torch.utils.data import DataLoader

    history, criterion = net.history, net.criterion_
    net.history = type(history)()  # trim_for_prediction clears the history in place
    net.trim_for_prediction()
    net.history, net.criterion, net.criterion_ = history, type(criterion), criterion
    for key in [k for k in vars(net) if k.startswith("iterator_train__")]:
        delattr(net, key)
    net.iterator_valid = DataLoader  # trim_for_prediction dropped iterator_train
    net.batch_transform = None
    net_to_cpu(net)
    net.module_.eval()
    return history


def train_classifier(items, y_idx, classes, *, params, device, seed, metadata=None,
                     activation_cache=None, groups=None, **module_kwargs):  # fmt: skip
    """Train a :class:`.modules.ClassifierNetwork` on images (and metadata rows).

    What the fine-tuned encoder and the fusion network share: a stratified validation
    split (``validation_fraction``; no group on both sides when ``groups`` are given:
    :func:`validation_split`), augmentation of the training images (``augment``),
    class-weighted cross-entropy (``class_weight``), the backbone settings (``backbone``,
    ``weights``, ``pooling``, ``image_size``, ``freeze``) and a :class:`TrainingConfig`, all
    read from the estimator's parameters ``params``. ``module_kwargs`` go to the network
    (the fusion network's metadata branch). Returns the skorch net (module on ``device``).

    With ``params["trainable_blocks"]`` set, trains the top of the network on cached
    activations instead (:func:`train_partial`; ``activation_cache(trunk_key)`` gives the
    cache).
    """
    from .data import ImageDataset, augmentation
    from .modules import ClassifierNetwork

    if params.get("trainable_blocks") is not None:
        return train_partial(
            items, y_idx, classes, params=params, device=device, seed=seed, metadata=metadata,
            activation_cache=activation_cache, groups=groups, **module_kwargs,
        )  # fmt: skip
    size = int(params["image_size"])
    train, valid = validation_split(len(items), y_idx, params["validation_fraction"], seed, groups)
    module_args = dict(
        backbone=params["backbone"],
        weights=params["weights"],
        pooling=params["pooling"],
        n_classes=len(classes),
        image_size=size,
        freeze=params["freeze"],
        **module_kwargs,
    )
    store = resolve_store(
        params.get("image_store", "auto"), device, params["augment"], len(items), size
    )
    if store is not None:
        return _train_from_store(
            items, y_idx, classes, store, train, valid, module_args, params=params,
            device=device, seed=seed, metadata=metadata,
        )  # fmt: skip

    def dataset(rows, transform=None):
        rows_metadata = None if metadata is None else metadata[rows]
        images = [items[i] for i in rows]
        return ImageDataset(
            images, size, y=y_idx[rows], metadata=rows_metadata, transform=transform
        )

    return train_network(
        ClassifierNetwork,
        module_args,
        dataset(train, augmentation(params["augment"], size)),
        valid_data=None if valid is None else dataset(valid),
        config=TrainingConfig.from_params(params, device=device),
        seed=seed,
        n_classes=len(classes),
        class_weight=class_weights(params["class_weight"], classes, y_idx),
    )


def _train_from_store(items, y_idx, classes, store, train, valid, module_args, *, params,
                      device, seed, metadata):  # fmt: skip
    """:func:`train_classifier` on images decoded once (``store``: "memory" or "disk"),
    served in whole batches (on the device when they fit) and augmented there."""
    from .augment import BatchAugment, PerImage
    from .modules import ClassifierNetwork
    from .store import StoreDataset, StoreLoader, decoded_store, on_device_if_it_fits

    augment = params["augment"]
    transform = BatchAugment() if augment is True else PerImage(augment) if augment else None
    with decoded_store(
        items, int(module_args["image_size"]), store, batch_size=int(params["batch_size"]),
        num_workers=params["num_workers"], verbose=int(params["verbose"]) > 1,
    ) as pixels:  # fmt: skip
        pixels = on_device_if_it_fits(pixels, device)

        def dataset(rows):
            rows_metadata = None if metadata is None else metadata[rows]
            return StoreDataset(pixels, rows, y=y_idx[rows], metadata=rows_metadata)

        return train_network(
            ClassifierNetwork, module_args, dataset(train),
            valid_data=None if valid is None else dataset(valid),
            config=TrainingConfig.from_params(params, device=device, num_workers=0),
            seed=seed, n_classes=len(classes),
            class_weight=class_weights(params["class_weight"], classes, y_idx),
            iterator=StoreLoader, batch_transform=transform,
        )  # fmt: skip


def train_partial(items, y_idx, classes, *, params, device, seed, activation_cache,
                  metadata=None, groups=None, **module_kwargs):  # fmt: skip
    """Train the last ``params["trainable_blocks"]`` stages and the head on cached activations.

    The trunk's activations of every image are computed once for each of the first
    ``cached_views`` views (one view without ``augment``), through ``activation_cache``;
    each epoch draws one view per training image. Returns the skorch net whose
    ``module_`` is the whole :class:`.modules.ClassifierNetwork` (its trunk frozen) and
    whose ``module`` / ``module__*`` settings rebuild it, as :func:`train_classifier`'s do.
    """
    from .backbones import backbone_stages
    from .modules import ClassifierNetwork
    from .partial import ActivationDataset, split_network, trunk_key, view_activations
    from .views import views_for

    size = int(params["image_size"])
    k = int(params["trainable_blocks"])
    with torch_seed(seed, device):
        net = ClassifierNetwork(
            backbone=params["backbone"], weights=params["weights"], pooling=params["pooling"],
            n_classes=len(classes), image_size=size, **module_kwargs,
        )  # fmt: skip
    n_stages = len(backbone_stages(net.embedder.features))
    if not 1 <= k < n_stages:
        split_network(net, k, size)  # raises the clear error
    net.freeze(n_stages - k)
    trunk, top, shape = split_network(net, k, size)
    top.features_only = False
    key = trunk_key(trunk, params["backbone"])
    net.to(device)
    views = views_for(params["cached_views"] if params["augment"] else 1)
    acts = view_activations(
        items, trunk, views, cached=activation_cache(key), image_size=size,
        batch_size=int(params["batch_size"]), device=device, num_workers=params["num_workers"],
        verbose=int(params["verbose"]) > 1,
    )  # fmt: skip
    train, valid = validation_split(len(items), y_idx, params["validation_fraction"], seed, groups)

    def dataset(rows, random_view):
        return ActivationDataset(
            acts[:, rows] if random_view else acts[:1, rows], shape, y=y_idx[rows],
            metadata=None if metadata is None else metadata[rows], random_view=random_view,
        )  # fmt: skip

    trained = train_network(
        top, {}, dataset(train, len(views) > 1),
        valid_data=None if valid is None else dataset(valid, False),
        config=TrainingConfig.from_params(params, device=device, num_workers=0),
        seed=seed, n_classes=len(classes),
        class_weight=class_weights(params["class_weight"], classes, y_idx),
    )  # fmt: skip
    trained.module_ = net
    # the net as train_classifier's would be: a class and its arguments (model files read them)
    trained.module = ClassifierNetwork
    module_args = dict(
        backbone=params["backbone"], weights=params["weights"], pooling=params["pooling"],
        n_classes=len(classes), image_size=size, freeze=n_stages - k, **module_kwargs,
    )  # fmt: skip
    for name, value in module_args.items():
        setattr(trained, f"module__{name}", value)
    return trained
