"""What the fine-tuned encoder and the fusion network share (no torch at import).

Both train a :class:`.modules.ClassifierNetwork` through skorch on the same settings:
:class:`FineTuningMixin` owns the start of a fit (labels, groups, device, seed), the
training (one :class:`.spec.NetworkSpec` built per fit, :func:`.fitting.train_classifier`),
the fitted attributes of the trained net, and the inference path of partial fine-tuning
(frozen stages' activations from the cache, then the trained top). :data:`SHARED_DOCS`
holds the shared parameters' documentation, written once and substituted into each
estimator's docstring by :func:`fill_doc` (as imbalanced-learn shares its samplers' docs).
"""

from __future__ import annotations

from .device import TrainedNetworkMixin, resolve_device, seed_from_random_state
from .spec import NetworkSpec

SHARED_DOCS = {
    "backbone_parameters": """\
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        A name from :data:`~skinfuse.encoders.BACKBONES` (see
        :class:`~skinfuse.encoders.FrozenCNNEncoder`), a timm model by name
        (``"timm:convnext_tiny.fb_in22k"``, ``"hf-hub:<org>/<name>"``; normalised with
        its ``pretrained_cfg``), or any module mapping ``(B, 3, H, W)`` images to a
        feature map (it is copied, never trained in place; normalised with its
        ``pretrained_cfg`` attribute's mean and std when it has one, else ImageNet's).
    weights : "DEFAULT", None or str, default="DEFAULT"
        Pretrained weights, random initialisation (seeded by ``random_state``), or a
        local checkpoint path (for a timm name, any file timm reads, such as
        ``.safetensors``). Ignored for a module.""",
    "network_parameters": """\
    image_size : int, default=224
        Images are resized to ``image_size x image_size``.
    pooling : {"avg", "max", "avgmax"}, default="avg"
        Global pooling of the last feature map; ``"avgmax"`` concatenates both.""",
    "training_parameters": """\
    max_epochs : int, default=10
        Most passes over the training images (early stopping may end sooner).
    lr : float, default=3e-4
        Learning rate at the start of the cosine schedule (it decays to 0 at
        ``max_epochs``).
    batch_size : int, default=32
        Images per training step, and per forward pass at inference.
    optimizer : {"adamw", "adam", "sgd"} or torch optimizer class, default="adamw"
        ``"sgd"`` uses momentum 0.9. A class is called as
        ``optimizer(params, lr=lr, weight_decay=weight_decay)``.
    weight_decay : float, default=1e-4
        Weight decay (decoupled for ``"adamw"``).""",
    "fine_tuning_parameters": """\
    freeze : None, "backbone" or int, default=None
        What is not trained. ``None``: nothing (full fine-tuning of the whole network).
        ``"backbone"``: only the head (a linear probe, with augmentation). An int ``k``:
        the first ``k`` stages of the backbone, counted from the input. Stages are the
        backbone's top-level blocks that hold weights, with a normalisation layer joined
        to the block before it (e.g. ``efficientnet_lite0``: stem, its 7 block groups,
        head conv: 9 stages; ``resnet18``: stem, ``layer1`` to ``layer4``: 5). Frozen
        stages also keep their batch-norm statistics.
    class_weight : "balanced", "sqrt", dict or None, default="balanced"
        Weights of the classes in the cross-entropy loss. ``"balanced"``: inversely
        proportional to the class frequencies (scikit-learn's ``compute_class_weight``),
        so that rare diagnoses count; ``"sqrt"``: its square root (milder). A dict maps
        labels to weights (missing labels weigh 1). ``None``: all 1.
    augment : bool or callable, default=True
        Random training-time transforms, applied to training batches only (validation
        and inference see the images as they are): a random resized crop (60-100% of
        the area), horizontal and vertical flips, a random multiple of 90 degrees of
        rotation, and brightness, contrast and saturation jitter of 20% (no hue jitter:
        colour is diagnostic). A callable replaces them; it receives and must return a
        ``uint8`` ``(3, image_size, image_size)`` tensor (e.g. a
        ``torchvision.transforms.v2.Compose``).
    validation_fraction : float, default=0.1
        Share of the training images held out (stratified by class; whole groups when
        ``fit`` gets ``groups``) to compute ``valid_loss`` and ``valid_acc`` after every
        epoch, for early stopping. ``0`` trains on all images for ``max_epochs`` epochs.
    patience : int or None, default=5
        Stop when ``valid_loss`` has not improved for this many epochs, and restore the
        weights of the best epoch. ``None`` (or ``validation_fraction=0``) trains for
        ``max_epochs`` epochs.
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy loss (e.g. ``0.1``).
    warmup_epochs : float, default=0
        Linear learning-rate warm-up over this many epochs (stepped every batch, from
        ``lr / steps`` up to ``lr``), then the cosine decay over the remaining epochs.
    trainable_blocks : int or None, default=None
        Partial fine-tuning from cached activations. ``None``: train from the images
        (what ``freeze`` leaves trainable). An int ``k``: train only the last ``k``
        backbone stages (see ``freeze`` for what a stage is) and the head (and the
        metadata branch); the activations of the frozen stages are computed once per
        image and per view (``cached_views``), kept in the embedding cache (``cache``,
        ``cache_dir``), and every epoch runs the last stages only, which makes
        fine-tuning practical on a CPU. ``augment`` then means drawing one cached view
        per image and epoch (no crops or colour jitter). The fitted network is whole: it
        predicts new images end to end, taking its frozen stages' activations from the
        cache when they are there. Needs a backbone that runs its stages in sequence
        (the named ones do; a clear error says so otherwise).
    cached_views : int, default=4
        With ``trainable_blocks``: how many fixed views of each image (the first of:
        identity, horizontal flip, vertical flip, half turn, quarter turns, transposes)
        have their activations cached for training. Inert without it.
    view_jitter : bool, default=False
        With ``trainable_blocks``: each cached view but the first is also changed in
        colour, light and scale as another dermatoscope would change it (white balance,
        brightness, contrast, saturation, gamma, zoom, resolution; amounts drawn per image
        and fixed, so the cache keeps them): a network that depends less on the camera
        it was trained on. Inert without ``trainable_blocks``.""",
    "performance_parameters": """\
    image_store : {"auto", "memory", "disk"} or None, default="auto"
        Where the training images live during ``fit`` (full fine-tuning; with
        ``trainable_blocks`` activations are cached instead). ``"memory"``: each image is
        decoded and resized once per fit into one ``uint8`` array, served in whole
        batches (on the GPU when it fits there) and augmented batch-wise on the device;
        ``"disk"``: the same array memory-mapped in the temporary directory; ``None``:
        DataLoader workers decode every image again in every epoch and augment it on the
        CPU. ``"auto"``: ``"memory"`` on CUDA (``"disk"`` past 8 GiB), ``None``
        elsewhere and with a callable ``augment``. A speed setting: the results follow
        the same recipe either way.
    activation_memory : int, str or None, default="2GiB"
        With ``trainable_blocks``: the most memory the cached activations of one fit or
        prediction (every view of every image) take, in bytes or as a str such as
        ``"512MB"`` or ``"4GiB"``. They are stored as float16 (half of float32; float32
        where a backbone's activations exceed float16's range) in one array up to this
        size, which the in-memory embedding cache shares. Beyond it they are written, chunk
        by chunk, to a memory-mapped file under ``cache_dir`` (else the temporary directory,
        ``TMPDIR``: put it on a disk, not a RAM-backed tmpfs), removed after the fit, and
        not kept in memory between fits (``cache_dir`` keeps them on disk): the memory used
        stays flat as the number of images grows. ``None``: no limit. A memory setting:
        the results are the same either way. See :doc:`/scaling`.
    compile : bool, default=False
        Train through ``torch.compile`` (skorch's ``compile=True``): slower to start (the
        first batches compile), possibly faster epochs on a GPU; on a 2-core CPU, partial
        fine-tuning's epochs were about 5 % faster and the first one 41 s slower
        (``benchmarks/compile_speed.py``, docs/results.md). The fitted network is
        the plain module either way (pickles, model files and Grad-CAM see no
        difference).
    num_workers : int or None, default=None
        DataLoader workers decoding (and augmenting) images; ``None`` picks 0 for a
        single batch, else up to 4 leaving one core to the network. Results depend on it
        (each worker has its own random stream).
    device : str, default="auto"
        ``"auto"`` uses CUDA, then MPS, then the CPU. Resolved in ``fit``
        (``device_``). On CUDA, training and inference run channels-last. The fitted
        network is stored on the CPU and moved to ``device_`` for inference when that device exists (so a GPU-fitted model
        unpickles and runs on a CPU-only machine).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        The numeric precision of the network: ``"auto"`` runs bf16 autocast on CUDA and on
        CPUs with native bf16 matrix units (Intel AMX or AVX512-BF16, Arm BF16; detected from
        the CPU's flags), fp32 elsewhere (so results on other CPUs do not change);
        ``"fp32"`` and ``"bf16"`` force it. Embeddings are cached per precision.""",
    "callback_parameters": """\
    callbacks : list or None, default=None
        skorch callbacks (instances, or ``(name, callback)`` pairs as skorch takes them),
        added after the built-in ones (learning-rate schedule, early stopping, the epoch
        table) of every network this estimator trains: e.g.
        ``skorch.callbacks.TensorBoard``, ``WandbLogger``, a ``Checkpoint`` of the best
        epoch. Used as given (not copied; ``clone`` copies them with the estimator);
        not written into model files (``skinfuse.save`` stores ``callbacks=None``).
    checkpoint_dir : str, path-like or None, default=None
        Write this fit's resumable state (weights, optimizer, learning-rate schedule,
        early stopping, random streams, history) here after every epoch, one
        subdirectory per network trained (``final``, and ``fold-1`` ... for
        cross-fitting), and resume from it: a fit interrupted after epoch ``k`` and
        started again with the same data and settings continues at epoch ``k + 1`` and
        ends with the weights of an uninterrupted fit (on the CPU, bit for bit, with
        ``num_workers=0`` or a decoded-image store).
        A network whose fit finished is loaded without training. See
        :doc:`/training`. Not written into model files.""",
    "random_state_parameters": """\
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation of the head (and of the backbone when
        ``weights=None``), the validation split, shuffling and augmentation, in a scoped
        block (the global random state is left alone). The same int gives the same
        network on the same machine with the same ``num_workers`` (on the CPU; GPU
        kernels may differ in the last bits).
    verbose : int, default=0
        ``1``: print skorch's table of epochs; ``2``: also progress bars. ``0`` prints
        nothing.""",
}


def fill_doc(cls):
    """Substitute :data:`SHARED_DOCS` into ``cls.__doc__`` (each ``{name}`` placeholder on a
    line of its own); a placeholder left unfilled is an error, at import."""
    doc = cls.__doc__
    for name, text in SHARED_DOCS.items():
        doc = doc.replace("    {" + name + "}", text)
    if "_parameters}" in doc:
        raise ValueError(f"{cls.__name__}'s docstring has an unknown placeholder")
    cls.__doc__ = doc
    return cls


class FineTuningMixin(TrainedNetworkMixin):
    """Training and partial-fine-tuning inference of a ``ClassifierNetwork`` (mixin).

    For estimators with the parameters of :data:`SHARED_DOCS` and ``tta``, ``cache`` and
    ``cache_dir``; they set ``classes_`` (through :meth:`_start_fit`) and get ``net_``,
    ``history_``, ``n_iter_`` and ``cam_layer_`` (through :meth:`_keep`).
    """

    # groups are requested by default: under metadata routing, a pipeline's or
    # cross_validate's params={"groups": lesion_ids} reach the early-stopping split
    __metadata_request__fit = {"groups": True}

    def _start_fit(self, items, y, groups):
        """Set ``classes_`` and ``device_``; return ``(y_idx, seed, groups)`` checked."""
        from .._utils._validation import check_labels
        from .splits import check_groups

        self._warn_inert()
        self.classes_, y_idx = check_labels(self, items, y)
        groups = check_groups(groups, len(items))
        self.device_ = resolve_device(self.device)
        self._forget_device_copies()
        return y_idx, seed_from_random_state(self.random_state), groups

    def _inert_parameters(self) -> list[str]:
        """Parameters set away from their defaults that this configuration does not use."""
        inert = []
        if self.trainable_blocks is None:
            if self.cached_views != 4:
                inert.append("cached_views is only used with trainable_blocks")
            if self.view_jitter:
                inert.append("view_jitter is only used with trainable_blocks")
            if self.activation_memory != "2GiB":
                inert.append("activation_memory is only used with trainable_blocks")
        else:
            if self.freeze is not None:
                inert.append("freeze is replaced by trainable_blocks (all but the last stages)")
            if self.image_store != "auto":
                inert.append("image_store is only used without trainable_blocks")
            if callable(self.augment):
                inert.append(
                    "a callable augment is not applied with trainable_blocks (augment=True "
                    "draws one of the cached_views instead)"
                )
        return inert

    def _warn_inert(self):
        """Warn once per fit about settings that have no effect (as scikit-learn's
        ``LogisticRegression`` does for ``l1_ratio`` without the elastic net)."""
        import warnings

        from .._utils._validation import user_stacklevel

        inert = self._inert_parameters()
        if inert:
            warnings.warn(
                f"{type(self).__name__}: " + "; ".join(inert) + ". These settings are ignored.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def _train(self, items, y_idx, seed, groups=None, *, run="final", **module_kwargs):
        """Train one network on ``items``; return the skorch net (module on ``device_``).

        ``run`` names this network's subdirectory of ``checkpoint_dir`` (``"final"``,
        ``"fold-1"``, ...)."""
        from .fitting import train_classifier

        spec = NetworkSpec.from_estimator(self, device=self.device_, run=run)
        return train_classifier(
            items, y_idx, self.classes_, spec=spec,
            seed=seed, groups=groups, activation_cache=self._activation_cache(self.device_),
            **module_kwargs,
        )  # fmt: skip

    def _keep(self, net):
        """Trim the trained ``net`` and keep it as the fitted network; return its history."""
        from .training import finish_training

        history = finish_training(net)
        self.net_ = net
        self.history_ = history
        self.n_iter_ = len(history)
        self.cam_layer_ = net.module_.cam_layer
        return history

    def _activation_cache(self, device):
        """``cache(trunk_key)``: the cached activations of a trunk, for
        :func:`.partial.view_activations`, in this estimator's embedding cache."""
        from .._cache import activation_cache

        return lambda key: activation_cache(self, key, device)

    def _partial_outputs(self, module, items, views, device, *, features_only, metadata=None,
                         verbose=0):  # fmt: skip
        """With ``trainable_blocks``: the trained top of ``module`` over the cached activations of
        its frozen stages, float32 ``(n_views, n, d)``: pooled features or logits."""
        from .params import parse_memory
        from .partial import run_top, split_network, trunk_engine, view_activations
        from .spec import activation_dir

        size = int(self.image_size)
        trunk, top, shape = split_network(module, self.trainable_blocks, size, check=False)
        top.features_only = features_only
        precision = self._precision(device)
        n_images = len(items) * len(views)
        engine, key, cache_key = trunk_engine(trunk, self.backbone, device, precision, n_images)
        with view_activations(
            items, trunk, views, cached=self._activation_cache(device)(cache_key),
            image_size=size, batch_size=int(self.batch_size), device=device,
            num_workers=self.num_workers, verbose=verbose, precision=precision, engine=engine,
            key=key,
            # models saved before activation_memory existed: no limit, as then
            memory=parse_memory(getattr(self, "activation_memory", None)),
            folder=activation_dir(self),
        ) as acts:  # fmt: skip
            # the trained top runs in fp32, as it was trained (:func:`.fitting._train_partial`)
            return run_top(top, acts, shape, device=device, metadata=metadata, precision="fp32")
