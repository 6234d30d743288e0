"""``skinfuse demo``: the fusion pipeline end to end on synthetic or real data."""

from __future__ import annotations

import json
import time
from numbers import Integral

import numpy as np
import pandas as pd

from .common import check_device, prepare_out

__all__ = ["run_demo"]


def _models(image_size, random_state, verbose, device=None, precision=None):
    from ..encoders import FrozenCNNEncoder
    from ..pipeline import make_fusion_pipeline

    def encoder():
        return FrozenCNNEncoder(
            "efficientnet_lite0", image_size=image_size, pooling="avg", verbose=verbose,
            device=device or "auto", precision=precision or "auto",
        )  # fmt: skip

    common = dict(
        classifier="logreg", class_weight="balanced", sampler=None, random_state=random_state
    )
    return {
        "metadata only": make_fusion_pipeline(None, **common),
        "image only (frozen EfficientNet-Lite0)": make_fusion_pipeline(
            encoder(), metadata=None, **common
        ),
        "image + metadata": make_fusion_pipeline(encoder(), **common),
    }


def _inner_cv(random_state):
    """The lesion-grouped folds that temperature scaling is fitted on (in :func:`_evaluate`)."""
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=random_state)


def _sites_seen_in_training(bunch, cv, random_state):
    """``bunch.data`` where a body site is missing in the test part of a split whose training
    part never saw it, for every split the demo fits: the folds, and the inner folds of the
    first fold's training part.

    Synthetic sites are as rare as HAM10000's: one held by a single lesion is in one fold
    only, and the model would warn that it never saw it. On its own data the demo shows
    no such warning; on real data (``--data``) the warning stays.
    """
    X, y, groups = bunch.data, bunch.target, np.asarray(bunch.groups)
    splits = list(cv.split(X, y, groups))
    first = splits[0][0]
    inner = _inner_cv(random_state).split(X.iloc[first], y.iloc[first], groups[first])
    splits += [(first[train], first[test]) for train, test in inner]
    site = X["localization"].to_numpy(dtype=object, copy=True)
    changed = True
    while changed:  # a site made missing may leave another training part without it
        changed = False
        for train, test in splits:
            seen = set(site[train][pd.notna(site[train])])
            unseen = test[[pd.notna(s) and s not in seen for s in site[test]]]
            site[unseen], changed = np.nan, changed or len(unseen) > 0
    return X.assign(localization=site)


def run_demo(
    data=None, *, n_samples=400, n_splits=3, image_size=None, out=None, random_state=0,
    device=None, verbose=1, precision=None,
):  # fmt: skip
    """Cross-validate metadata-only, image-only and fused models; print a table.

    Parameters
    ----------
    data : str or path-like, default=None
        A HAM10000 folder (see :func:`skinfuse.datasets.load_ham10000`). ``None``
        generates a synthetic lesion set with
        :func:`skinfuse.datasets.make_synthetic_lesions`.
    n_samples : int, default=400
        Size of the synthetic set (ignored with ``data``).
    n_splits : int, default=3
        Folds of the lesion-grouped ``StratifiedGroupKFold``.
    image_size : int, default=None
        Input size of the frozen CNN; ``None``: 128 for synthetic data, 224 for HAM10000.
    out : str or path-like, default=None
        Folder where ``demo_results.json`` is written.
    random_state : int, default=0
        Seed for the data and the folds.
    device : str or None, default=None
        Device of the frozen CNN (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``);
        ``None``: ``"auto"``.
    precision : {"auto", "fp32", "bf16"} or None, default=None
        Numeric precision of the frozen CNN (see
        :class:`~skinfuse.encoders.FrozenCNNEncoder`); ``None``: ``"auto"``.
    verbose : int, default=1
        0: the results table only; 1 or more: progress messages and bars too.

    Returns
    -------
    results : dict
        Per model, the mean and std of each metric over the folds.

    Raises
    ------
    ValueError
        If an argument is out of range (checked before any work).
    OSError
        If ``out`` cannot be created or written to (checked before any work).
    """
    from sklearn.model_selection import StratifiedGroupKFold, cross_validate

    from ..datasets import load_ham10000, make_synthetic_lesions

    _check_int("n_samples", n_samples, 20)
    _check_int("n_splits", n_splits, 2)
    if image_size is not None:
        _check_int("image_size", image_size, 8)
    check_device(device)
    if out is not None:
        out = prepare_out(out)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    if data is None:
        bunch = make_synthetic_lesions(
            n_samples=n_samples, image_size=32, random_state=random_state
        )
        bunch.data = _sites_seen_in_training(bunch, cv, random_state)
        source = f"synthetic lesions (n={n_samples}, seed={random_state})"
        image_size = 128 if image_size is None else image_size
    else:
        bunch = load_ham10000(data)
        source = f"HAM10000 at {data} (n={len(bunch.target)})"
        image_size = 224 if image_size is None else image_size
    if verbose:
        print(f"data: {source}; {n_splits}-fold CV grouped by lesion_id; images at {image_size} px")
    scoring = {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced_accuracy",
        "f1_macro": "f1_macro",
    }
    results = {}
    for name, model in _models(image_size, random_state, verbose, device, precision).items():
        t0 = time.perf_counter()
        cv_res = cross_validate(
            model, bunch.data, bunch.target, groups=bunch.groups, cv=cv, scoring=scoring
        )
        results[name] = {
            m: (float(np.mean(cv_res[f"test_{m}"])), float(np.std(cv_res[f"test_{m}"])))
            for m in scoring
        }
        results[name]["seconds"] = time.perf_counter() - t0
        if verbose:
            print(f"  {name}: done in {results[name]['seconds']:.1f}s")
    table = ["| model | accuracy | balanced accuracy | macro F1 |", "|---|---|---|---|"]
    for name, r in results.items():
        cells = " | ".join(f"{r[m][0]:.3f} ± {r[m][1]:.3f}" for m in scoring)
        table.append(f"| {name} | {cells} |")
    print("\n".join(table), flush=True)  # before any file is written: a failure there loses none
    if out is not None:
        fused = _models(image_size, random_state, 0, device, precision)["image + metadata"]
        pictures = _explain(fused, bunch, cv, out, random_state)
        (out / "demo_results.json").write_text(
            json.dumps({"data": source, "results": results, "pictures": pictures}, indent=2)
        )
        if verbose:
            print(f"results written to {out / 'demo_results.json'}")
            print(f"pictures: {', '.join(str(out / p) for p in pictures)}")
    return results


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _explain(model, bunch, cv, out, random_state, n_cases=8):
    """Fit ``model`` on the first fold's training part; explain it on its test part."""
    from ..explain import (
        explain_metadata,
        grad_cam,
        modality_importance,
        plot_grad_cam,
        plot_importance,
        plot_shap_summary,
        plot_shap_waterfall,
    )
    from ..metrics import plot_confusion_matrix

    X, y = bunch.data, bunch.target
    train, test = next(cv.split(X, y, bunch.groups))
    model.fit(X.iloc[train], y.iloc[train])
    X_test, y_test = X.iloc[test], y.iloc[test]
    y_pred = model.predict(X_test)
    cases = X_test.iloc[:n_cases]
    heatmaps, images = grad_cam(model, cases, return_images=True)
    plot_grad_cam(
        images, heatmaps, y_true=y_test.iloc[:n_cases], y_pred=y_pred[:n_cases],
        path=out / "grad_cam.png",
    )  # fmt: skip
    background = X.iloc[train].sample(min(20, len(train)), random_state=random_state)
    explanation = explain_metadata(model, X_test.iloc[:40], background=background)
    plot_shap_summary(explanation, path=out / "shap_summary.png")
    plot_shap_waterfall(explanation, 0, path=out / "shap_waterfall.png")
    importance = modality_importance(model, X_test, y_test, n_repeats=5, random_state=random_state)
    plot_importance(importance, path=out / "permutation_importance.png")
    plot_confusion_matrix(y_test, y_pred, path=out / "confusion_matrix.png")
    evaluation = _evaluate(model, X.iloc[train], y.iloc[train], bunch.groups[train], X_test,
                           y_test, out, random_state)  # fmt: skip
    return [
        "grad_cam.png",
        "shap_summary.png",
        "shap_waterfall.png",
        "permutation_importance.png",
        "confusion_matrix.png",
        *evaluation,
    ]


def _evaluate(model, X_train, y_train, groups, X_test, y_test, out, random_state):
    """Reliability before and after temperature scaling (fitted on lesion-grouped inner folds
    of the training part), and the melanoma sensitivity/specificity trade-off."""
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV

    from ..metrics import plot_operating_curve, plot_reliability_diagram

    inner = _inner_cv(random_state)
    calibrated = CalibratedClassifierCV(
        clone(model), method="temperature", cv=list(inner.split(X_train, y_train, groups)),
        ensemble=False,
    ).fit(X_train, np.asarray(y_train))  # fmt: skip
    proba = model.predict_proba(X_test)
    classes = np.asarray(model.classes_)
    plot_reliability_diagram(
        y_test, {"as fitted": proba, "temperature-scaled": calibrated.predict_proba(X_test)},
        classes=classes, title="image + metadata: held-out lesions",
        path=out / "reliability.png",
    )  # fmt: skip
    pictures = ["reliability.png"]
    if "mel" in classes and (np.asarray(y_test) == "mel").any():
        mel = int(np.flatnonzero(classes == "mel")[0])
        plot_operating_curve(
            y_test, {"image + metadata": proba[:, mel]}, path=out / "melanoma_tradeoff.png"
        )
        pictures.append("melanoma_tradeoff.png")
    return pictures
