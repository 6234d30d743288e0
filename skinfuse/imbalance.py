"""Learning from imbalanced classes: an over-sampler, a post-hoc prior correction, and a
rare-class classifier set to a target sensitivity.

HAM10000 is dominated by one class (about two thirds of the images are
melanocytic nevi). Two remedies that plug into
:func:`~skinfuse.pipeline.make_fusion_pipeline`:

- :class:`AdaptiveSMOTE` over-samples the rare classes during ``fit``
  (``sampler="smote"``), adapting ``k_neighbors`` to tiny classes so that a
  cross-validation fold never crashes;
- :class:`PriorCorrectedClassifier` leaves the training data alone and divides
  the predicted probabilities by the training class prior to a power
  (``prior_correction=power``).

And one that moves the decision threshold of one rare class instead:
:func:`fit_triage_classifier` fits a melanoma-vs-rest classifier whose threshold reaches
a target sensitivity on lesions it did not see.
"""

from __future__ import annotations

import warnings
from collections import Counter
from numbers import Integral, Real

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._utils._sklearn import HasMethods, Interval, _fit_context, validate_params

__all__ = ["AdaptiveSMOTE", "PriorCorrectedClassifier", "fit_triage_classifier"]


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
    >>> from skinfuse.imbalance import AdaptiveSMOTE
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
    >>> from skinfuse.imbalance import PriorCorrectedClassifier
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


@validate_params(
    {
        "model": [HasMethods(["fit", "predict_proba"])],
        "X": "no_validation",
        "y": ["array-like"],
        "groups": ["array-like"],
        "sensitivity": [Interval(Real, 0, 1, closed="both")],
        "pos_label": "no_validation",
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def fit_triage_classifier(model, X, y, *, groups, sensitivity=0.9, pos_label="mel", n_splits=5,
                          random_state=0):  # fmt: skip
    """A ``pos_label``-vs-rest classifier set to reach a target sensitivity on unseen lesions.

    ``model`` is trained on ``y == pos_label``. Its out-of-fold scores on lesion-grouped
    folds (``StratifiedGroupKFold``) choose the threshold that reaches ``sensitivity`` with
    the best specificity (:func:`~skinfuse.metrics.operating_point`); then ``model`` is
    fitted on all of ``X`` and wrapped in scikit-learn's ``FixedThresholdClassifier`` at
    that threshold.

    Its deprecated old name is ``skinfuse.metrics.triage_classifier``.

    Parameters
    ----------
    model : classifier with predict_proba
        Cloned; e.g. ``make_fusion_pipeline(...)``.
    X : DataFrame
    y : array-like of shape (n_samples,)
        The diagnoses.
    groups : array-like of shape (n_samples,)
        Lesion of each row.
    sensitivity : float in [0, 1], default=0.9
    pos_label : label, default="mel"
    n_splits : int, default=5
    random_state : int, RandomState or None, default=0
        Shuffles the folds.

    Returns
    -------
    classifier : sklearn.model_selection.FixedThresholdClassifier
        Fitted; ``predict`` returns True for cases called ``pos_label``.
    point : dict
        The out-of-fold operating point: ``threshold``, ``sensitivity``, ``specificity``
        (what to expect on new lesions, not a guarantee).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfuse.imbalance import fit_triage_classifier
    >>> rng = np.random.default_rng(0)
    >>> lesion = np.repeat(np.arange(100), 2)  # two images of each lesion
    >>> y = np.where(rng.random(100) < 0.2, "mel", "nv")[lesion]
    >>> X = rng.normal(size=(200, 2)) + 2 * (y == "mel")[:, None]
    >>> triage, point = fit_triage_classifier(LogisticRegression(), X, y, groups=lesion)
    >>> {name: round(value, 2) for name, value in point.items()}  # out of fold
    {'threshold': 0.17, 'sensitivity': 0.92, 'specificity': 0.88}
    >>> triage.predict(X[:4]).tolist(), y[:4].tolist()
    ([False, False, False, False], ['nv', 'nv', 'nv', 'nv'])
    """
    from sklearn.model_selection import (
        FixedThresholdClassifier,
        StratifiedGroupKFold,
        cross_val_predict,
    )

    from .metrics import operating_point

    target = np.asarray(y) == pos_label
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    splits = list(folds.split(X, target, groups))
    scores = cross_val_predict(clone(model), X, target, cv=splits, method="predict_proba")[:, 1]
    point = operating_point(target, scores, sensitivity=sensitivity, pos_label=True)
    classifier = FixedThresholdClassifier(
        clone(model), threshold=point["threshold"], response_method="predict_proba"
    ).fit(X, target)
    return classifier, point
