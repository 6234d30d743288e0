"""FusionNetClassifier: a CNN and a metadata branch trained end to end (late fusion)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._cache import activation_cache, check_cache_dir
from ._columns import IMAGE_COLUMN, METADATA_COLUMNS
from ._late_fusion import LateFusionClassifier
from ._nn import params
from ._nn.device import (
    TorchEstimatorMixin,
    TrainedNetworkMixin,
    resolve_device,
    seed_from_random_state,
)
from ._utils._sklearn import (
    HasMethods,
    Interval,
    StrOptions,
    _check_feature_names,
    _check_n_features,
    _fit_context,
)
from ._utils._validation import check_labels
from .encoders._base import validate_images
from .images import as_image_list, check_image_files

__all__ = ["FusionNetClassifier", "LateFusionClassifier"]


class FusionNetClassifier(TrainedNetworkMixin, TorchEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A CNN and a metadata MLP trained together, fused before the classifier head.

    The joint, end-to-end model: images go through a pretrained backbone
    (fine-tuned), the preprocessed metadata (age, sex, localization) through a
    small MLP, and the two vectors are concatenated (late fusion) before a linear
    head. It takes the same DataFrame as the fusion pipelines (``image_path`` and
    metadata columns) and preprocesses the metadata itself, with
    :func:`~skinfuse.metadata.make_metadata_preprocessor` fitted on the training
    data. Training uses skorch: class-weighted cross-entropy, AdamW, a cosine
    learning-rate schedule, early stopping on a stratified validation split and
    augmentation of the training images only (the loop is shared with
    :class:`~skinfuse.encoders.FineTunedCNNEncoder`).

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        See :class:`~skinfuse.encoders.FrozenCNNEncoder`.
    weights : "DEFAULT", None or str, default="DEFAULT"
        Pretrained weights, random initialisation, or a checkpoint path.
    image_column : str, default="image_path"
        Column of image paths.
    metadata : "default", transformer or None, default="default"
        ``"default"``: :func:`~skinfuse.metadata.make_metadata_preprocessor`; a
        transformer is applied to ``metadata_columns``; ``None`` trains the image
        branch alone (the ablation). With ``None``, ``X`` may also be a column of
        images in any form the encoders take (paths, or an ``(n, H, W, C)``
        array); a feature matrix is refused.
    metadata_columns : sequence of str, default=("age", "sex", "localization")
        Columns of a custom ``metadata`` transformer.
    metadata_hidden : int, default=64
        Width of the metadata branch.
    image_size : int, default=224
    pooling : {"avg", "max", "avgmax"}, default="avg"
    dropout : float, default=0.2
        Dropout on the fused vector.
    max_epochs : int, default=10
    lr : float, default=3e-4
    batch_size : int, default=32
    optimizer : {"adamw", "adam", "sgd"} or optimizer class, default="adamw"
    weight_decay : float, default=1e-4
    freeze : None, "backbone" or int, default=None
        Backbone stages left untrained, as in ``FineTunedCNNEncoder``.
    class_weight : "balanced", "sqrt", dict or None, default="balanced"
        Weights of the cross-entropy loss (``"sqrt"``: square root of balanced).
    augment : bool or callable, default=True
        Random resized crop, flips, 90° rotations and colour jitter on training images.
    validation_fraction : float, default=0.1
        Stratified hold-out for early stopping (whole groups when ``fit`` gets
        ``groups``); 0 trains on everything, without it.
    patience : int or None, default=5
        Early-stopping patience (epochs).
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy loss.
    warmup_epochs : float, default=0
        Linear learning-rate warm-up over this many epochs (stepped every batch, from
        ``lr / steps`` up to ``lr``), then the cosine decay over the remaining epochs.
    trainable_blocks : int or None, default=None
        Partial fine-tuning from cached activations, as in ``FineTunedCNNEncoder``:
        only the last ``k`` backbone stages, the metadata branch and the head are
        trained, on activations of the frozen stages computed once per image and view.
    cached_views : int, default=4
        With ``trainable_blocks``: fixed views (flips, rotations) cached for training.
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
        Test-time augmentation: ``predict_proba`` averages the probabilities of the
        first ``tta`` fixed views (1: none; 2: and the mirror image; 4: the flips and
        the half turn; 8: the eight symmetries of the square).
    cache : bool, default=True
        Keep the activations of ``trainable_blocks`` in memory, keyed by image.
    cache_dir : str or None, default=None
        Also keep them on disk there.
    num_workers : int or None, default=None
        DataLoader workers decoding images.
    device : str, default="auto"
        ``"auto"``: CUDA, then MPS, then CPU (``device_``).
    random_state : int, RandomState or None, default=None
        Seed of initialisation, split, shuffling and augmentation (scoped, never global).
    verbose : int, default=0
        1: skorch's epoch table; 2: also batch progress bars.

    Attributes
    ----------
    classes_ : ndarray
    metadata_ : ColumnTransformer or None
        The fitted metadata preprocessor.
    net_ : skorch.NeuralNetClassifier
        The trained network, trimmed for prediction, on the CPU.
    module_ : torch.nn.Module
        ``net_.module_``: ``.embedder`` (CNN), ``.metadata`` (MLP), ``.head``.
    cnn_ : torch.nn.Module
        The backbone.
    cam_layer_ : str
        Dotted name, inside ``module_``, of the last convolutional block.
    history_ : skorch.History
    device_ : str
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> from skinfuse.datasets import make_synthetic_lesions
    >>> from skinfuse.fusion import FusionNetClassifier
    >>> lesions = make_synthetic_lesions(60, image_size=32, n_classes=3, random_state=0)
    >>> net = FusionNetClassifier("tiny_cnn", weights=None, image_size=32, max_epochs=2,
    ...                           validation_fraction=0, random_state=0)
    >>> net.fit(lesions.data, lesions.target).predict_proba(lesions.data).shape
    (60, 3)
    """

    _parameter_constraints: dict = {
        **params.BACKBONE,
        "image_column": [str],
        "metadata": [StrOptions({"default"}), HasMethods(["fit", "transform"]), None],
        "metadata_columns": ["array-like"],
        "metadata_hidden": [Interval(Integral, 1, None, closed="left")],
        "pooling": [StrOptions({"avg", "max", "avgmax"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        **params.TRAINING,
        **params.FINE_TUNING,
        **params.TTA,
        **params.RUNTIME,
        **params.CACHE,
    }

    def __init__(
        self,
        backbone="efficientnet_lite0",
        *,
        weights="DEFAULT",
        image_column=IMAGE_COLUMN,
        metadata="default",
        metadata_columns=METADATA_COLUMNS,
        metadata_hidden=64,
        image_size=224,
        pooling="avg",
        dropout=0.2,
        max_epochs=10,
        lr=3e-4,
        batch_size=32,
        optimizer="adamw",
        weight_decay=1e-4,
        freeze=None,
        class_weight="balanced",
        augment=True,
        validation_fraction=0.1,
        patience=5,
        label_smoothing=0.0,
        warmup_epochs=0,
        trainable_blocks=None,
        cached_views=4,
        image_store="auto",
        compile=False,
        tta=1,
        num_workers=None,
        device="auto",
        cache=True,
        cache_dir=None,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_column = image_column
        self.metadata = metadata
        self.metadata_columns = metadata_columns
        self.metadata_hidden = metadata_hidden
        self.image_size = image_size
        self.pooling = pooling
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.freeze = freeze
        self.class_weight = class_weight
        self.augment = augment
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.label_smoothing = label_smoothing
        self.warmup_epochs = warmup_epochs
        self.trainable_blocks = trainable_blocks
        self.cached_views = cached_views
        self.image_store = image_store
        self.compile = compile
        self.tta = tta
        self.num_workers = num_workers
        self.device = device
        self.cache = cache
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.allow_nan = self.metadata is not None  # missing metadata is imputed
        tags.classifier_tags.poor_score = True
        tags.non_deterministic = False
        return tags

    def __setstate__(self, state):
        # pickled before these parameters existed: their defaults
        new = {"warmup_epochs": 0, "image_store": "auto", "compile": False}
        super().__setstate__({**new, **state})

    # -- input ---------------------------------------------------------------------------
    def _columns(self, X, *, reset):
        """Validate ``X``; return (list of images, DataFrame of metadata columns)."""
        if self.metadata is None:  # image branch alone: a column of images, as encoders take
            if hasattr(X, "columns") and self.image_column in X.columns:
                X = X[[self.image_column]]
            return validate_images(self, X, reset=reset), None
        if not hasattr(X, "columns"):
            raise TypeError(
                f"{type(self).__name__} takes a DataFrame with an {self.image_column!r} column "
                f"and metadata columns; got {type(X).__name__}. Use e.g. "
                "load_ham10000(...).data or make_synthetic_lesions(...).data."
            )
        _check_feature_names(self, X, reset=reset)
        _check_n_features(self, X, reset=reset)
        if self.image_column not in X.columns:
            raise ValueError(
                f"X has no image column {self.image_column!r} (columns: {list(X.columns)}); "
                "pass image_column= the name of the column of image paths"
            )
        if len(X) == 0:
            raise ValueError("Found array with 0 sample(s); at least 1 is required.")
        items = as_image_list(X[self.image_column])
        check_image_files(items, on_error="raise")
        return items, X

    def _metadata_matrix(self, X, n):
        if self.metadata_ is None:
            return np.zeros((n, 0), dtype=np.float32)
        return np.asarray(self.metadata_.transform(X), dtype=np.float32)

    # -- fit -----------------------------------------------------------------------------
    # groups are requested by default: with metadata routing on, cross_validate(...,
    # params={"groups": lesion_ids}) groups both the folds and the early-stopping split
    __metadata_request__fit = {"groups": True}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Train the network end to end.

        Parameters
        ----------
        X : DataFrame
            ``image_column`` plus the metadata columns.
        y : array-like of shape (n_samples,)
            Labels.
        groups : array-like of shape (n_samples,), default=None
            Group of each image (HAM10000: its ``lesion_id``). When given, the
            early-stopping split (``validation_fraction``) holds out whole groups, so the
            epoch kept never scored an image of a training lesion. Requested by default
            under scikit-learn's metadata routing (``set_fit_request``).

        Returns
        -------
        self : FusionNetClassifier
        """
        from ._nn.training import check_groups, finish_training, train_classifier
        from .metadata import make_metadata_preprocessor

        items, X = self._columns(X, reset=True)
        self.classes_, y_idx = check_labels(self, items, y)
        groups = check_groups(groups, len(items))
        self.device_ = resolve_device(self.device)
        self._forget_device_copies()
        seed = seed_from_random_state(self.random_state)

        if isinstance(self.metadata, str):
            self.metadata_ = make_metadata_preprocessor().fit(X)
        elif self.metadata is None:
            self.metadata_ = None
        else:
            from sklearn.compose import ColumnTransformer

            self.metadata_ = ColumnTransformer(
                [("metadata", clone(self.metadata), list(self.metadata_columns))]
            ).fit(X)
        meta = self._metadata_matrix(X, len(items))

        if self.cache and self.cache_dir is not None:
            check_cache_dir(self.cache_dir)
        net = train_classifier(
            items, y_idx, self.classes_, params=self.get_params(deep=False),
            device=self.device_, seed=seed, metadata=meta, groups=groups, n_metadata=meta.shape[1],
            metadata_hidden=self.metadata_hidden, dropout=self.dropout,
            activation_cache=lambda key: activation_cache(self, key, self.device_),
        )  # fmt: skip
        history = finish_training(net)
        self.net_ = net
        self.history_ = history
        self.n_iter_ = len(history)
        self.cam_layer_ = net.module_.cam_layer
        return self

    # -- fitted parts --------------------------------------------------------------------
    @property
    def cnn_(self):
        """The fine-tuned backbone (``module_.embedder.features``)."""
        return self.module_.embedder.features

    # -- prediction ----------------------------------------------------------------------
    def _view_logits(self, X):
        """Logits of each of the ``tta`` views, float64 ``(n_views, n, n_classes)``."""
        from ._nn.inference import embed
        from ._nn.partial import run_top, split_network, trunk_key, view_activations
        from ._nn.views import ViewOf, check_views, views_for

        check_is_fitted(self, "net_")
        items, X = self._columns(X, reset=False)
        device = self._inference_device()
        module = self._module_on(self.module_, device, "network")
        meta = None if self.metadata_ is None else self._metadata_matrix(X, len(items))
        views = views_for(check_views(self.tta))
        size = int(self.image_size)
        if self.trainable_blocks is not None:
            trunk, top, shape = split_network(module, self.trainable_blocks, size, check=False)
            top.features_only = False
            acts = view_activations(
                items, trunk, views, cached=activation_cache(self, trunk_key(trunk, self.backbone), device),
                image_size=size, batch_size=int(self.batch_size), device=device,
                num_workers=self.num_workers,
            )  # fmt: skip
            return run_top(top, acts, shape, device=device, metadata=meta).astype(np.float64)
        logits = []
        for view in views:
            logits.append(embed(
                ViewOf(module, view), items, size,
                batch_size=int(self.batch_size), device=device, num_workers=self.num_workers,
                metadata=meta,
            ))  # fmt: skip
        return np.stack(logits).astype(np.float64)

    def predict_proba(self, X):
        """Class probabilities (the mean over the ``tta`` views).

        Parameters
        ----------
        X : DataFrame
            ``image_column`` plus the metadata columns.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        logits = self._view_logits(X)
        logits -= logits.max(axis=2, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=2, keepdims=True)
        return proba.mean(axis=0)

    def predict(self, X):
        """Predicted labels.

        Parameters
        ----------
        X : DataFrame

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)  # checks that the model is fitted first
        return self.classes_[proba.argmax(axis=1)]

    def __skinfuse_gradcam__(self, X):
        """``skinfuse.explain.grad_cam``'s protocol: the network with each case's metadata fixed.

        Returns ``(module, layer, image_size, classes_)``; ``module`` maps ``[0, 1]`` float
        images of the cases in ``X`` (in order; any batch size when ``len(X) == 1``) to logits.
        """
        from ._nn.modules import FixedMetadata

        items, X = self._columns(X, reset=False)
        module = FixedMetadata(self.module_, self._metadata_matrix(X, len(items)))
        return module, f"net.{self.cam_layer_}", int(self.image_size), self.classes_
