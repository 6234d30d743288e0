"""Explanation figures for docs/: a frozen-CNN fusion model on HAM10000, explained.

    python benchmarks/explain_figures.py [--data PATH] [--cache-dir DIR] [--out docs/images]

Fits ``make_fusion_pipeline(FrozenCNNEncoder(pooling="multi"), sampler=None)`` (MLP) on the
training part of the first lesion-grouped fold and explains it on the held-out part:
SHAP per original column, permutation importance per column, confusion matrix
(written to ``--out``), and Grad-CAM overlays. The Grad-CAM figure shows HAM10000 images
(CC BY-NC), so it goes to ``--private-out`` (git-ignored), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold

from skinfuse.datasets import load_ham10000, make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder
from skinfuse.explain import (
    explain_metadata,
    grad_cam,
    modality_importance,
    plot_grad_cam,
    plot_importance,
    plot_shap_summary,
    plot_shap_waterfall,
)
from skinfuse.metrics import plot_confusion_matrix
from skinfuse.pipeline import make_fusion_pipeline


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--private-out", default="benchmarks/results")
    parser.add_argument("--n-shap", type=int, default=200, help="cases explained with SHAP")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, small")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.smoke:
        bunch = make_synthetic_lesions(300, image_size=128, random_state=0)
        size, prefix = 224, "synthetic_"
    else:
        bunch = load_ham10000(args.data)
        size, prefix = 224, "ham10000_"
    X, y, groups = bunch.data, bunch.target, bunch.groups
    train, test = next(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X, y, groups))
    encoder = FrozenCNNEncoder(
        image_size=size, pooling="multi", cache_dir=args.cache_dir, verbose=1
    )
    model = make_fusion_pipeline(encoder, classifier="mlp", sampler=None, random_state=0)
    model.fit(X.iloc[train], y.iloc[train])
    X_test, y_test = X.iloc[test], y.iloc[test]
    y_pred = model.predict(X_test)
    scores = {
        "accuracy": accuracy_score(y_test, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_test, y_pred),
    }
    print(f"fold 1 of 5 (lesion-grouped): {scores}")

    out, private = Path(args.out), Path(args.private_out)
    out.mkdir(parents=True, exist_ok=True)
    private.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shap_rows = rng.choice(len(test), size=min(args.n_shap, len(test)), replace=False)
    background = X.iloc[train].sample(50, random_state=0)
    explanation = explain_metadata(model, X_test.iloc[shap_rows], background=background)
    plot_shap_summary(explanation, path=out / f"{prefix}shap_summary.png")
    importance = modality_importance(
        model, X_test, y_test, scoring="balanced_accuracy", n_repeats=5, random_state=0
    )
    plot_importance(importance, path=out / f"{prefix}permutation_importance.png")
    plot_confusion_matrix(y_test, y_pred, path=out / f"{prefix}confusion_matrix.png")
    # one example per class for Grad-CAM (HAM10000 pixels: private folder only)
    picks = [np.flatnonzero(y_test.to_numpy() == c)[0] for c in np.unique(y_test)]
    heatmaps, images = grad_cam(model, X_test.iloc[picks], return_images=True)
    cam_path = (out if args.smoke else private) / f"{prefix}grad_cam.png"
    plot_grad_cam(images, heatmaps, y_true=y_test.iloc[picks], y_pred=y_pred[picks], path=cam_path)
    plot_shap_waterfall(explanation, 0, path=private / f"{prefix}shap_waterfall.png")
    mean_abs = np.abs(explanation.values).mean(axis=(0, 2))
    summary = {
        "scores_fold1": scores,
        "mean_abs_shap": dict(zip(explanation.feature_names, map(float, mean_abs))),
        "permutation_importance": dict(
            zip(importance.feature_names, map(float, importance.importances_mean))
        ),
        "seconds": time.perf_counter() - t0,
    }
    (private / f"{prefix}explain_figures.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"figures in {out}; Grad-CAM overlay (dataset pixels) in {cam_path}")


if __name__ == "__main__":
    main()
