"""Validation splits and cross-fitting folds, grouped by lesion when the groups are known.

Every split a trained network makes of its training images lives here: the early-stopping
hold-out (:func:`validation_split`, stratified by class and, given ``groups``, with no
group on both sides) and the cross-fitting folds of the fine-tuned encoder
(:func:`cross_fit_splits`). No torch here.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(n, y_idx, validation_fraction, seed):
    """Training and validation indices (stratified), or (all, None) without validation."""
    if not validation_fraction:
        return np.arange(n), None
    n_classes = len(np.unique(y_idx))
    n_valid = math.ceil(validation_fraction * n)
    counts = np.bincount(y_idx)
    counts = counts[counts > 0]
    if counts.min() < 2 or n_valid < n_classes or n - n_valid < n_classes:
        raise ValueError(
            f"validation_fraction={validation_fraction} holds out {n_valid} of "
            f"{n} training images, too few for a split stratified over {n_classes} "
            f"classes (the rarest has {counts.min()} images; each class needs 2). "
            "Pass a larger validation_fraction, more images, or validation_fraction=0 "
            "to train without validation and early stopping."
        )
    return train_test_split(
        np.arange(n), test_size=n_valid, stratify=y_idx, random_state=seed % 2**32
    )


def validation_split(n, y_idx, validation_fraction, seed, groups=None):
    """Training and validation indices for early stopping; (all, None) without validation.

    Without ``groups``: :func:`stratified_split`. With ``groups`` (one label per image, e.g.
    its lesion), no group has images on both sides: one fold of scikit-learn's
    ``StratifiedGroupKFold(k)``, ``k`` the integer whose ``1 / k`` is nearest to
    ``validation_fraction`` (0.1 -> 10 %, 0.15 -> 1/7, 0.4 -> 1/3; above one half, the
    training side is the fold: 0.6 -> 2/3). Stratified as far as whole groups allow.
    """
    if not validation_fraction or groups is None:
        return stratified_split(n, y_idx, validation_fraction, seed)
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray(groups)
    f = float(validation_fraction)
    swap = f > 0.5
    share = 1 - f if swap else f  # the fold's share
    k = min((max(2, math.floor(1 / share)), max(2, math.ceil(1 / share))),
            key=lambda k: abs(1 / k - share))  # fmt: skip
    n_groups = len(np.unique(groups))
    if n_groups < k:
        held = f"{k - 1}/{k}" if swap else f"1/{k}"
        raise ValueError(
            f"validation_fraction={validation_fraction} with groups holds out {held} of the "
            f"groups, but the {n} training images have only {n_groups} distinct groups. "
            f"Pass a validation_fraction nearer 0.5, more groups, validation_fraction=0 to "
            "train without validation, or no groups for an image-level split."
        )
    cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed % 2**32)
    with warnings.catch_warnings():  # a class rarer than k: fine for a validation set
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        train, valid = next(cv.split(np.zeros((n, 1)), y_idx, groups))
    return (valid, train) if swap else (train, valid)


def check_groups(groups, n):
    """``groups`` as a 1-D array of ``n`` labels, or None; a clear error otherwise."""
    if groups is None:
        return None
    from sklearn.utils import column_or_1d

    groups = column_or_1d(groups, warn=True)
    if len(groups) != n:
        raise ValueError(
            f"groups has {len(groups)} labels but X has {n} images; pass one group label "
            "(e.g. the lesion_id) per image. Inside a pipeline whose sampler (SMOTE, "
            "over- or under-sampling) changes the rows before this step, metadata routing "
            "hands it the groups of the original rows: opt this step out with "
            "set_fit_request(groups=False)."
        )
    return groups


def cross_fit_splits(k, y_idx, seed, groups=None):
    """The ``k`` cross-fitting folds ``(train, held_out)`` of the images: ``StratifiedKFold``,
    or ``StratifiedGroupKFold`` with ``groups`` (no group on both sides of a fold)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X = np.zeros((len(y_idx), 1))
    if groups is None:
        return StratifiedKFold(k, shuffle=True, random_state=seed % 2**32).split(X, y_idx)
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise ValueError(
            f"cross_fit={k} with groups needs at least {k} distinct groups, but the "
            f"images have {n_groups}. Pass a smaller cross_fit or more groups."
        )
    folds = StratifiedGroupKFold(k, shuffle=True, random_state=seed % 2**32)
    return folds.split(X, y_idx, groups)
