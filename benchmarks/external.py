"""Recipes trained on HAM10000, scored on dermoscopy from elsewhere (issue 24).

For each recipe, one model is fitted on the training lesions of a lesion-grouped split of
the share (``--held-out 6``: 5/6 of the lesions) and scored, with lesion-grouped 95 %
intervals, on

- the held-out lesions of the share (in distribution),
- every external folder given (``--external NAME=DIR``, any layout
  ``skinfuse.datasets.load_lesion_folder`` reads; Derm7pt by default when it is there),

each with its metadata as given, with all of it removed, and with each column removed in
turn (``--no-ablation`` skips those). Per test set: balanced accuracy over the classes
present, accuracy, melanoma AUC (vs the rest), sensitivity at 80 % specificity, specificity
at 82 % sensitivity, ECE, and the recall of every class. The external sets are only ever
predicted: nothing is fitted or selected on them here.

The recipes are calibrated (temperature scaling on lesion-grouped inner folds, as
``skinfuse train``; ``--no-calibration``: the bare models) and wrapped in class-conditional
prediction sets conformalized on their out-of-fold probabilities (issue 26). Per test set
(metadata as given) at each ``--coverage`` level: coverage overall and per class, mean set
size, referral rate and melanomas caught (refer: melanoma in the set, or not one class),
with ``prediction_sets_<recipe>_<set>.png`` (at 90 %) and ``referral_<recipe>.png``. For
the held-out HAM10000 lesions: the subgroup report by sex, age band and site
(``subgroups_<recipe>.md``, ``.json`` and the forest plot ``subgroups_<recipe>.png``).

Writes ``results.json``, ``table.md`` (the tables of docs/external.md), each model file
and each test set's probabilities (``proba_<recipe>_<set>.npz``) under ``--out``::

    python benchmarks/external.py --recipes partial frozen-lite0 --cache-dir CACHE \\
        --out runs/external

``--crop lesion`` trains and tests on squares around each image's lesion instead (a lever of
docs/external.md, not a default).

``--smoke`` runs the ``tiny`` recipe on synthetic lesions (a held-out part of them stands
in for an external set): a check that the script runs, not a result.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
from _external_sets import set_rows, sets_tables, write_figures, write_subgroups
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

import skinfuse
from skinfuse.conformal import PredictionSets
from skinfuse.datasets import load_ham10000, load_lesion_folder, make_synthetic_lesions
from skinfuse.metrics import bootstrap_interval, clinical_summary
from skinfuse.recipes import RECIPES, make_recipe

MELANOMA = "mel"
METADATA = ("age", "sex", "localization")
#: clinical_summary's names shown in the tables, and their column titles
SHOWN = {
    "balanced_accuracy": "balanced acc.",
    "accuracy": "accuracy",
    "melanoma_auc": "mel. AUC",
    "sensitivity_at_80_specificity": "mel. sens. @ 80 % spec.",
    "specificity_at_82_sensitivity": "mel. spec. @ 82 % sens.",
    "ece": "ECE",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    parser.add_argument("--data", default=default_data, help="the HAM10000 share (training)")
    parser.add_argument(
        "--external", nargs="*", default=None, metavar="NAME=DIR",
        help="external test folders (default: derm7pt=../shared/data/derm7pt if present)",
    )  # fmt: skip
    parser.add_argument("--recipes", nargs="+", default=["partial"], choices=sorted(RECIPES))
    parser.add_argument("--held-out", type=int, default=6, help="1/k of the lesions held out")
    parser.add_argument("--no-ablation", action="store_true", help="no metadata-removed rows")
    parser.add_argument(
        "--image-only", action="store_true",
        help="also each recipe without its metadata branch (every metadata= set to None)",
    )  # fmt: skip
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="PARAM=VALUE", dest="settings",
        help="parameters set on each recipe's model (set_params; values read as Python "
        "literals), e.g. metadata_dropout=0.3; the recipe's name in the tables says so",
    )  # fmt: skip
    parser.add_argument("--no-calibration", action="store_true",
                        help="bare recipes: no temperature scaling, no prediction sets")  # fmt: skip
    parser.add_argument("--coverage", type=float, nargs="+", default=[0.8, 0.9, 0.95],
                        help="target coverage levels of the prediction sets")  # fmt: skip
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default="runs/external")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, tiny recipe")
    parser.add_argument(
        "--crop", choices=["lesion"], default=None,
        help="every image, training and test, replaced by the square around its lesion "
        "(external_levers.lesion_crop), written as PNG under OUT/crops (kept between runs: "
        "remove it after changing the rule)",
    )  # fmt: skip
    parser.add_argument("--verbose", type=int, default=1)
    return parser.parse_args(argv)


def external_sets(args):
    """``{name: folder}`` of the external test sets."""
    if args.external is None:
        derm7pt = Path(args.data).parent / "derm7pt"
        return {"derm7pt": derm7pt} if derm7pt.is_dir() else {}
    sets = {}
    for item in args.external:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--external takes NAME=DIR, got {item!r}")
        sets[name] = Path(folder)
    return sets


def load_sets(args):
    """``(training bunch, {name: (X, y, groups)} of the test sets, description)``."""
    if args.smoke:
        lesions = make_synthetic_lesions(240, image_size=32, random_state=0)
        X, y, g = lesions.data, lesions.target.to_numpy(dtype=object), np.asarray(lesions.groups)
        rest, external = next(StratifiedGroupKFold(4, shuffle=True, random_state=1).split(X, y, g))
        train_bunch = (X.iloc[rest].reset_index(drop=True), y[rest], g[rest])
        tests = {"synthetic-external": (X.iloc[external].reset_index(drop=True), y[external],
                                        g[external])}  # fmt: skip
        return train_bunch, tests, "synthetic lesions (smoke run)"
    bunch = load_ham10000(args.data)
    data = (bunch.data, bunch.target.to_numpy(dtype=object), np.asarray(bunch.groups))
    tests = {}
    for name, folder in external_sets(args).items():
        ext = load_lesion_folder(folder)
        tests[name] = (ext.data, ext.target.to_numpy(dtype=object), np.asarray(ext.groups))
    return data, tests, f"HAM10000 share at {args.data}"


def cropped(X, folder):
    """``X`` with each ``image_path`` replaced by a PNG of its lesion's square (written once
    under ``folder``, named by a hash of the source path)."""
    from external_levers import lesion_crop
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in X["image_path"]:
        out = folder / (hashlib.sha1(str(path).encode()).hexdigest()[:20] + ".png")
        if not out.exists():
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
            Image.fromarray(lesion_crop(pixels)).save(out)
        paths.append(str(out))
    X = X.copy()
    X["image_path"] = paths
    return X


def without(X, columns):
    """``X`` with ``columns`` of the metadata set missing (NaN)."""
    X = X.copy()
    for col in columns:
        if col in X.columns:
            X[col] = np.nan
    return X


def variants(X, ablation):
    """``{name: X}``: the metadata as given, then all removed, then each column removed."""
    out = {"as given": X}
    if ablation:
        out["no metadata"] = without(X, METADATA)
        for col in METADATA:
            if col in X.columns and X[col].notna().any():  # a column already missing: skip
                out[f"no {col}"] = without(X, [col])
    return out


def score(y, proba, classes, groups, args):
    """The clinical summary of one test set (intervals over lesions), melanoma AUC added,
    and the recall of every class present."""
    summary = clinical_summary(
        y, proba, classes=classes, groups=groups, pos_label=MELANOMA,
        n_resamples=args.n_resamples, random_state=args.random_state,
    )  # fmt: skip
    out = {name: dataclasses.asdict(iv) for name, iv in summary.items()}
    if MELANOMA in classes and (y == MELANOMA).any() and (y != MELANOMA).any():
        k = list(classes).index(MELANOMA)
        auc = bootstrap_interval(
            lambda t, s: roc_auc_score(t == MELANOMA, s), y, proba[:, k], groups=groups,
            n_resamples=args.n_resamples, random_state=args.random_state,
        )  # fmt: skip
        out["melanoma_auc"] = dataclasses.asdict(auc)
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    present = [c for c in classes if (y == c).any()]
    out["recall"] = {c: float((pred[y == c] == c).mean()) for c in present}
    out["classes_present"] = present
    out["n_images"] = len(y)
    return out


def cell(value) -> str:
    if isinstance(value, dict):
        return f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
    return "-"


def tables(results) -> str:
    """The markdown tables of every recipe: the clinical summary, then per-class recall."""
    lines = []
    for recipe, sets in results["recipes"].items():
        lines += [f"### {recipe}", "", "| test images | metadata | n | classes | "
                  + " | ".join(SHOWN.values()) + " |",
                  "|---|---|---|---|" + "---|" * len(SHOWN)]  # fmt: skip
        for test, rows in sets.items():
            for variant, row in rows.items():
                lines.append(
                    f"| {test} | {variant} | {row['n_images']} | {len(row['classes_present'])} | "
                    + " | ".join(cell(row.get(name)) for name in SHOWN)
                    + " |"
                )
        classes = sorted({c for rows in sets.values() for c in rows["as given"]["recall"]})
        lines += ["", "Recall per class (metadata as given):", "",
                  "| test images | " + " | ".join(classes) + " |",
                  "|---|" + "---|" * len(classes)]  # fmt: skip
        for test, rows in sets.items():
            recall = rows["as given"]["recall"]
            lines.append(f"| {test} | " + " | ".join(
                f"{recall[c]:.3f}" if c in recall else "-" for c in classes) + " |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def without_metadata(model) -> dict:
    """The parameters that take the metadata out of ``model``: a fusion network's
    ``metadata=None`` (and its metadata / modality dropout 0: nothing left to drop), a fusion
    pipeline's metadata transformer ``"drop"``."""
    from sklearn.compose import ColumnTransformer

    params = model.get_params()
    out = {}
    for key in params:
        parent, _, name = key.rpartition("__")
        if name in ("metadata_dropout", "modality_dropout"):
            out[key] = 0.0
        if name != "metadata":
            continue
        owner = params[parent] if parent else model
        out[key] = "drop" if isinstance(owner, ColumnTransformer) else None
    return out


def settings(args):
    """``{param: value}`` of ``--set``."""
    out = {}
    for item in args.settings:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set takes PARAM=VALUE, got {item!r}")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def models(args):
    """``(recipe, image only?)`` to fit: each recipe, then each without metadata if asked."""
    out = [(recipe, False) for recipe in args.recipes]
    return out + [(recipe, True) for recipe in args.recipes] if args.image_only else out


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args.recipes = ["tiny"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (X, y, groups), externals, source = load_sets(args)
    if args.crop:
        start = time.perf_counter()
        X = cropped(X, out / "crops")
        externals = {name: (cropped(Xe, out / "crops"), ye, ge)
                     for name, (Xe, ye, ge) in externals.items()}  # fmt: skip
        source += f", every image cropped around its lesion ({time.perf_counter() - start:.0f} s)"
    cv = StratifiedGroupKFold(args.held_out, shuffle=True, random_state=args.random_state)
    train, held = next(cv.split(X, y, groups))
    held_name = "held-out HAM10000 lesions" if not args.smoke else "held-out lesions"
    tests = {held_name: (X.iloc[held].reset_index(drop=True), y[held], groups[held]),
             **externals}  # fmt: skip
    print(f"training data: {source}; {len(train)} training images, test sets: "
          + ", ".join(f"{k} ({len(v[1])})" for k, v in tests.items()), flush=True)  # fmt: skip
    results = {"source": source, "n_train": len(train), "held_out": args.held_out,
               "skinfuse": skinfuse.__version__, "calibrated": not args.no_calibration, "fit_seconds": {}, "recipes": {}}  # fmt: skip
    for recipe, image_only in models(args):
        model = make_recipe(recipe, random_state=args.random_state, cache_dir=args.cache_dir,
                            verbose=max(0, args.verbose - 1),
                            calibrate=not args.no_calibration)  # fmt: skip
        if settings(args):
            model.set_params(**settings(args))
            recipe += "[" + ",".join(args.settings) + "]"
        if image_only:
            model.set_params(**without_metadata(model))
            recipe = f"{recipe}-image-only"
        if not args.no_calibration:
            model = PredictionSets(model, coverage=0.9, prefit=False)
        start = time.perf_counter()
        # the lesion groups reach the calibration's inner folds and the networks' early stopping
        model.fit(X.iloc[train].reset_index(drop=True), y[train],
                  **({} if args.no_calibration else {"groups": groups[train]}))  # fmt: skip
        fit_s = time.perf_counter() - start
        results["fit_seconds"][recipe] = round(fit_s, 1)
        print(f"{recipe}: fitted in {fit_s:.0f} s", flush=True)
        skinfuse.save(model, out / f"{recipe}.skinfuse")
        classes = np.asarray(model.classes_)
        results["recipes"][recipe] = rows = {}
        for test, (Xt, yt, gt) in tests.items():
            rows[test] = {}
            for variant, Xv in variants(Xt, not args.no_ablation).items():
                start = time.perf_counter()
                proba = model.predict_proba(Xv)
                if variant == "as given":
                    np.savez_compressed(out / f"proba_{recipe}_{test.split()[0]}.npz",
                                        proba=proba, y=yt, groups=gt, classes=classes)  # fmt: skip
                rows[test][variant] = row = score(yt, proba, classes, gt, args)
                row["predict_s"] = time.perf_counter() - start
                if variant == "as given" and isinstance(model, PredictionSets):
                    row["sets"] = set_rows(model, yt, proba, args.coverage)
                    write_figures(out, recipe, test, model, yt, proba, row["sets"])
                    if test == held_name:
                        row["subgroups"] = write_subgroups(
                            out, recipe, yt, proba, classes, gt, Xt, args)  # fmt: skip
                print(f"  {test:26s} {variant:16s} " + "  ".join(
                    f"{SHOWN[k]} {cell(row.get(k))}" for k in
                    ("balanced_accuracy", "melanoma_auc", "sensitivity_at_80_specificity")),
                    flush=True)  # fmt: skip
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = tables(results) + sets_tables(results)
    (out / "table.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
