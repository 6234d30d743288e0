"""LateFusionClassifier: an image model and a metadata model, combined by Bayes' rule."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._utils._sklearn import HasMethods, Interval, StrOptions, _fit_context
from ._utils._validation import check_labels

__all__ = ["LateFusionClassifier"]


class LateFusionClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Combine an image-only model and a metadata-only model by Bayes' rule.

    In one network or one MLP over thousands of image features, three metadata columns
    are easily drowned. Late fusion keeps them apart: both models are fitted on the
    same ``(X, y)`` and their probabilities are combined as if image and metadata were
    independent given the diagnosis::

        p(y | image, metadata) ∝ p(y | image) * (p(y | metadata) / p(y)) ** metadata_weight

    where ``p(y)`` is the class frequency in the training labels. The metadata model
    then shifts the image model's probabilities towards the diagnoses that are common
    for that age, sex and site, by how much more (or less) common they are there than
    overall. Nothing is fitted on the combination itself, so no inner cross-validation
    is needed.

    Parameters
    ----------
    image_model : classifier
        Fitted on ``X`` (e.g. ``make_fusion_pipeline(encoder, metadata=None)`` or
        ``FusionNetClassifier(metadata=None)``); must have ``predict_proba``.
    metadata_model : classifier or "default", default="default"
        ``"default"``: ``make_fusion_pipeline(None, classifier="logreg")`` (metadata
        preprocessed, then a logistic regression).
    metadata_weight : float, default=1.0
        Power of the metadata likelihood ratio; ``0`` gives the image model alone.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    image_model_, metadata_model_ : fitted classifiers
    class_prior_ : ndarray of shape (n_classes,)
        Class frequencies in the training labels.

    Examples
    --------
    >>> from skinfuse.datasets import make_synthetic_lesions
    >>> from skinfuse.encoders import FrozenCNNEncoder
    >>> from skinfuse.fusion import LateFusionClassifier
    >>> from skinfuse.pipeline import make_fusion_pipeline
    >>> lesions = make_synthetic_lesions(60, image_size=32, random_state=0)
    >>> image = make_fusion_pipeline(
    ...     FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32),
    ...     metadata=None, classifier="logreg")
    >>> model = LateFusionClassifier(image).fit(lesions.data, lesions.target)
    >>> model.predict_proba(lesions.data).shape
    (60, 7)
    """

    _parameter_constraints: dict = {
        "image_model": [HasMethods(["fit", "predict_proba"])],
        "metadata_model": [StrOptions({"default"}), HasMethods(["fit", "predict_proba"])],
        "metadata_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, image_model, metadata_model="default", *, metadata_weight=1.0):
        self.image_model = image_model
        self.metadata_model = metadata_model
        self.metadata_weight = metadata_weight

    def _metadata_model(self):
        from .pipeline import make_fusion_pipeline

        if isinstance(self.metadata_model, str):
            return make_fusion_pipeline(None, classifier="logreg")
        return self.metadata_model

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, **fit_params):
        """Fit both models on ``(X, y)``.

        Parameters
        ----------
        X : DataFrame
            The image column and the metadata columns.
        y : array-like of shape (n_samples,)
        **fit_params : dict
            Only with scikit-learn's metadata routing enabled: routed to the two models'
            ``fit`` as they request them (e.g. ``groups``, which a
            :class:`~skinfuse.fusion.FusionNetClassifier` requests for its early stopping).

        Returns
        -------
        self : LateFusionClassifier
        """
        from sklearn.utils.metadata_routing import _raise_for_params, process_routing

        _raise_for_params(fit_params, self, "fit")
        self.classes_, y_idx = check_labels(self, X, y)
        y = np.asarray(y)
        self.class_prior_ = np.bincount(y_idx, minlength=len(self.classes_)) / len(y_idx)
        if fit_params:
            routed = process_routing(self, "fit", **fit_params)
            image_params, metadata_params = routed.image_model.fit, routed.metadata_model.fit
        else:
            image_params = metadata_params = {}
        self.image_model_ = clone(self.image_model).fit(X, y, **image_params)
        self.metadata_model_ = clone(self._metadata_model()).fit(X, y, **metadata_params)
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            self.n_features_in_ = len(X.columns)
        return self

    def get_metadata_routing(self):
        """How ``fit``'s metadata reach the two models (scikit-learn's metadata routing).

        Returns
        -------
        routing : MetadataRouter
        """
        from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping

        mapping = MethodMapping().add(caller="fit", callee="fit")
        return (
            MetadataRouter(owner=type(self).__name__)
            .add(image_model=self.image_model, method_mapping=mapping)
            .add(metadata_model=self._metadata_model(), method_mapping=mapping)
        )

    def _aligned(self, model, X):
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        out = np.full((len(proba), len(self.classes_)), 1e-12)
        out[:, np.searchsorted(self.classes_, model.classes_)] = proba
        return np.clip(out, 1e-12, None)

    def predict_proba(self, X):
        """Combined class probabilities.

        Parameters
        ----------
        X : DataFrame

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "image_model_")
        image = self._aligned(self.image_model_, X)
        metadata = self._aligned(self.metadata_model_, X)
        prior = np.clip(self.class_prior_, 1e-12, None)
        log = np.log(image) + float(self.metadata_weight) * (np.log(metadata) - np.log(prior))
        log -= log.max(axis=1, keepdims=True)
        proba = np.exp(log)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Most probable class.

        Parameters
        ----------
        X : DataFrame

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
