"""FineTunedCNNEncoder: a CNN fine-tuned on the diagnoses, used as a supervised image encoder."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .._nn import params
from .._nn.device import TrainedNetworkMixin, resolve_device, seed_from_random_state
from .._utils._sklearn import Interval, StrOptions, _fit_context
from .._utils._validation import check_labels, scalar
from ._base import BaseImageEncoder


class FineTunedCNNEncoder(TrainedNetworkMixin, ClassifierMixin, BaseImageEncoder):
    """Fine-tune a CNN on the labels and use its penultimate layer as image embedding.

    ``fit`` puts a linear head on a backbone (pretrained by default) and trains
    both on the images and their diagnoses with class-weighted cross-entropy,
    a cosine learning-rate schedule, train-time augmentation and early stopping
    on a stratified validation split (skorch ``NeuralNetClassifier``, ``net_``).
    ``transform`` returns the globally pooled features of the fine-tuned
    backbone (the head's input) as ``float32``; ``predict``/``predict_proba``
    use the head, so the encoder is also a classifier of its own.

    **Leakage.** A fine-tuned network has seen the labels of its training
    images: their embeddings are more separable than those of new images, and a
    model trained on them downstream would trust them too much. So
    ``fit_transform(X, y)`` (what a ``Pipeline`` calls) cross-fits, as
    scikit-learn's ``TargetEncoder`` does: it trains the final network on all
    images (the one ``transform`` and ``predict`` use later), and with
    ``cross_fit=k`` also ``k`` networks on ``k - 1`` folds each
    (``StratifiedKFold``), and embeds every image with the network that did not
    see it. With ``align_folds=True`` each fold's embeddings are mapped into the
    final network's space by a ridge regression fitted on the fold's *training*
    images only. ``fit(X, y)`` followed by ``transform(X)`` on the same images
    gives the leaky embeddings, as does ``cross_fit=None``. The folds are
    stratified by class, not grouped by lesion. Measurements and advice:
    ``docs/encoders.md``.

    Training costs ``cross_fit + 1`` fine-tunings in ``fit_transform`` and one
    in ``fit``. Embeddings of the final network are cached by image and trained
    weights; the out-of-fold embeddings are not cached.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        A name from :data:`~skinfuse.encoders.BACKBONES` (see
        :class:`FrozenCNNEncoder`), or any module mapping ``(B, 3, H, W)``
        images to a feature map (it is copied, never trained in place).
    weights : "DEFAULT", None or str, default="DEFAULT"
        Pretrained weights, random initialisation (seeded by
        ``random_state``), or a local checkpoint path. Ignored for a module.
    image_size : int, default=224
        Images are resized to ``image_size x image_size``.
    pooling : {"avg", "max", "avgmax"}, default="avg"
        Global pooling of the last feature map; ``"avgmax"`` concatenates both.
    freeze : None, "backbone" or int, default=None
        What is not trained. ``None``: nothing (full fine-tuning of the whole network).
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
        Share of the training images held out (stratified by class; whole
        groups when ``fit`` gets ``groups``) to compute ``valid_loss`` and
        ``valid_acc`` after every epoch, for early stopping. ``0`` trains on
        all images for ``max_epochs`` epochs.
    patience : int or None, default=5
        Stop when ``valid_loss`` has not improved for this many epochs, and
        restore the weights of the best epoch. ``None`` (or
        ``validation_fraction=0``) trains for ``max_epochs`` epochs.
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy loss (e.g. ``0.1``).
    warmup_epochs : float, default=0
        Linear learning-rate warm-up over this many epochs (stepped every batch, from
        ``lr / steps`` up to ``lr``), then the cosine decay over the remaining epochs.
    trainable_blocks : int or None, default=None
        Partial fine-tuning from cached activations. ``None``: train from the
        images (what ``freeze`` leaves trainable). An int ``k``: train only the
        last ``k`` backbone stages (see ``freeze`` for what a stage is) and the
        head; the activations of the frozen stages are computed once per image
        and per view (``cached_views``), kept in the embedding cache (``cache``,
        ``cache_dir``), and every epoch runs the last stages only, which makes
        fine-tuning practical on a CPU. ``augment`` then means drawing one
        cached view per image and epoch (no crops or colour jitter). The
        fitted network is whole: it embeds and predicts new images end to end,
        taking its frozen stages' activations from the cache when they are
        there. Needs a backbone that runs its stages in sequence (the named
        ones do; a clear error says so otherwise).
    cached_views : int, default=4
        With ``trainable_blocks``: how many fixed views of each image (the
        first of: identity, horizontal flip, vertical flip, half turn, quarter
        turns, transposes) have their activations cached for training.
    image_store : {"auto", "memory", "disk"} or None, default="auto"
        Where the training images live during ``fit`` (full fine-tuning; with
        ``trainable_blocks`` activations are cached instead). ``"memory"``: each image
        is decoded and resized once per fit into one ``uint8`` array, served in whole
        batches (on the GPU when it fits there) and augmented batch-wise on the device;
        ``"disk"``: the same array memory-mapped in the temporary directory; ``None``:
        DataLoader workers decode every image again in every epoch and augment it on
        the CPU. ``"auto"``: ``"memory"`` on CUDA (``"disk"`` past 8 GiB), ``None``
        elsewhere and with a callable ``augment``.
    compile : bool, default=False
        Train through ``torch.compile`` (skorch's ``compile=True``): slower to start (the
        first batches compile), possibly faster epochs on a GPU. The fitted network is
        the plain module either way (pickles, model files and Grad-CAM see no difference).
    tta : int, default=1
        Test-time augmentation: ``transform`` returns the mean embedding of the
        first ``tta`` views (same order as ``cached_views``; 1: none, 2: and the
        mirror image, 4: the flips and the half turn, 8: all eight symmetries
        of the square), each view cached, and ``predict_proba`` uses it.
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
    classifier tags (``is_classifier`` is True, ``fit`` requires ``y``,
    ``score`` is accuracy). Inside a ``Pipeline`` only
    ``fit_transform``/``transform`` are used.

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
        **params.BACKBONE,
        "pooling": [StrOptions({"avg", "max", "avgmax"})],
        **params.TRAINING,
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        **params.FINE_TUNING,
        **params.TTA,
        "cross_fit": [Interval(Integral, 2, None, closed="left"), "boolean", None],
        "align_folds": ["boolean"],
        **params.RUNTIME,
        **params.CACHE,
    }

    def __init__(
        self,
        backbone="efficientnet_lite0",
        *,
        weights="DEFAULT",
        image_size=224,
        pooling="avg",
        freeze=None,
        max_epochs=10,
        lr=3e-4,
        batch_size=32,
        optimizer="adamw",
        weight_decay=1e-4,
        augment=True,
        class_weight="balanced",
        validation_fraction=0.1,
        patience=5,
        label_smoothing=0.0,
        warmup_epochs=0,
        trainable_blocks=None,
        cached_views=4,
        image_store="auto",
        compile=False,
        tta=1,
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
        self.label_smoothing = label_smoothing
        self.warmup_epochs = warmup_epochs
        self.trainable_blocks = trainable_blocks
        self.cached_views = cached_views
        self.image_store = image_store
        self.compile = compile
        self.tta = tta
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

    def __setstate__(self, state):
        # pickled before these parameters existed: their defaults
        new = {"warmup_epochs": 0, "image_store": "auto", "compile": False}
        super().__setstate__({**new, **state})

    # -- fitting -------------------------------------------------------------------------
    # groups are requested by default: under metadata routing, a pipeline's or
    # cross_validate's params={"groups": lesion_ids} reach the early-stopping split
    __metadata_request__fit = {"groups": True}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Fine-tune the backbone and a linear head on the images and their labels.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.
        y : array-like of shape (n_images,)
            Labels (any hashable values, e.g. diagnosis codes); at least 2
            classes.
        groups : array-like of shape (n_images,), default=None
            Group of each image (HAM10000: its ``lesion_id``): the early-stopping
            split holds out whole groups. Requested by default under scikit-learn's
            metadata routing.

        Returns
        -------
        self : FineTunedCNNEncoder
            The fitted encoder.
        """
        items, y_idx, seed, groups = self._prepare(X, y, groups)
        self._fit_final(items, y_idx, seed, groups)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, groups=None):
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
        groups : array-like of shape (n_images,), default=None
            Group of each image (its lesion): the cross-fitting folds
            (``StratifiedGroupKFold``) and every early-stopping split hold out whole
            groups, so no image is embedded by a network that trained on its lesion.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out), dtype float32
            Out-of-fold embeddings (with ``cross_fit``), else the final
            network's.
        """
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        if self.cross_fit is True:
            raise ValueError(
                "cross_fit=True is ambiguous; pass the number of folds (an int >= 2, e.g. 3) "
                "or None/False for fit(X, y).transform(X) (leaky embeddings)."
            )
        items, y_idx, seed, groups = self._prepare(X, y, groups)
        if not self.cross_fit:
            self._fit_final(items, y_idx, seed, groups)
            return self._embed(items)
        k = int(self.cross_fit)
        counts = np.bincount(y_idx, minlength=len(self.classes_))
        if counts.min() < k:
            rare = scalar(self.classes_[counts.argmin()])
            raise ValueError(
                f"cross_fit={k} needs at least {k} images of every class, but class "
                f"{rare!r} has {counts.min()}. Pass a smaller cross_fit (>= 2), or "
                "cross_fit=None for fit(X, y).transform(X), whose embeddings of the "
                "training images are leaky."
            )
        if self.verbose:
            print(f"cross-fitting: final network ({len(items)} training images)")
        self._fit_final(items, y_idx, seed, groups)
        final = self._embed(items)  # also what transform(X) returns later (cached)
        out = np.empty_like(final)
        if groups is None:
            splits = StratifiedKFold(k, shuffle=True, random_state=seed % 2**32).split(final, y_idx)
        else:
            n_groups = len(np.unique(groups))
            if n_groups < k:
                raise ValueError(
                    f"cross_fit={k} with groups needs at least {k} distinct groups, but the "
                    f"images have {n_groups}. Pass a smaller cross_fit or more groups."
                )
            folds = StratifiedGroupKFold(k, shuffle=True, random_state=seed % 2**32)
            splits = folds.split(final, y_idx, groups)
        for fold, (train, held_out) in enumerate(splits):
            if self.verbose:
                print(f"cross-fitting: fold {fold + 1}/{k} ({len(train)} training images)")
            net = self._train(
                [items[i] for i in train], y_idx[train], seed,
                None if groups is None else groups[train],
            )  # fmt: skip
            todo = held_out if not self.align_folds else np.concatenate([held_out, train])
            emb = self._encode_views(net.module_, [items[i] for i in todo])
            del net
            if self.align_folds:
                out[held_out] = _align(emb[len(held_out) :], final[train], emb[: len(held_out)])
            else:
                out[held_out] = emb
        return out

    def _prepare(self, X, y, groups):
        """Validate ``X``, ``y`` and ``groups``; set ``classes_``, ``device_``; draw the seed."""
        from .._nn.training import check_groups

        items = self._validate_images(X, reset=True)
        self.classes_, y_idx = check_labels(self, items, y)
        groups = check_groups(groups, len(items))
        self.device_ = resolve_device(self.device)
        self._forget_device_copies()
        return items, y_idx, seed_from_random_state(self.random_state), groups

    def _fit_final(self, items, y_idx, seed, groups=None):
        from .._nn.hashing import hash_config, hash_module, with_disk_flag
        from .._nn.training import finish_training

        net = self._train(items, y_idx, seed, groups)
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
        # a user's module: its code counts too (and no disk cache where it cannot be read)
        code = "" if isinstance(self.backbone, str) else hash_module(self.backbone)
        self.config_key_ = with_disk_flag(
            code,
            hash_config(
                "FineTunedCNNEncoder",
                int(self.image_size),
                self.pooling,
                code,
                state_dict=module.embedder.state_dict(),
            ),
        )

    def _train(self, items, y_idx, seed, groups=None):
        """Fine-tune one network on ``items``; return the skorch net (module on ``device_``)."""
        from .._cache import activation_cache
        from .._nn.training import train_classifier

        return train_classifier(
            items, y_idx, self.classes_, params=self.get_params(deep=False),
            device=self.device_, seed=seed, groups=groups,
            activation_cache=lambda key: activation_cache(self, key, self.device_),
        )  # fmt: skip

    # -- fitted parts --------------------------------------------------------------------
    @property
    def embedder_(self):
        """Normalisation, fine-tuned backbone and pooling (``module_.embedder``)."""
        return self.module_.embedder

    @property
    def cnn_(self):
        """The fine-tuned backbone (``module_.embedder.features``)."""
        return self.module_.embedder.features

    def _embedding_module(self):
        return self.embedder_

    def _encode(self, images, view, device):
        if self.trainable_blocks is None:
            return super()._encode(images, view, device)
        module = self._module_on(self.module_, device, "network")
        return self._encode_with(module, images, view, device)

    def _encode_views(self, module, images):
        """Mean embedding of the ``tta`` views of ``images`` by ``module`` (a fold's network)."""
        from .._nn.views import views_for

        views = views_for(self.tta)
        out = self._encode_with(module, images, views[0], self.device_)
        for view in views[1:]:
            out += self._encode_with(module, images, view, self.device_)
        return out / np.float32(len(views))

    def _encode_with(self, module, images, view, device):
        """Embeddings of one view of ``images`` by the network ``module`` (not cached); with
        ``trainable_blocks``, from the cached activations of its frozen stages."""
        from .._cache import activation_cache
        from .._nn.inference import embed
        from .._nn.partial import run_top, split_network, trunk_key, view_activations
        from .._nn.views import ViewOf

        if self.trainable_blocks is None:
            return embed(
                ViewOf(module.embedder, view), images, int(self.image_size),
                batch_size=int(self.batch_size), device=device, num_workers=self.num_workers,
                verbose=self.verbose > 1, desc=f"encoding ({view})",
            )  # fmt: skip
        trunk, top, shape = split_network(module, self.trainable_blocks, int(self.image_size),
                                          check=False)  # fmt: skip
        acts = view_activations(
            images, trunk, [view], cached=activation_cache(self, trunk_key(trunk, self.backbone), device),
            image_size=int(self.image_size), batch_size=int(self.batch_size), device=device,
            num_workers=self.num_workers, verbose=self.verbose > 1,
        )  # fmt: skip
        return run_top(top, acts, shape, device=device)[0]

    # -- inference -----------------------------------------------------------------------
    def predict_proba(self, X):
        """Class probabilities from the fine-tuned network.

        Computed from the (cached) embeddings through the linear head, so
        ``transform`` and ``predict_proba`` on the same images run the
        backbone once.

        Parameters
        ----------
        X : column of images
            As :meth:`transform` takes.

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
            As :meth:`transform` takes.

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

    def _logits(self, embeddings):
        head = self.module_.head
        weight = head.weight.detach().cpu().numpy().astype(np.float64)
        bias = head.bias.detach().cpu().numpy().astype(np.float64)
        return embeddings.astype(np.float64) @ weight.T + bias


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
