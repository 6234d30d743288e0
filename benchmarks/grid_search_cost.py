"""What a grid search costs once every image is encoded only once.

    python benchmarks/grid_search_cost.py [--data PATH] [--smoke]

Times one ``fit`` of a frozen-encoder fusion pipeline, then a ``GridSearchCV`` over
5 lesion-grouped folds x 6 candidates (+ refit) of the same pipeline, each starting from an
empty embedding cache (memory only). Because embeddings are cached per image and encoder
configuration, the grid encodes every image once, like the single fit. Prints a markdown
table and saves JSON with versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from skinfuse import show_versions
from skinfuse.datasets import load_ham10000, make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder, cache_info, clear_cache
from skinfuse.pipeline import make_fusion_pipeline

GRID = {"select__k": [128, 256], "classifier__C": [0.1, 1.0, 10.0]}


def make_model(image_size):
    return make_fusion_pipeline(
        FrozenCNNEncoder("efficientnet_lite0", image_size=image_size, pooling="avg", verbose=1),
        select_k=128,
        sampler=None,
        classifier="logreg",
        class_weight="balanced",
        random_state=0,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        bunch = make_synthetic_lesions(150, image_size=64, random_state=0)
        args.image_size, source = 64, "synthetic (smoke)"
    else:
        bunch = load_ham10000(args.data)
        source = f"HAM10000 at {args.data}"
    X, y, groups = bunch.data, bunch.target, bunch.groups
    warnings.simplefilter("ignore", UserWarning)

    clear_cache()
    t0 = time.perf_counter()
    make_model(args.image_size).fit(X, y)
    single = time.perf_counter() - t0
    single_encoded = cache_info()["encoded"]

    clear_cache()
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    grid = GridSearchCV(make_model(args.image_size), GRID, cv=cv, scoring="balanced_accuracy")
    t0 = time.perf_counter()
    grid.fit(X, y, groups=groups)
    search = time.perf_counter() - t0
    info = cache_info()
    n_fits = 5 * len(grid.cv_results_["params"]) + 1
    result = {
        "data": source,
        "n_images": len(X),
        "single_fit_s": single,
        "grid_search_s": search,
        "ratio": search / single,
        "n_fits": n_fits,
        "images_encoded_single_fit": single_encoded,
        "images_encoded_grid_search": info["encoded"],
        "cache_hits_grid_search": info["hits"],
        "best_params": grid.best_params_,
        "best_balanced_accuracy": grid.best_score_,
        "versions": show_versions(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "grid_search_cost_smoke.json" if args.smoke else "grid_search_cost.json"
    (out / name).write_text(json.dumps(result, indent=2, default=str))
    print(f"\nsaved {out / name}")
    print("| what | seconds | images encoded |")
    print("|---|---|---|")
    print(f"| one fit | {single:.1f} | {single_encoded} |")
    print(
        f"| GridSearchCV, 5 grouped folds x {len(grid.cv_results_['params'])} candidates + refit ({n_fits} fits) | {search:.1f} | {info['encoded']} |"
    )
    print(f"| ratio (target <= 1.5) | {search / single:.2f} | |")
    return result


if __name__ == "__main__":
    main()
