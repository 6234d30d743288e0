"""FineTunedCNNEncoder: a CNN fine-tuned on the diagnoses, used as a supervised image encoder."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .._nn import params
from .._nn.estimator import FineTuningMixin, fill_doc
from .._utils._sklearn import Interval, StrOptions, _fit_context
from .._utils._validation import scalar, store_params
from ._base import BaseImageEncoder


@fill_doc
class FineTunedCNNEncoder(FineTuningMixin, ClassifierMixin, BaseImageEncoder):
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
    stratified by class, and hold out whole lesions when ``fit_transform`` gets
    ``groups`` (``StratifiedGroupKFold``). Measurements and advice:
    ``docs/encoders.md``.

    Training costs ``cross_fit + 1`` fine-tunings in ``fit_transform`` and one
    in ``fit``. Embeddings of the final network are cached by image and trained
    weights; the out-of-fold embeddings are not cached.

    Parameters
    ----------
    {backbone_parameters}
    {network_parameters}
    {fine_tuning_parameters}
    {training_parameters}
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
    cache : bool, default=True
        Keep embeddings in memory, keyed by image and trained weights.
    cache_dir : str or None, default=None
        Also keep them on disk there, for later processes.
    {performance_parameters}
    {random_state_parameters}
    {callback_parameters}

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
        **params.TRAINING_HOOKS,
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
        view_jitter=False,
        image_store="auto",
        activation_memory="2GiB",
        compile=False,
        tta=1,
        cross_fit=3,
        align_folds=True,
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
        # a few epochs of a small CNN on the checks' random data: no accuracy promise
        tags.classifier_tags.poor_score = True
        return tags

    # -- fitting -------------------------------------------------------------------------
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
        from .._nn.splits import cross_fit_splits

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
        for fold, (train, held_out) in enumerate(cross_fit_splits(k, y_idx, seed, groups)):
            if self.verbose:
                print(f"cross-fitting: fold {fold + 1}/{k} ({len(train)} training images)")
            net = self._train(
                [items[i] for i in train], y_idx[train], seed,
                None if groups is None else groups[train], run=f"fold-{fold + 1}",
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
        items = self._validate_images(X, reset=True)
        return items, *self._start_fit(items, y, groups)

    def _fit_final(self, items, y_idx, seed, groups=None):
        from .._nn.hashing import hash_config, hash_module, with_disk_flag

        net = self._train(items, y_idx, seed, groups)
        self._keep(net)
        criterion, module = net.criterion_, net.module_
        self.class_weight_ = (
            np.ones(len(self.classes_))
            if criterion.weight is None
            else criterion.weight.detach().cpu().numpy().astype(np.float64)
        )
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

    def _encode(self, images, view, device, *, engine="torch"):
        if self.trainable_blocks is None:
            return super()._encode(images, view, device, engine=engine)
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
        from .._nn.inference import embed
        from .._nn.views import ViewOf

        if self.trainable_blocks is None:
            return embed(
                ViewOf(module.embedder, view), images, int(self.image_size),
                batch_size=int(self.batch_size), device=device, num_workers=self.num_workers,
                verbose=self.verbose > 1, desc=f"encoding ({view})",
                precision=self._precision(device),
            )  # fmt: skip
        return self._partial_outputs(
            module, images, [view], device, features_only=True, verbose=self.verbose > 1
        )[0]

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
        from scipy.special import softmax

        return softmax(self._logits(X), axis=1)

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
        logits = self._logits(X)  # checks that the encoder is fitted first
        return self.classes_[logits.argmax(axis=1)]

    def __skinfuse_gradcam__(self, X):
        """``skinfuse.explain.grad_cam``'s protocol: the network that ``predict_proba`` runs.

        Returns ``(module_, cam_layer_, image_size, classes_)``: ``module_`` maps
        ``[0, 1]`` float images to class logits whose softmax is ``predict_proba``.
        """
        check_is_fitted(self, "net_")
        return self.module_, self.cam_layer_, int(self.image_size), self.classes_

    def _logits(self, X):
        """The head's float64 logits of the (cached) embeddings of ``X``."""
        check_is_fitted(self, "net_")
        embeddings = self._embed(self._validate_images(X, reset=False))
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
