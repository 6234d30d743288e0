"""Fusion pipelines: image embedding + metadata -> (selection) -> (resampling) -> classifier."""

from __future__ import annotations

import warnings
from collections import Counter
from numbers import Integral, Real

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from ._utils._sklearn import HasMethods, Interval, _fit_context
from .metadata import make_metadata_preprocessor

__all__ = ["AdaptiveSMOTE", "PriorCorrectedClassifier", "make_fusion_pipeline"]

METADATA_COLUMNS = ("age", "sex", "localization")


class AdaptiveSMOTE(BaseOverSampler):
    """SMOTE that shrinks ``k_neighbors`` to fit the smallest class instead of failing.

    SMOTE needs ``k_neighbors + 1`` samples in every class it over-samples. In a
    cross-validation fold a rare class can have fewer (HAM10000's ``df`` has 99
    images; a small subset far fewer). This sampler then uses
    ``k_neighbors = n_min - 1`` (with a warning naming the class), and falls back to
    random over-sampling when a class has a single sample, so a grid search does
    not crash on one unlucky fold.

    Parameters
    ----------
    sampling_strategy : str, float or dict, default="auto"
        As in :class:`imblearn.over_sampling.SMOTE`.
    k_neighbors : int, default=5
        Neighbours used to synthesise new samples, when the classes allow it.
    random_state : int, RandomState or None, default=None
        Seed of the synthetic samples.

    Attributes
    ----------
    k_neighbors_ : int
        The number of neighbours actually used (0: random over-sampling was used).
    sampling_strategy_ : dict
        Samples generated per class.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(24, dtype=float).reshape(12, 2)
    >>> y = np.array([0] * 9 + [1] * 3)
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     X_res, y_res = AdaptiveSMOTE(random_state=0).fit_resample(X, y)
    >>> np.bincount(y_res).tolist()
    [9, 9]
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "k_neighbors": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, sampling_strategy="auto", k_neighbors=5, random_state=None):
        super().__init__(sampling_strategy=sampling_strategy)
        self.k_neighbors = k_neighbors
        self.random_state = random_state

    def _fit_resample(self, X, y):
        counts = Counter(y)
        targets = [c for c, n in self.sampling_strategy_.items() if n > 0]
        if not targets:
            self.k_neighbors_ = self.k_neighbors
            return X, y
        smallest = min(targets, key=lambda c: counts[c])
        k = min(self.k_neighbors, counts[smallest] - 1)
        if k < self.k_neighbors:
            how = f"k_neighbors={k}" if k >= 1 else "random over-sampling"
            warnings.warn(
                f"AdaptiveSMOTE: class {smallest!r} has only {counts[smallest]} samples, fewer "
                f"than k_neighbors + 1 = {self.k_neighbors + 1}; using {how} instead.",
                UserWarning,
                stacklevel=2,
            )
        # the inner sampler takes target totals per class, not numbers to generate
        totals = {c: counts[c] + n for c, n in self.sampling_strategy_.items()}
        if k >= 1:
            sampler = SMOTE(sampling_strategy=totals, k_neighbors=k, random_state=self.random_state)
        else:
            sampler = RandomOverSampler(sampling_strategy=totals, random_state=self.random_state)
        self.k_neighbors_ = max(k, 0)
        return sampler.fit_resample(X, y)


class PriorCorrectedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Divide a classifier's probabilities by the training class prior to a power.

    Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit
    adjustment", ICLR 2021): a model fitted on imbalanced data predicts
    ``p(y | x)`` under the training prior ``pi``. Returning
    ``p(y | x) / pi_y ** power`` (renormalised) gives the posterior under the
    flatter prior ``pi ** (1 - power)``: ``power=0`` leaves the model as is,
    ``power=1`` assumes equally likely classes (the choice that maximises
    balanced accuracy for a calibrated model), values in between trade accuracy
    for recall of the rare classes. Nothing is refitted, so ``power`` can be
    grid-searched cheaply with the embedding cache.

    The prior is counted from the ``y`` the wrapped classifier is fitted on: after an
    over-sampler in a pipeline it is already flat and the correction does nothing.

    Parameters
    ----------
    estimator : classifier with predict_proba
        Cloned and fitted in ``fit``.
    power : float, default=0.5
        Exponent of the prior, in [0, 1].

    Attributes
    ----------
    estimator_ : classifier
        The fitted clone.
    classes_ : ndarray of shape (n_classes,)
    class_prior_ : ndarray of shape (n_classes,)
        Class frequencies in the training ``y``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When the wrapped estimator has them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.r_[np.zeros((90, 1)), np.ones((10, 1))] + np.linspace(0, 0.9, 100)[:, None]
    >>> y = np.r_[np.zeros(90), np.ones(10)]
    >>> model = PriorCorrectedClassifier(LogisticRegression(), power=1.0).fit(X, y)
    >>> model.class_prior_.tolist()
    [0.9, 0.1]
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "power": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, estimator, *, power=0.5):
        self.estimator = estimator
        self.power = power

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, **fit_params):
        """Fit a clone of ``estimator`` and count the class prior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        self : PriorCorrectedClassifier
        """
        self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        self.classes_ = self.estimator_.classes_
        y = np.asarray(y)
        self.class_prior_ = np.array([np.mean(y == c) for c in self.classes_])
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, attr):
                setattr(self, attr, getattr(self.estimator_, attr))
        return self

    def predict_proba(self, X):
        """Class probabilities under the flattened prior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "estimator_")
        proba = self.estimator_.predict_proba(X)
        # a class absent from y (prior 0) keeps weight 1: nothing to correct
        weights = np.where(self.class_prior_ > 0, self.class_prior_, 1.0) ** -float(self.power)
        proba = proba * weights
        total = proba.sum(axis=1, keepdims=True)
        return np.divide(proba, total, out=np.full_like(proba, 1 / proba.shape[1]), where=total > 0)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class under the flattened prior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.classifier_tags = inner.classifier_tags
        tags.target_tags = inner.target_tags
        return tags


def _make_classifier(classifier, class_weight, random_state):
    if isinstance(classifier, str):
        if classifier == "mlp":
            if class_weight is not None:
                raise ValueError(
                    "classifier='mlp' does not take class_weight; balance the classes with "
                    "sampler='smote' instead, or use classifier='logreg' or 'rf'"
                )
            return MLPClassifier(
                hidden_layer_sizes=(256,),
                alpha=1e-3,
                early_stopping=True,
                max_iter=300,
                random_state=random_state,
            )
        if classifier == "rf":
            return RandomForestClassifier(
                n_estimators=300, class_weight=class_weight, n_jobs=-1, random_state=random_state
            )
        if classifier == "logreg":
            # tol=1e-3: on standardised features it scores as sklearn's 1e-4 does (within 0.001
            # balanced accuracy on HAM10000 embeddings) at 2-4x fewer lbfgs iterations
            return LogisticRegression(max_iter=2000, tol=1e-3, class_weight=class_weight)
        raise ValueError(
            f"classifier must be 'mlp', 'rf', 'logreg' or a scikit-learn classifier; got {classifier!r}"
        )
    if not (hasattr(classifier, "fit") and hasattr(classifier, "predict")):
        raise TypeError(f"classifier must be a scikit-learn classifier; got {classifier!r}")
    if class_weight is not None:
        if "class_weight" not in classifier.get_params():
            raise ValueError(
                f"{type(classifier).__name__} has no class_weight parameter; leave class_weight=None "
                "and balance the classes with a sampler instead"
            )
        classifier = classifier.set_params(class_weight=class_weight)
    return classifier


def _make_sampler(sampler, random_state):
    if sampler is None or sampler == "passthrough":
        return "passthrough"
    if sampler == "smote":
        return AdaptiveSMOTE(random_state=random_state)
    if isinstance(sampler, str):
        raise ValueError(f"sampler must be 'smote', None or an imblearn sampler; got {sampler!r}")
    if not hasattr(sampler, "fit_resample"):
        raise TypeError(f"sampler must have fit_resample (an imblearn sampler); got {sampler!r}")
    return sampler


def _metadata_columns(preprocessor):
    cols = []
    for _, _, columns in preprocessor.transformers:
        cols.extend(columns if not isinstance(columns, str) else [columns])
    return cols


def make_fusion_pipeline(
    encoder=None,
    *,
    image_column: str = "image_path",
    metadata="default",
    metadata_columns=METADATA_COLUMNS,
    scale: bool = True,
    select_k=None,
    sampler="smote",
    classifier="mlp",
    class_weight=None,
    prior_correction=None,
    random_state=None,
) -> Pipeline:
    """Build the fusion model: image embedding and metadata side by side, then a classifier.

    The result is an imbalanced-learn ``Pipeline`` with steps

    ``features`` (``ColumnTransformer``: ``image`` = ``encoder`` on ``image_column``,
    ``metadata`` = the metadata preprocessor) -> ``scale`` (``StandardScaler``) ->
    ``select`` (``SelectKBest(f_classif)``, the ANOVA F-test) -> ``sampler`` (SMOTE)
    -> ``classifier``.

    Disabled steps are ``"passthrough"``, so a grid can switch them on and off, and every
    knob is reachable as ``step__param``: ``features__image__lr``,
    ``select__k``, ``classifier__alpha``... The sampler is a top-level step (imblearn
    refuses samplers in nested pipelines) and only runs in ``fit``.

    Parameters
    ----------
    encoder : transformer or None, default=None
        An image encoder (e.g. :class:`~skinfuse.encoders.FrozenCNNEncoder`). ``None``
        gives the metadata-only model.
    image_column : str, default="image_path"
        Column of image paths in ``X``.
    metadata : "default", transformer or None, default="default"
        ``"default"`` uses :func:`~skinfuse.metadata.make_metadata_preprocessor`; a
        transformer is applied to ``metadata_columns``; ``None`` gives the image-only
        model.
    metadata_columns : sequence of str, default=("age", "sex", "localization")
        Columns fed to a custom metadata transformer.
    scale : bool, default=True
        Standardise the fused features (embeddings are not on the metadata's scale).
    select_k : int, "all" or None, default=None
        Keep the ``k`` features with the highest ANOVA F-score (``SelectKBest(f_classif)``).
    sampler : "smote", imblearn sampler or None, default="smote"
        ``"smote"`` is :class:`AdaptiveSMOTE`, which adapts ``k_neighbors`` to small classes.
    classifier : {"mlp", "rf", "logreg"} or estimator, default="mlp"
        The final classifier. ``"mlp"``: ``MLPClassifier((256,), alpha=1e-3,
        early_stopping=True)``; ``"rf"``: 300 trees; ``"logreg"``:
        ``LogisticRegression(tol=1e-3, max_iter=2000)`` (the features are
        standardised, so a looser tolerance than scikit-learn's 1e-4 scores the
        same in 2-4x fewer iterations).
    class_weight : "balanced", dict or None, default=None
        Set on classifiers that take it (``"rf"``, ``"logreg"``, most linear models).
    prior_correction : float in [0, 1] or None, default=None
        Wrap the classifier in :class:`PriorCorrectedClassifier` with this
        ``power``: its probabilities are divided by the training class prior to
        that power, trading a little accuracy for recall of rare classes without
        refitting (use with ``sampler=None``: after SMOTE the prior is flat). Its
        knobs become ``classifier__power`` and ``classifier__estimator__...``.
    random_state : int, RandomState or None, default=None
        Seed of SMOTE and of the built-in classifiers.

    Returns
    -------
    pipeline : imblearn.pipeline.Pipeline

    Examples
    --------
    >>> from skinfuse.encoders import FrozenCNNEncoder
    >>> from skinfuse.pipeline import make_fusion_pipeline
    >>> model = make_fusion_pipeline(FrozenCNNEncoder(), classifier="logreg")
    >>> [name for name, _ in model.steps]
    ['features', 'scale', 'select', 'sampler', 'classifier']
    """
    if encoder is None and metadata is None:
        raise ValueError("make_fusion_pipeline needs an encoder, metadata, or both; got neither")
    branches = []
    if encoder is not None:
        if not isinstance(encoder, BaseEstimator) or not hasattr(encoder, "transform"):
            raise TypeError(f"encoder must be a scikit-learn transformer; got {encoder!r}")
        branches.append(("image", encoder, [image_column]))
    if metadata is not None:
        if isinstance(metadata, str) and metadata == "default":
            preprocessor = make_metadata_preprocessor()
            columns = _metadata_columns(preprocessor)
        elif isinstance(metadata, str):
            raise ValueError(f"metadata must be 'default', a transformer or None; got {metadata!r}")
        else:
            preprocessor = metadata
            columns = list(metadata_columns)
        branches.append(("metadata", preprocessor, columns))
    if select_k is not None and select_k != "all":
        if not isinstance(select_k, Integral) or select_k < 1:
            raise ValueError(f"select_k must be a positive int, 'all' or None; got {select_k!r}")
    steps = [
        ("features", ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=True)),
        ("scale", StandardScaler() if scale else "passthrough"),
        ("select", SelectKBest(f_classif, k=select_k) if select_k is not None else "passthrough"),
        ("sampler", _make_sampler(sampler, random_state)),
        ("classifier", _make_classifier(classifier, class_weight, random_state)),
    ]
    if prior_correction is not None:
        steps[-1] = ("classifier", PriorCorrectedClassifier(steps[-1][1], power=prior_correction))
    return Pipeline(steps)
