"""Which frozen image features work best: backbones x pooling x prior correction.

    python benchmarks/frozen_features.py [--data PATH] [--cache-dir DIR] [--smoke]

Each feature set is one or more ``FrozenCNNEncoder`` configurations (``backbone:size:pooling``,
joined with ``+``). Every image is encoded once per configuration (and kept in
``--cache-dir``), then the same head runs on StratifiedGroupKFold(5, shuffle=True,
random_state=0) folds grouped by ``lesion_id``: metadata preprocessed on the training fold,
everything scaled, ``MLPClassifier(512, alpha=1e-2, early_stopping)``, no resampling. The
probabilities are then divided by the training class prior to each ``--powers`` value
(``PriorCorrectedClassifier``'s correction, computed from the same fit). Because the
encoders learn nothing, encoding the whole folder once is not a leak.

Prints a markdown table (mean over folds) and saves JSON with versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from skinfuse import show_versions
from skinfuse.datasets import load_ham10000, make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder
from skinfuse.metadata import make_metadata_preprocessor

FEATURE_SETS = (
    "efficientnet_lite0:224:avgmax",
    "efficientnet_lite0:224:multi",
    "efficientnet_lite2:260:multi",
    "efficientnet_lite0:224:multi+efficientnet_lite2:260:multi",
    "efficientnet_lite0:224:multi+efficientnet_lite1:240:multi+efficientnet_lite2:260:multi",
)


def encode(spec, images, args):
    backbone, size, pooling = spec.split(":")
    t0 = time.perf_counter()
    enc = FrozenCNNEncoder(
        backbone, image_size=int(size), pooling=pooling, cache_dir=args.cache_dir,
        device=args.device, verbose=int(args.verbose),
    ).fit(images)  # fmt: skip
    Z = enc.transform(images)
    print(f"  {spec}: {Z.shape[1]} features, {time.perf_counter() - t0:.0f} s", flush=True)
    return Z


def evaluate(Z, X, y, folds, powers):
    per_power = {p: [] for p in powers}
    for train, test in folds:
        meta = make_metadata_preprocessor().fit(X.iloc[train], y[train])
        F = np.hstack([Z, meta.transform(X)])
        scaler = StandardScaler().fit(F[train])
        clf = MLPClassifier(
            hidden_layer_sizes=(512,), alpha=1e-2, early_stopping=True, max_iter=300,
            random_state=0,
        ).fit(scaler.transform(F[train]), y[train])  # fmt: skip
        proba = clf.predict_proba(scaler.transform(F[test]))
        prior = np.array([np.mean(y[train] == c) for c in clf.classes_])
        for p in powers:
            pred = clf.classes_[np.argmax(proba / prior**p, axis=1)]
            per_power[p].append(
                [
                    accuracy_score(y[test], pred),
                    balanced_accuracy_score(y[test], pred),
                    f1_score(y[test], pred, average="weighted"),
                ]
            )
    return {p: np.mean(v, axis=0).tolist() for p, v in per_power.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--features", nargs="+", default=list(FEATURE_SETS))
    parser.add_argument("--powers", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run (CI)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        bunch = make_synthetic_lesions(150, image_size=64, random_state=0)
        args.features = ["efficientnet_lite0:64:avgmax", "efficientnet_lite0:64:multi"]
        source = "synthetic (smoke)"
    else:
        bunch = load_ham10000(args.data)
        source = f"HAM10000 at {args.data}"
    X, y = bunch.data, bunch.target.astype(str).to_numpy()
    folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X, y, bunch.groups))
    print(f"{source}: {len(X)} images; 5 lesion-grouped folds", flush=True)

    cache: dict = {}
    results = {}
    for fset in args.features:
        parts = fset.split("+")
        for spec in parts:
            if spec not in cache:
                cache[spec] = encode(spec, X[["image_path"]], args)
        Z = np.hstack([cache[spec] for spec in parts])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # early-stopping convergence notes
            scores = evaluate(Z, X, y, folds, args.powers)
        results[fset] = {"n_features": Z.shape[1], "head_s": time.perf_counter() - t0, **scores}
        print(f"  {fset}: {json.dumps({p: np.round(s, 3).tolist() for p, s in scores.items()})}")

    lines = ["| features | n | prior power | accuracy | balanced acc. | weighted F1 |"]
    lines.append("|---|---|---|---|---|---|")
    for fset, r in results.items():
        for p in args.powers:
            acc, bal, f1w = r[p]
            lines.append(
                f"| {fset} | {r['n_features']} | {p:g} | {acc:.3f} | {bal:.3f} | {f1w:.3f} |"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "data": source,
        "results": {k: {str(p): v for p, v in r.items()} for k, r in results.items()},
        "versions": show_versions(),
    }
    name = "frozen_features_smoke.json" if args.smoke else "frozen_features.json"
    (out / name).write_text(json.dumps(payload, indent=2))
    print("\n".join(lines))
    return payload


if __name__ == "__main__":
    main()
