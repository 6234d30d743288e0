"""Temperature scaling on lesion-grouped inner folds: the last step of every recipe.

A network trained with label smoothing and class weights is confident in the wrong
amount (HAM10000, ``partial`` recipe: top-label ECE 0.19). One temperature, fitted on
probabilities of lesions the network did not see, divides its logits and brings the ECE
near 0.03 without changing any prediction (a common temperature keeps the order of the
classes).

:class:`TemperatureCalibratedClassifier` computes exactly what scikit-learn's
``CalibratedClassifierCV(estimator, method="temperature", ensemble=False,
cv=<lesion-grouped folds>)`` computes, with two differences that make it usable as a
recipe's last step:

- the folds are made in ``fit`` from ``groups`` (scikit-learn 1.9's ``ensemble=False``
  path does not route ``groups`` to its splitter, and an unfitted recipe cannot hold
  precomputed folds), and ``groups`` reach the wrapped estimator's ``fit`` when it takes
  them (a network's lesion-grouped early-stopping split);
- the calibrated out-of-fold probabilities are kept (``oof_proba_``): they are the
  conformalization scores of :class:`skinfuse.conformal.PredictionSets` without a further
  fit.
"""

from __future__ import annotations

import inspect
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._utils._sklearn import (
    HasMethods,
    Interval,
    _fit_context,
    _safe_indexing,
    _TemperatureScaling,
)

__all__ = ["TemperatureCalibratedClassifier", "inner_folds"]


def inner_folds(y, groups, n_splits, random_state):
    """The ``n_splits`` folds ``(train, test)`` of the calibration: ``StratifiedGroupKFold``
    over ``groups`` (no lesion on both sides), ``StratifiedKFold`` without them."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X = np.zeros((len(y), 1))
    seed = random_state
    with warnings.catch_warnings():  # a class rarer than n_splits: its columns come from fewer
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        if groups is None:
            return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise ValueError(
                f"temperature scaling on {n_splits} lesion-grouped inner folds needs at least "
                f"{n_splits} distinct groups, but the images have {n_groups}; pass more "
                "lesions or a smaller n_splits"
            )
        cv = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        try:
            return list(cv.split(X, y, groups))
        except ValueError as error:  # every class rarer than n_splits
            counts = np.unique(y, return_counts=True)[1]
            raise ValueError(
                f"temperature scaling on {n_splits} lesion-grouped inner folds needs a class "
                f"with at least {n_splits} images, but the largest has {counts.max()} "
                f"({error}); train on more images, use a smaller n_splits, or skip the "
                "calibration (make_recipe(..., calibrate=False), skinfuse train "
                "--no-calibration)"
            ) from error


def _fit_kwargs(estimator, groups, rows=None) -> dict:
    """``{"groups": ...}`` for an estimator whose ``fit`` takes ``groups``, else ``{}``."""
    if groups is None or "groups" not in inspect.signature(estimator.fit).parameters:
        return {}
    return {"groups": groups if rows is None else groups[rows]}


class TemperatureCalibratedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities are temperature-scaled on lesion-grouped folds.

    ``fit`` fits a clone of ``estimator`` on each of ``n_splits`` lesion-grouped inner
    folds to get out-of-fold probabilities, fits one temperature ``T`` to them (multinomial
    log loss), then fits a clone on all the data. ``predict_proba`` is
    ``softmax(log(p) / T)`` of that clone's ``p``: scikit-learn's
    ``CalibratedClassifierCV(method="temperature", ensemble=False)`` with grouped folds,
    the same numbers. The most probable class never changes. Cost: ``n_splits`` extra
    fits on ``(n_splits - 1) / n_splits`` of the data (embeddings and cached activations are
    reused through the estimator's ``cache_dir``).

    Parameters
    ----------
    estimator : classifier
        Unfitted, with ``predict_proba``; cloned. If its ``fit`` takes ``groups`` (a
        :class:`~skinfuse.fusion.FusionNetClassifier`), each fit gets the groups of its rows.
    n_splits : int, default=3
        Inner folds.
    random_state : int or None, default=0
        Seed of the inner folds.

    Attributes
    ----------
    estimator_ : classifier
        The clone fitted on all the data.
    calibrator_ : object
        scikit-learn's fitted temperature scaling (``CalibratedClassifierCV``'s own).
    temperature_ : float
        ``T``: above 1 the network was over-confident, below 1 under-confident.
    oof_proba_ : ndarray of shape (n_samples, n_classes)
        Calibrated out-of-fold probabilities of the training rows (lesions unseen by the
        fold's model), float32.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When the wrapped estimator has them.

    See Also
    --------
    skinfuse.recipes.make_recipe : every recipe ends in this step (``calibrate=True``).
    skinfuse.conformal.PredictionSets : prediction sets from ``oof_proba_``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(120, 3)), np.repeat(["a", "b", "c"], 40)
    >>> X[:, 0] += 3 * (y == "a")
    >>> groups = np.arange(120) // 2  # two images per lesion
    >>> model = TemperatureCalibratedClassifier(LogisticRegression(C=100)).fit(X, y, groups=groups)
    >>> model.oof_proba_.shape, model.temperature_ > 0
    ((120, 3), True)
    >>> bool((model.predict(X) == model.estimator_.predict(X)).all())
    True
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
    }
    # under metadata routing, cross_validate's params={"groups": lesion_ids} reach fit
    __metadata_request__fit = {"groups": True}

    def __init__(self, estimator, *, n_splits=3, random_state=0):
        self.estimator = estimator
        self.n_splits = n_splits
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, groups=None):
        """Fit the inner folds, the temperature, then the estimator on all the data.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)
            What ``estimator`` takes.
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), default=None
            Lesion of each image (``lesion_id``): no lesion has images on both sides of an
            inner fold. ``None`` splits images (warned: out-of-fold probabilities of a
            lesion seen in training are too confident, so ``T`` comes out too small).

        Returns
        -------
        self : TemperatureCalibratedClassifier
        """
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y has one class ({classes[0]!r}); calibration needs two or more")
        if groups is None:
            warnings.warn(
                "TemperatureCalibratedClassifier.fit without groups: the inner folds split "
                "images, not lesions; pass groups=lesion_ids (skinfuse train does)",
                UserWarning,
                stacklevel=2,
            )
        else:
            groups = column_or_1d(groups)
            if len(groups) != len(y):
                raise ValueError(
                    f"groups has {len(groups)} labels but y has {len(y)}; pass one lesion "
                    "label per image"
                )
        oof = np.zeros((len(y), len(classes)))
        for train, test in inner_folds(y_idx, groups, self.n_splits, self.random_state):
            member = clone(self.estimator)
            member.fit(_safe_indexing(X, train), y[train], **_fit_kwargs(member, groups, train))
            columns = np.searchsorted(classes, member.classes_)
            oof[np.ix_(test, columns)] = member.predict_proba(_safe_indexing(X, test))
        self.calibrator_ = _TemperatureScaling().fit(oof, y_idx)
        self.temperature_ = float(1.0 / self.calibrator_.beta_)
        self.oof_proba_ = self.calibrator_.predict(oof).astype(np.float32)
        self.estimator_ = clone(self.estimator)
        self.estimator_.fit(X, y, **_fit_kwargs(self.estimator_, groups))
        self.classes_ = classes
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, attr):
                setattr(self, attr, getattr(self.estimator_, attr))
        return self

    def predict_proba(self, X):
        """Calibrated class probabilities.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "calibrator_")
        proba = np.zeros((len(X), len(self.classes_)))
        columns = np.searchsorted(self.classes_, self.estimator_.classes_)
        proba[:, columns] = self.estimator_.predict_proba(X)
        return self.calibrator_.predict(proba)

    def predict(self, X):
        """The most probable class (the wrapped estimator's, unchanged by the temperature).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.classifier_tags = inner.classifier_tags
        tags.target_tags = inner.target_tags
        return tags
