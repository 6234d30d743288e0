"""Prediction sets with a coverage guarantee: the diagnoses a lesion may have, at 90 %.

:class:`PredictionSets` wraps any skinfuse classifier. Conformalized on labelled images of
lesions its model did not train on, ``predict_sets`` gives each image a set of classes that
holds the true one with probability at least ``coverage`` (split conformal prediction;
images of new lesions exchangeable with the conformalization lesions). Class-conditional
by default: the guarantee holds for every class on its own, so a rare class (dermatofibroma,
vascular lesions) is covered as often as the nevi, at the price of larger sets.

The conformity score and its quantile are MAPIE's (``LACConformityScore``: one minus the
probability of the true class, the ``ceil((n + 1) * coverage) / n`` empirical quantile).
MAPIE 1.6 has no label-conditional sets (its ``ConditionalSplitConformalClassifier``
conditions on features of ``X``, which cannot hold the unknown label), so the
class-conditional thresholds are its quantile taken over each class's scores (a Mondrian
split of the conformalization data by true class): a few lines here.

Where the conformalization data come from (``prefit``):

- ``prefit=True``: ``fit(X, y)`` scores a fitted model on held-out lesions (the images of
  lesions it never saw; whole lesions, not images of training lesions).
- ``prefit=False``: ``fit(X, y, groups=lesion_ids)`` fits a clone of a
  :class:`~skinfuse.calibration.TemperatureCalibratedClassifier` (every recipe) and takes
  its calibrated out-of-fold probabilities on lesion-grouped inner folds: no images
  held out, no further fit (``skinfuse train --coverage 0.9``). The fold models saw 2/3 of
  the data, the final one all of it, so coverage on new lesions is at least the target
  when more data make the model no less accurate (cross-conformal; checked on held-out
  lesions in docs/evaluation.md).

Needs MAPIE to fit (``pip install skinfuse[conformal]``); a fitted model predicts its sets at
its ``coverage`` without it.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._utils._sklearn import HasMethods, Interval, _fit_context

__all__ = ["PredictionSets", "conformal_thresholds"]

#: MAPIE's tolerance when comparing a score with its quantile.
_EPSILON = 1e-8


def _mapie_lac():
    try:
        from mapie.conformity_scores import LACConformityScore
    except ImportError:
        raise ImportError(
            "prediction sets need MAPIE to be conformalized: pip install skinfuse[conformal] "
            "(or pip install mapie)"
        ) from None
    return LACConformityScore()


def conformal_thresholds(proba, y_idx, coverage, *, class_conditional=True):
    """The LAC score thresholds at ``coverage``: class ``k`` is in an image's set when
    ``1 - proba[k] <= thresholds[k]``.

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
        Probabilities of the conformalization images (lesions the model did not train on).
    y_idx : ndarray of int of shape (n_samples,)
        Column of each image's true class.
    coverage : float in (0, 1)
    class_conditional : bool, default=True
        One threshold per class, from that class's images only; ``False``: one threshold
        for all (marginal coverage).

    Returns
    -------
    thresholds : ndarray of shape (n_classes,)
        ``inf`` for a class with too few images for the quantile (fewer than
        ``ceil(coverage / (1 - coverage))``, 9 at 90 %): always in the set.

    Examples
    --------
    >>> proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]] * 5)
    >>> conformal_thresholds(proba, np.array([0, 0, 1, 1] * 5), 0.8).round(2).tolist()
    [0.2, 0.4]
    """
    lac = _mapie_lac()
    proba = np.asarray(proba, dtype=np.float64)
    y_idx = np.asarray(y_idx)
    scores = lac.get_conformity_scores(None, proba, y_enc=y_idx).ravel()
    alpha = np.array([1.0 - coverage])

    def quantile(s):
        if len(s) == 0 or math.ceil((len(s) + 1) * coverage) > len(s):
            return np.inf
        return float(lac.get_conformity_score_quantiles(s, alpha, cv="prefit")[0])

    if not class_conditional:
        return np.full(proba.shape[1], quantile(scores))
    return np.array([quantile(scores[y_idx == k]) for k in range(proba.shape[1])])


class PredictionSets(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Conformal prediction sets around a classifier: each image's possible diagnoses.

    Parameters
    ----------
    estimator : classifier
        ``prefit=True``: fitted, with ``predict_proba`` and ``classes_`` (any skinfuse model,
        :func:`skinfuse.load`'s result). ``prefit=False``: an unfitted
        :class:`~skinfuse.calibration.TemperatureCalibratedClassifier` (what
        :func:`~skinfuse.recipes.make_recipe` builds), or any estimator that sets
        ``oof_proba_`` in ``fit``.
    coverage : float in (0, 1), default=0.9
        Probability that an image's set holds its true class.
    class_conditional : bool, default=True
        Coverage for every class on its own (``False``: on average over images, sets
        smaller, rare classes covered less often).
    prefit : bool, default=True
        Where the conformalization scores come from: the ``X, y`` given to ``fit`` (lesions
        the fitted ``estimator`` never saw), or the lesion-grouped out-of-fold probabilities
        of ``estimator`` fitted on them (see the module's docstring).

    Attributes
    ----------
    estimator_ : classifier
        ``estimator`` itself (``prefit=True``, not copied, not refitted) or its fitted clone.
    classes_ : ndarray of shape (n_classes,)
    scores_ : ndarray of shape (n_conformalization,)
        The LAC scores ``1 - p(true class)`` of the conformalization images, float32.
    score_classes_ : ndarray of int of shape (n_conformalization,)
        Column of the true class of each score.
    thresholds_ : ndarray of shape (n_classes,)
        Of :func:`conformal_thresholds` at ``coverage``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When the wrapped estimator has them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(600, 2)), rng.choice(["a", "b", "c"], 600)
    >>> X[:, 0] += 2 * (y == "a") - 2 * (y == "c")
    >>> model = LogisticRegression().fit(X[:300], y[:300])
    >>> sets = PredictionSets(model, coverage=0.9).fit(X[300:500], y[300:500])
    >>> held = sets.predict_sets(X[500:])
    >>> held.shape, held.dtype
    ((100, 3), dtype('bool'))
    >>> covered = held[np.arange(100), np.searchsorted(sets.classes_, y[500:])]
    >>> bool(covered.mean() > 0.8)
    True
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "coverage": [Interval(Real, 0, 1, closed="neither")],
        "class_conditional": ["boolean"],
        "prefit": ["boolean"],
    }
    __metadata_request__fit = {"groups": True}

    def __init__(self, estimator, *, coverage=0.9, class_conditional=True, prefit=True):
        self.estimator = estimator
        self.coverage = coverage
        self.class_conditional = class_conditional
        self.prefit = prefit

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, groups=None):
        """Conformalize: the scores of labelled images, then the thresholds at ``coverage``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), default=None
            ``prefit=False``: the lesion of each image, for the estimator's inner folds.
            Unused with ``prefit=True`` (then ``X`` must hold whole lesions the estimator
            never saw).

        Returns
        -------
        self : PredictionSets
        """
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        _mapie_lac()  # the install hint before any fit
        if self.prefit:
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
            proba = self.estimator_.predict_proba(X)
        else:
            self.estimator_ = clone(self.estimator)
            kwargs = {} if groups is None else {"groups": groups}
            self.estimator_.fit(X, y, **kwargs)
            if not hasattr(self.estimator_, "oof_proba_"):
                raise TypeError(
                    f"PredictionSets(prefit=False) conformalizes on out-of-fold "
                    f"probabilities, which {type(self.estimator).__name__} does not keep; wrap "
                    "it in skinfuse.calibration.TemperatureCalibratedClassifier "
                    "(make_recipe(..., calibrate=True)), or fit it yourself and pass "
                    "prefit=True with held-out lesions"
                )
            proba = self.estimator_.oof_proba_
        self.classes_ = np.asarray(self.estimator_.classes_)
        unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise ValueError(
                f"y holds classes the model does not predict: {unknown}; the model's classes "
                f"are {self.classes_.tolist()}"
            )
        column = {c: k for k, c in enumerate(self.classes_.tolist())}
        y_idx = np.array([column[v] for v in y.tolist()], dtype=np.int64)
        proba = np.asarray(proba, dtype=np.float64)
        self.scores_ = (1.0 - proba[np.arange(len(y)), y_idx]).astype(np.float32)
        self.score_classes_ = y_idx
        self.thresholds_ = conformal_thresholds(
            proba, y_idx, self.coverage, class_conditional=self.class_conditional
        )
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, attr):
                setattr(self, attr, getattr(self.estimator_, attr))
        return self

    def predict_proba(self, X):
        """The wrapped model's probabilities."""
        check_is_fitted(self, "thresholds_")
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        """The wrapped model's most probable class."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def predict_sets(self, X, *, coverage=None):
        """Each image's prediction set.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)
        coverage : float in (0, 1) or None, default=None
            ``None``: the fitted ``coverage``. Another level recomputes the thresholds from
            the stored scores (needs MAPIE).

        Returns
        -------
        sets : ndarray of bool of shape (n_samples, n_classes)
            ``sets[i, k]``: class ``classes_[k]`` is in image ``i``'s set. A set may be empty
            (no class plausible enough: an unusual image) or hold several classes.
        """
        return self.sets_from_proba(self.predict_proba(X), coverage=coverage)

    def sets_from_proba(self, proba, *, coverage=None):
        """:meth:`predict_sets` from probabilities already predicted (one model call for
        several coverage levels)."""
        check_is_fitted(self, "thresholds_")
        thresholds = self.thresholds_
        if coverage is not None and coverage != self.coverage:
            if not 0 < coverage < 1:
                raise ValueError(f"coverage must be in (0, 1); got {coverage!r}")
            proba_scores = np.zeros((len(self.scores_), len(self.classes_)))
            proba_scores[np.arange(len(self.scores_)), self.score_classes_] = 1 - self.scores_
            thresholds = conformal_thresholds(
                proba_scores, self.score_classes_, coverage,
                class_conditional=self.class_conditional,
            )  # fmt: skip
        proba = np.asarray(proba, dtype=np.float64)
        return (1.0 - proba) - thresholds <= _EPSILON

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.classifier_tags = inner.classifier_tags
        tags.target_tags = inner.target_tags
        return tags
