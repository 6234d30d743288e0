"""FusionNetClassifier: a CNN and a metadata branch trained end to end (late fusion)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._cache import check_cache_dir
from ._columns import IMAGE_COLUMN, METADATA_COLUMNS
from ._late_fusion import LateFusionClassifier
from ._nn import params
from ._nn.device import TorchEstimatorMixin
from ._nn.estimator import FineTuningMixin, fill_doc
from ._utils._images import validate_images
from ._utils._sklearn import (
    HasMethods,
    Interval,
    StrOptions,
    _check_feature_names,
    _check_n_features,
    _fit_context,
)
from ._utils._validation import store_params
from .images import as_image_list, check_image_files

__all__ = ["FusionNetClassifier", "LateFusionClassifier"]


@fill_doc
class FusionNetClassifier(FineTuningMixin, TorchEstimatorMixin, ClassifierMixin, BaseEstimator):
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
    {backbone_parameters}
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
    metadata_dropout : float, default=0.0
        In training, each metadata column of each row is set missing with this
        probability, independently (as the fitted preprocessor encodes a missing value:
        the imputed age and its indicator, the "missing" sex or site). A network trained
        so predicts from the image alone when a clinic records no metadata, and from the
        columns it has when it records some; 0 trains on the metadata as given. Needs a
        ``metadata`` transformer that encodes each column apart from the others and a
        missing value always the same way (the default one does).
    modality_dropout : float, default=0.0
        In training, all the metadata of a row set missing at once with this probability
        (encoded as ``metadata_dropout`` encodes a missing column), on top of
        ``metadata_dropout``'s drops of single columns: the network then also learns to
        predict from the image alone, as it must where a clinic records no metadata. Per
        column, ``metadata_dropout=0.3`` leaves all three columns missing together in
        fewer than 3 % of the rows. Needs the same kind of ``metadata`` transformer.
    {network_parameters}
    dropout : float, default=0.2
        Dropout on the fused vector.
    {fine_tuning_parameters}
    {training_parameters}
    tta : int, default=1
        Test-time augmentation: ``predict_proba`` averages the probabilities of the
        first ``tta`` fixed views (1: none; 2: and the mirror image; 4: the flips and
        the half turn; 8: the eight symmetries of the square).
    cache : bool, default=True
        Keep the activations of ``trainable_blocks`` in memory, keyed by image.
    cache_dir : str or None, default=None
        Also keep them on disk there.
    {performance_parameters}
    {random_state_parameters}
    {callback_parameters}

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
        "metadata_dropout": [Interval(Real, 0, 1, closed="left")],
        "modality_dropout": [Interval(Real, 0, 1, closed="left")],
        "pooling": [StrOptions({"avg", "max", "avgmax"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        **params.TRAINING,
        **params.FINE_TUNING,
        **params.TTA,
        **params.RUNTIME,
        **params.TRAINING_HOOKS,
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
        metadata_dropout=0.0,
        modality_dropout=0.0,
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
        view_jitter=False,
        image_store="auto",
        activation_memory="2GiB",
        compile=False,
        tta=1,
        num_workers=None,
        device="auto",
        precision="auto",
        cache=True,
        cache_dir=None,
        random_state=None,
        verbose=0,
        callbacks=None,
        checkpoint_dir=None,
    ):
        store_params(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.allow_nan = self.metadata is not None  # missing metadata is imputed
        tags.classifier_tags.poor_score = True
        tags.non_deterministic = False
        return tags

    def _inert_parameters(self) -> list[str]:
        inert = super()._inert_parameters()
        if not hasattr(self.metadata, "fit") and tuple(self.metadata_columns) != METADATA_COLUMNS:
            inert.append("metadata_columns is only used with a metadata transformer")
        if self.metadata is None and self.metadata_hidden != 64:
            inert.append("metadata_hidden is not used without metadata")
        if self.metadata is None and self.metadata_dropout:
            inert.append("metadata_dropout is not used without metadata")
        if self.metadata is None and self.modality_dropout:
            inert.append("modality_dropout is not used without metadata")
        return inert

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

    def _dropout_setting(self):
        return ", ".join(
            f"{name}={getattr(self, name)}"
            for name in ("metadata_dropout", "modality_dropout")
            if getattr(self, name)
        )

    def _missing_encoding(self, X, meta):
        """What :class:`~skinfuse._nn.modules.MetadataDropout` needs: which features encode
        each metadata column, and their values when it is missing, read from the fitted
        preprocessor by setting each column missing in the training rows."""
        columns = [
            c
            for name, _, cols in self.metadata_.transformers_
            if name != "remainder"
            for c in ([cols] if isinstance(cols, str) else cols)
        ]
        missing = np.full(meta.shape[1], np.nan)
        features = []
        for column in columns:
            X_missing = X.copy()
            X_missing[column] = np.nan
            try:
                encoded = self._metadata_matrix(X_missing, len(X))
            except ValueError as error:
                raise ValueError(
                    f"{self._dropout_setting()} sets metadata columns missing "
                    f"(NaN) in training, but the metadata transformer refuses a missing "
                    f"{column!r} ({error}). Put an imputer in front of it, or set "
                    "metadata_dropout=0 and modality_dropout=0"
                ) from error
            changed = np.flatnonzero((encoded != meta).any(axis=0))
            values = encoded[:, changed]
            clash = changed[~np.isnan(missing[changed])]
            if len(clash) or not (values == values[:1]).all():
                raise ValueError(
                    f"{self._dropout_setting()}: the metadata transformer "
                    f"does not encode column {column!r} apart from the others, or encodes a "
                    "missing value of it differently from row to row; use the default "
                    "metadata preprocessor (metadata='default'), or metadata_dropout=0 and "
                    "modality_dropout=0"
                )
            missing[changed] = values[0] if len(values) else []
            features.append(changed.tolist())
        missing = np.where(np.isnan(missing), 0.0, missing)
        return {"p": float(self.metadata_dropout), "p_all": float(self.modality_dropout),
                "columns": features, "missing": missing.astype(float).tolist()}  # fmt: skip

    # -- fit -----------------------------------------------------------------------------
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
        from .metadata import make_metadata_preprocessor

        items, X = self._columns(X, reset=True)
        y_idx, seed, groups = self._start_fit(items, y, groups)

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
        extra = {}
        if (self.metadata_dropout or self.modality_dropout) and self.metadata_ is not None:
            extra["metadata_dropout"] = self._missing_encoding(X, meta)

        check_cache_dir(self.cache_dir, cache=self.cache)
        net = self._train(
            items, y_idx, seed, groups, metadata=meta, n_metadata=meta.shape[1],
            metadata_hidden=self.metadata_hidden, dropout=self.dropout, **extra,
        )  # fmt: skip
        self._keep(net)
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
        from ._nn.views import ViewOf, check_views, views_for

        check_is_fitted(self, "net_")
        items, X = self._columns(X, reset=False)
        device = self._inference_device()
        module = self._module_on(self.module_, device, "network")
        meta = None if self.metadata_ is None else self._metadata_matrix(X, len(items))
        views = views_for(check_views(self.tta))
        size = int(self.image_size)
        if self.trainable_blocks is not None:
            logits = self._partial_outputs(
                module, items, views, device, features_only=False, metadata=meta
            )
            return logits.astype(np.float64)
        logits = []
        for view in views:
            logits.append(embed(
                ViewOf(module, view), items, size,
                batch_size=int(self.batch_size), device=device, num_workers=self.num_workers,
                metadata=meta, precision=self._precision(device),
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
        from scipy.special import softmax

        return softmax(self._view_logits(X), axis=2).mean(axis=0)

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
