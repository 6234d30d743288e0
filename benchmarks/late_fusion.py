"""Late fusion from saved out-of-fold probabilities: what LateFusionClassifier scores.

    python benchmarks/late_fusion.py RUN_DIR [RUN_DIR ...] --image-row NAME [--data PATH]

``LateFusionClassifier(image_model)`` fits the image model and a metadata model
(``make_fusion_pipeline(None, classifier="logreg")``) on the training folds and combines their
probabilities by Bayes' rule. Its out-of-fold probabilities are therefore those of the
image model (read from ``oof_proba.npz`` of ``benchmarks/reproduce.py`` runs, same folds)
combined with the metadata model's, fitted here on each training fold: no network is
trained again. Prints the image-only, metadata-only and fused scores per fold and overall,
for metadata weights 0 (image alone), 0.5 and 1 (the default), and saves them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedGroupKFold

from skinfuse.datasets import load_ham10000
from skinfuse.pipeline import make_fusion_pipeline


def read_rows(run_dirs, name):
    """The image row's out-of-fold probabilities, joined over runs on disjoint folds."""
    proba = None
    for run in run_dirs:
        saved = np.load(Path(run) / "oof_proba.npz", allow_pickle=True)
        rows = list(saved["rows"])
        if name not in rows:
            continue
        part = saved["proba"][rows.index(name)]
        proba = part if proba is None else np.where(np.isnan(proba), part, proba)
        classes = saved["classes"]
    if proba is None:
        raise SystemExit(f"no row {name!r} in {run_dirs}")
    return proba, classes


def scores(y, proba, classes):
    pred = classes[proba.argmax(axis=1)]
    return {
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro"),
        "mel_recall": recall_score(y, pred, labels=["mel"], average="macro"),
        "mel_auc": roc_auc_score(y == "mel", proba[:, list(classes).index("mel")]),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+")
    p.add_argument("--image-row", required=True)
    p.add_argument("--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    ham = load_ham10000(args.data)
    X, y, groups = ham.data, ham.target.astype(str).to_numpy(), np.asarray(ham.groups)
    image, classes = read_rows(args.runs, args.image_row)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)  # reproduce.py's
    metadata = np.full_like(image, np.nan)
    prior = np.full_like(image, np.nan)
    for train, test in cv.split(X, y, groups):
        if np.isnan(image[test]).any():
            continue
        model = make_fusion_pipeline(None, classifier="logreg").fit(X.iloc[train], y[train])
        metadata[test] = model.predict_proba(X.iloc[test])[
            :, np.searchsorted(model.classes_, classes)
        ]
        prior[test] = np.array([np.mean(y[train] == c) for c in classes])
    done = ~np.isnan(image).any(axis=1)
    results = {"image_row": args.image_row, "n_images": int(done.sum())}
    results["image only"] = scores(y[done], image[done], classes)
    results["metadata only (logreg)"] = scores(y[done], metadata[done], classes)
    for weight in (0.5, 1.0):
        log = np.log(np.clip(image, 1e-12, None)) + weight * (
            np.log(np.clip(metadata, 1e-12, None)) - np.log(prior)
        )
        fused = np.exp(log - np.nanmax(log, axis=1, keepdims=True))
        results[f"late fusion, metadata_weight={weight}"] = scores(y[done], fused[done], classes)
    for name, row in results.items():
        if isinstance(row, dict):
            shown = " ".join(f"{k} {v:.3f}" for k, v in row.items())
            print(f"{name:40s} {shown}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
