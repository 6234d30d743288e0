"""``skinfuse train``: fit a recipe on a labelled folder (any known layout) and save it."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import common

__all__ = ["run_train"]

MELANOMA = "mel"


def _fold_metrics(y, proba, classes) -> dict:
    """Scores of one cross-validation fold, stored in the model file's metrics."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    from ..metrics import specificity_at_sensitivity

    y = np.asarray(y)
    y_pred = np.asarray(classes)[proba.argmax(axis=1)]
    scores = {
        "balanced_accuracy": balanced_accuracy_score(y, y_pred),
        "accuracy": accuracy_score(y, y_pred),
        "macro_f1": f1_score(y, y_pred, average="macro", zero_division=0),
    }
    classes = list(classes)
    if MELANOMA in classes and (y == MELANOMA).any() and (y != MELANOMA).any():
        mel = proba[:, classes.index(MELANOMA)]
        scores["melanoma_sensitivity"] = recall_score(
            y == MELANOMA, y_pred == MELANOMA, zero_division=0
        )
        scores["melanoma_specificity_at_82_sensitivity"] = specificity_at_sensitivity(y, mel, 0.82)
    return {k: float(v) for k, v in scores.items()}


def _cross_validate(model, X, y, groups, n_splits, random_state, verbose) -> dict:
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    folds = []
    for k, (train, test) in enumerate(cv.split(X, y, groups), start=1):
        common.say(verbose, f"cross-validation fold {k}/{n_splits}: {len(train)} train, "
                            f"{len(test)} test")  # fmt: skip
        fitted = clone(model).fit(X.iloc[train], y.iloc[train], **_groups(model, groups, train))
        proba = fitted.predict_proba(X.iloc[test])
        folds.append(_fold_metrics(y.iloc[test], proba, fitted.classes_))
    names = [name for name in folds[0] if all(name in f for f in folds)]
    return {
        name: {
            "mean": float(np.mean([f[name] for f in folds])),
            "std": float(np.std([f[name] for f in folds])),
            "folds": [f[name] for f in folds],
        }
        for name in names
    }


def _groups(model, groups, rows=None) -> dict:
    """``{"groups": lesion ids}`` for a model whose ``fit`` takes them (a calibrated recipe,
    a fusion network: lesion-grouped inner folds and early-stopping splits), else ``{}``."""
    import inspect

    if "groups" not in inspect.signature(model.fit).parameters:
        return {}
    groups = np.asarray(groups)
    return {"groups": groups if rows is None else groups[rows]}


def _calibration_note(model) -> str:
    inner = getattr(model, "estimator_", None) if _coverage_of(model) else model
    t = getattr(inner, "temperature_", None)
    note = "" if t is None else f"; temperature {t:.3f} (lesion-grouped inner folds)"
    if _coverage_of(model):
        note += f"; prediction sets at {_coverage_of(model):g} coverage"
    return note


def _coverage_of(model):
    """The coverage of a model's prediction sets, or None."""
    from ..conformal import PredictionSets

    return model.coverage if isinstance(model, PredictionSets) else None


def _check_savable(model, out: Path) -> None:
    """Save the unfitted model once to a scratch file: a refusal comes now, not after the fit."""
    from .. import save

    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        try:
            save(model, Path(scratch) / "unfitted.skinfuse")
        except TypeError as exc:  # e.g. a parameter skops would not open safely
            raise ValueError(f"this model cannot be saved: {exc}") from None


def _check_gpu(recipe, device, force) -> None:
    """Refuse, before any work, to train a recipe that needs a GPU on another device."""
    from ..recipes import RECIPES

    if not RECIPES[recipe].needs_gpu or force:
        return
    where = common.check_device(device or "auto")
    if where.startswith("cuda"):
        return
    why = "no CUDA device is available" if device in (None, "auto") else f"--device {device}"
    raise ValueError(
        f"recipe {recipe!r} needs a CUDA GPU and would train on {where} ({why}), which takes "
        "days; choose a CPU recipe such as partial-ensemble, or pass --force to train it anyway"
    )


def _use_metadata_columns(model, X, columns) -> None:
    """Point every metadata preprocessor of ``model`` at ``columns`` of ``X`` (numbers:
    numeric, the others: categories), in place."""
    from .._utils._estimators import walk_estimators
    from ..metadata import make_metadata_preprocessor

    numeric = tuple(c for c in columns if pd.api.types.is_numeric_dtype(X[c]))
    categorical = tuple(c for c in columns if c not in numeric)
    for est in walk_estimators(model):
        params = est.get_params(deep=False)
        if {"metadata", "metadata_columns"} <= params.keys() and params["metadata"] is not None:
            est.set_params(metadata=make_metadata_preprocessor(numeric, categorical),
                           metadata_columns=list(columns))  # fmt: skip
        elif "transformers" in params and any(t[0] == "metadata" for t in params["transformers"]):
            branches = [
                (name, make_metadata_preprocessor(numeric, categorical), list(columns))
                if name == "metadata" else (name, step, cols)
                for name, step, cols in params["transformers"]
            ]  # fmt: skip
            est.set_params(transformers=branches)


def run_train(
    data, *, recipe, out, layout=None, cv=None, cache_dir=None, random_state=0, card=False,
    metadata_columns=None, device=None, force=False, calibrate=True, coverage=None, verbose=1,
    precision=None,
):  # fmt: skip
    """Fit recipe ``recipe`` on every image of a labelled folder; save it to ``out``.

    ``layout`` names the folder's layout (:data:`skinfuse.datasets.LAYOUTS`); ``None``
    detects it.

    With ``cv`` (an int >= 2), a lesion-grouped ``StratifiedGroupKFold`` cross-validation
    runs first; its mean scores are printed and stored in the model file's metrics.
    The training data's summary (:func:`skinfuse.metrics.dataset_summary`: image sizes,
    class mix, metadata) is stored in the model file too, for ``skinfuse evaluate`` to
    print next to the data it scores. Returns the path of the model file.

    ``metadata_columns`` (``None``: age, sex, localization) may name any column of the
    dataset's table; ``device`` and ``precision`` (``None``: the estimators' own, ``"auto"``)
    are set on every estimator of the recipe that takes them. A
    recipe that needs a GPU is refused without a CUDA device unless ``force``.

    ``calibrate`` (default): the recipe ends in temperature scaling on 3 lesion-grouped
    inner folds (:func:`skinfuse.recipes.make_recipe`); the model file records it. With
    ``coverage`` (e.g. 0.9), the model is wrapped in
    :class:`skinfuse.conformal.PredictionSets` conformalized on the calibration's
    lesion-grouped out-of-fold probabilities (class-conditional), so that ``skinfuse
    predict --coverage`` can write each image's set.
    """
    from .. import recipes, save
    from ..metrics import dataset_summary

    if recipe not in recipes.RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(recipes.RECIPES)}")
    _check_gpu(recipe, device, force)
    common.check_device(device)
    if coverage is not None and not calibrate:
        raise ValueError("--coverage conformalizes on the calibration's out-of-fold "
                         "probabilities: drop --no-calibration")  # fmt: skip
    data = common.check_data_dir(data)
    out = common.check_out_file(out, "--out")
    if cache_dir is not None:
        from .._cache import check_cache_dir

        check_cache_dir(cache_dir)
        cache_dir = os.fspath(cache_dir)  # a str: the model file stores plain parameters
    bunch = common.load_data(data, layout, "train", verbose)
    X, y, groups = common.model_input(bunch, metadata_columns), bunch.target, bunch.groups
    n_lesions = len(pd.unique(groups))
    common.say(verbose, f"data: {data} ({len(y)} images, {n_lesions} lesions, "
                        f"{len(bunch.target_names)} classes); recipe: {recipe}")  # fmt: skip
    model = recipes.make_recipe(
        recipe, random_state=random_state, cache_dir=cache_dir, verbose=verbose,
        device=device, precision=precision, calibrate=calibrate,
    )  # fmt: skip
    if metadata_columns is not None:
        _use_metadata_columns(model, X, metadata_columns)
    if coverage is not None:
        from ..conformal import PredictionSets

        model = PredictionSets(model, coverage=coverage, prefit=False)
    _check_savable(model, out)
    metrics = {"recipe": recipe}
    if cv is not None:
        t0 = time.perf_counter()
        scores = _cross_validate(model, X, y, groups, cv, random_state, verbose)
        lines = [f"{cv}-fold cross-validation grouped by lesion_id "
                 f"({time.perf_counter() - t0:.0f} s):",
                 "| metric | mean ± std |", "|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v['mean']:.3f} ± {v['std']:.3f} |" for k, v in scores.items()]
        print("\n".join(lines), flush=True)
        metrics = {k: v["mean"] for k, v in scores.items()}
        metrics |= {f"{k}_std": v["std"] for k, v in scores.items()}
        metrics |= {"cv": f"StratifiedGroupKFold({cv}) grouped by lesion_id", "recipe": recipe}
    t0 = time.perf_counter()
    common.say(verbose, f"fitting {recipe!r} on all {len(y)} images")
    model.fit(X, y, **_groups(model, groups))
    common.say(verbose, f"fitted in {time.perf_counter() - t0:.0f} s" + _calibration_note(model))
    training_data = dataset_summary(X, y, classes=model.classes_)
    path = save(model, out, metrics=metrics, training_data=training_data, card=card)
    common.say(verbose, f"model written to {path}")
    return path
