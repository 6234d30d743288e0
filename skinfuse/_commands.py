"""``skinfuse train | predict | evaluate``: a model from a folder of images, without Python.

Each ``run_*`` function checks every path first (data folder, model file, outputs), then
works; user mistakes raise ``ValueError`` or ``OSError`` with a message that names the
path and the fix, which ``skinfuse.__main__`` prints as one line (exit status 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ._columns import IMAGE_COLUMN, METADATA_COLUMNS
from ._demo import _prepare_out

__all__ = ["run_evaluate", "run_predict", "run_train"]

#: Columns of a metadata CSV that name the image (by id, or by file name).
_KEY_COLUMNS = ("image_id", "image", "file_name", "filename", "file", IMAGE_COLUMN)

MELANOMA = "mel"


# -- checks, before any work -------------------------------------------------------------------
def _check_data_dir(path, option="--data") -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"{option} folder not found: {path}; pass an existing folder")
    return path


def _check_in_file(path, what, option) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}; pass an existing file with {option}")
    return path


def _check_out_file(path, option) -> Path:
    """Create the parent folder of an output file and check that it can be written to."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OSError(f"{option} {path} is a folder; pass a file name, e.g. {path / 'out'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise OSError(
            f"cannot write {option} {path}: {exc.strerror or exc}; pass a path in a folder "
            "that can be created and written to"
        ) from None
    return path


def _load_model(path):
    import skinfuse

    try:
        return skinfuse.load(path)
    except TypeError as exc:  # untrusted types in the file: a user-facing refusal
        raise ValueError(str(exc)) from None


def _set_verbose(model, verbose) -> None:
    """Progress bars of skinfuse's estimators on (1) or off (0), fitted copies included."""
    from ._model_files import _estimators

    for est in _estimators(model):
        if type(est).__module__.startswith("skinfuse.") and hasattr(est, "verbose"):
            est.verbose = verbose


def _say(verbose, message) -> None:
    if verbose:
        print(message, flush=True)


def _warn(command, message) -> None:
    print(f"skinfuse {command}: warning: {message}", file=sys.stderr, flush=True)


# -- metrics -----------------------------------------------------------------------------------
def _mel_score(proba, classes):
    classes = list(classes)
    return proba[:, classes.index(MELANOMA)] if MELANOMA in classes else None


def _fold_metrics(y, proba, classes) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    from .metrics import specificity_at_sensitivity

    y = np.asarray(y)
    y_pred = np.asarray(classes)[proba.argmax(axis=1)]
    scores = {
        "balanced_accuracy": balanced_accuracy_score(y, y_pred),
        "accuracy": accuracy_score(y, y_pred),
        "macro_f1": f1_score(y, y_pred, average="macro", zero_division=0),
    }
    mel = _mel_score(proba, classes)
    if mel is not None and (y == MELANOMA).any() and (y != MELANOMA).any():
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
        _say(verbose, f"cross-validation fold {k}/{n_splits}: {len(train)} train, {len(test)} test")
        fitted = clone(model).fit(X.iloc[train], y.iloc[train])
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


def _check_savable(model, out: Path) -> None:
    """Save the unfitted model once to a scratch file: a refusal comes now, not after the fit."""
    from . import save

    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        try:
            save(model, Path(scratch) / "unfitted.skinfuse")
        except TypeError as exc:  # e.g. a parameter skops would not open safely
            raise ValueError(f"this model cannot be saved: {exc}") from None


# -- train -------------------------------------------------------------------------------------
def run_train(data, *, recipe, out, cv=None, cache_dir=None, random_state=0, card=False, verbose=1):
    """Fit recipe ``recipe`` on every image of a HAM10000-layout folder; save it to ``out``.

    With ``cv`` (an int >= 2), a lesion-grouped ``StratifiedGroupKFold`` cross-validation
    runs first; its mean scores are printed and stored in the model file's metrics.
    Returns the path of the model file.
    """
    from . import save
    from ._recipes import RECIPES, make_recipe
    from .datasets import load_ham10000

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    data = _check_data_dir(data)
    out = _check_out_file(out, "--out")
    if cache_dir is not None:
        from ._cache import check_cache_dir

        check_cache_dir(cache_dir)
        cache_dir = os.fspath(cache_dir)  # a str: the model file stores plain parameters
    bunch = load_ham10000(data)
    X, y, groups = bunch.data, bunch.target, bunch.groups
    n_lesions = len(pd.unique(groups))
    _say(verbose, f"data: {data} ({len(y)} images, {n_lesions} lesions, {len(bunch.target_names)} "
                  f"classes); recipe: {recipe}")  # fmt: skip
    model = make_recipe(recipe, random_state=random_state, cache_dir=cache_dir, verbose=verbose)
    _check_savable(model, out)
    metrics = None
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
    _say(verbose, f"fitting {recipe!r} on all {len(y)} images")
    model.fit(X, y)
    _say(verbose, f"fitted in {time.perf_counter() - t0:.0f} s")
    path = save(model, out, metrics=metrics, card=card)
    _say(verbose, f"model written to {path}")
    return path


# -- predict -----------------------------------------------------------------------------------
def _read_metadata_csv(csv: Path) -> pd.DataFrame:
    """The metadata CSV indexed by image stem, with the metadata columns (missing -> NaN)."""
    try:
        meta = pd.read_csv(csv, dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"cannot read the metadata file {csv}: {reason}") from None
    keys = [c for c in _KEY_COLUMNS if c in meta.columns]
    if not keys:
        raise ValueError(
            f"the metadata file {csv} has no column naming the image; add one of "
            f"{', '.join(_KEY_COLUMNS)} (the image id or its file name)"
        )
    if not any(c in meta.columns for c in METADATA_COLUMNS):
        raise ValueError(
            f"the metadata file {csv} has none of the columns {', '.join(METADATA_COLUMNS)}"
        )
    key = meta[keys[0]].astype(str).map(lambda s: os.path.splitext(os.path.basename(s))[0])
    frame = pd.DataFrame(index=pd.Index(key, name="image_id"))
    for col in METADATA_COLUMNS:
        values = meta[col].to_numpy(dtype=object) if col in meta.columns else np.nan
        frame[col] = values
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce").astype(float)
    for col in METADATA_COLUMNS[1:]:
        values = frame[col].astype(object)
        frame[col] = values.where(values.notna() & (values != "unknown"), np.nan).astype(object)
    return frame[~frame.index.duplicated(keep="first")]


def _image_folder(images: Path, metadata, uses_metadata):
    """``(X, image ids)`` for the images in ``images`` (sorted), metadata joined by id."""
    from .images import IMAGE_EXTENSIONS

    files = sorted(
        p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise ValueError(
            f"no images in {images}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
        )
    ids = pd.Index([p.stem for p in files], name="image_id")
    X = pd.DataFrame({IMAGE_COLUMN: [str(p.absolute()) for p in files]}, index=ids)
    if metadata is None:
        for col in METADATA_COLUMNS:
            X[col] = np.nan
        X["age"] = X["age"].astype(float)
        for col in METADATA_COLUMNS[1:]:
            X[col] = X[col].astype(object)
        if uses_metadata:
            _warn("predict", "no --metadata: age, sex and localization are treated as missing "
                             "values; predictions without metadata are less accurate")  # fmt: skip
    else:
        meta = _read_metadata_csv(metadata)
        X = X.join(meta, how="left")
        unmatched = int((~ids.isin(meta.index)).sum())
        if unmatched == len(ids):
            raise ValueError(
                f"none of the {len(ids)} images in {images} has a row in {metadata}; its key "
                "column must hold the image ids (file names without extension) or file names"
            )
        if unmatched and uses_metadata:
            _warn("predict", f"{unmatched} of {len(ids)} images have no row in {metadata}: "
                             "their metadata are missing values (less accurate)")  # fmt: skip
    return X.reset_index(drop=True), ids.to_numpy(dtype=object)


def _uses_metadata(model) -> bool:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return True
    return any(col in set(names) for col in METADATA_COLUMNS)


def _check_grad_cam(model, X) -> None:
    """Refuse --grad-cam at once (on one case) for a model it cannot explain."""
    from .explain import grad_cam

    try:
        grad_cam(model, X.iloc[:1])
    except ValueError as exc:
        raise ValueError(f"--grad-cam cannot explain this model: {exc}") from None


def _write_grad_cam(model, X, ids, y_pred, folder: Path, per_figure, verbose) -> list:
    import matplotlib.pyplot as plt

    from .explain import grad_cam, plot_grad_cam

    starts = range(0, len(X), per_figure)
    if verbose:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Grad-CAM", unit="figure")
    written = []
    for start in starts:
        rows = slice(start, min(start + per_figure, len(X)))
        heat, images = grad_cam(model, X.iloc[rows], return_images=True)
        if per_figure == 1:
            name = f"{ids[start]}_grad_cam.png"
        else:
            name = f"grad_cam_{start + 1:05d}-{rows.stop:05d}.png"
        fig = plot_grad_cam(
            images, heat, y_pred=y_pred[rows], max_images=per_figure, path=folder / name
        )
        plt.close(fig)
        written.append(folder / name)
    return written


def run_predict(
    model, *, out, data=None, images=None, metadata=None, grad_cam=None, per_figure=16,
    verbose=1,
):  # fmt: skip
    """Predict every image of a HAM10000 folder (``data``) or of a folder of images.

    Writes ``out`` (CSV): ``image_id``, ``image_path``, ``prediction`` and one
    ``proba_<class>`` column per class; with ``grad_cam``, Grad-CAM figures of
    ``per_figure`` images each in that folder. Returns the predictions DataFrame.
    """
    from .datasets import load_ham10000

    if (data is None) == (images is None):
        raise ValueError("pass either --data (a HAM10000 folder) or --images (a folder)")
    if metadata is not None and images is None:
        raise ValueError("--metadata goes with --images (a HAM10000 folder has its own)")
    model_path = _check_in_file(model, "model file", "MODEL")
    if data is not None:
        data = _check_data_dir(data)
    else:
        images = _check_data_dir(images, "--images")
        if metadata is not None:
            metadata = _check_in_file(metadata, "metadata file", "--metadata")
    out = _check_out_file(out, "--out")
    if grad_cam is not None:
        grad_cam = _prepare_out(grad_cam)
    if data is not None:
        bunch = load_ham10000(data)
        X, ids = bunch.data, bunch.frame["image_id"].to_numpy(dtype=object)
    model = _load_model(model_path)
    _set_verbose(model, verbose)
    if images is not None:
        X, ids = _image_folder(images, metadata, _uses_metadata(model))
    if grad_cam is not None:
        _check_grad_cam(model, X)
    _say(verbose, f"predicting {len(X)} images with {model_path}")
    proba = model.predict_proba(X)
    classes = np.asarray(model.classes_)
    y_pred = classes[proba.argmax(axis=1)]
    table = pd.DataFrame({"image_id": ids, "image_path": X[IMAGE_COLUMN].to_numpy(),
                          "prediction": y_pred})  # fmt: skip
    for k, c in enumerate(classes):
        table[f"proba_{c}"] = proba[:, k]
    table.to_csv(out, index=False)
    counts = ", ".join(f"{c}: {n}" for c, n in table["prediction"].value_counts().items())
    _say(verbose, f"predictions written to {out} ({counts})")
    if grad_cam is not None:
        written = _write_grad_cam(model, X, ids, y_pred, grad_cam, per_figure, verbose)
        _say(verbose, f"{len(written)} Grad-CAM figure(s) written to {grad_cam}")
    return table


# -- evaluate ----------------------------------------------------------------------------------
def _metric_functions(classes):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from .metrics import (
        expected_calibration_error,
        partial_auc,
        sensitivity_at_specificity,
        specificity_at_sensitivity,
    )

    classes = np.asarray(classes)

    def labels(proba):
        return classes[proba.argmax(axis=1)]

    functions = {
        "balanced accuracy": lambda y, p: balanced_accuracy_score(y, labels(p)),
        "accuracy": lambda y, p: accuracy_score(y, labels(p)),
        "macro F1": lambda y, p: f1_score(
            y, labels(p), labels=classes, average="macro", zero_division=0
        ),
        "ECE (top-label)": lambda y, p: expected_calibration_error(y, p, classes=classes),
    }
    if MELANOMA in classes:
        mel = int(np.flatnonzero(classes == MELANOMA)[0])
        functions |= {
            "melanoma sensitivity at 80% specificity": lambda y, p: sensitivity_at_specificity(
                y, p[:, mel], 0.8
            ),
            "melanoma sensitivity at 90% specificity": lambda y, p: sensitivity_at_specificity(
                y, p[:, mel], 0.9
            ),
            "melanoma specificity at 82% sensitivity": lambda y, p: specificity_at_sensitivity(
                y, p[:, mel], 0.82
            ),
            "melanoma partial AUC (sensitivity >= 80%)": lambda y, p: partial_auc(
                y, p[:, mel], min_tpr=0.8
            ),
        }
    return functions


def run_evaluate(model, *, data, out=None, n_resamples=1000, random_state=0, verbose=1):
    """Score a model on a labelled HAM10000-layout folder, with lesion-grouped 95 % intervals.

    Prints the per-class clinical report and the summary metrics; with ``out`` (a folder)
    writes ``clinical_report.csv``, ``metrics.json``, ``reliability.png`` and
    ``melanoma_tradeoff.png``. Returns ``(report, metrics)``.
    """
    from .datasets import load_ham10000
    from .metrics import bootstrap_interval, clinical_report

    model_path = _check_in_file(model, "model file", "MODEL")
    data = _check_data_dir(data)
    if out is not None:
        out = _prepare_out(out)
    bunch = load_ham10000(data)
    model = _load_model(model_path)
    _set_verbose(model, verbose)
    X, y, groups = bunch.data, bunch.target.to_numpy(dtype=object), bunch.groups
    classes = np.asarray(model.classes_)
    unknown = sorted(set(y) - set(classes.tolist()))
    if unknown:
        raise ValueError(
            f"the labels of {data} include classes the model does not know: {unknown}; "
            f"the model predicts {classes.tolist()}"
        )
    _say(verbose, f"predicting {len(y)} images of {data} with {model_path}")
    proba = model.predict_proba(X)
    report = clinical_report(y, proba, classes=classes)
    print(f"per-class report ({len(y)} images, {len(pd.unique(groups))} lesions):")
    print(report.round(3).to_string(), flush=True)
    metrics = {}
    functions = _metric_functions(classes)
    if MELANOMA not in classes or not (y == MELANOMA).any():
        _warn("evaluate", "no melanoma in the model's classes or in the data: the melanoma "
                          "operating points are left out")  # fmt: skip
        functions = {k: f for k, f in functions.items() if not k.startswith("melanoma")}
    names = functions.items()
    if verbose:
        from tqdm.auto import tqdm

        names = tqdm(names, desc="bootstrap intervals", unit="metric", total=len(functions))
    for name, function in names:
        metrics[name] = bootstrap_interval(function, y, proba, groups=groups,
                                           n_resamples=n_resamples, random_state=random_state)  # fmt: skip
    lines = [f"| metric | value [95% CI, {n_resamples} lesion-grouped bootstrap resamples] |",
             "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {iv} |" for name, iv in metrics.items()]
    print("\n".join(lines), flush=True)
    if out is not None:
        _write_evaluation(out, report, metrics, y, proba, classes, model_path, data)
        _say(verbose, f"report written to {out}")
    return report, metrics


def _write_evaluation(out, report, metrics, y, proba, classes, model_path, data) -> None:
    import matplotlib.pyplot as plt

    from .metrics import plot_operating_curve, plot_reliability_diagram

    report.to_csv(out / "clinical_report.csv")
    document = {
        "model": str(model_path),
        "data": str(data),
        "n_images": len(y),
        "metrics": {name: dataclasses.asdict(iv) for name, iv in metrics.items()},
        "per_class": json.loads(report.to_json(orient="index")),
    }
    (out / "metrics.json").write_text(json.dumps(document, indent=2))
    fig = plot_reliability_diagram(
        y, {"model": proba}, classes=classes, title=f"{model_path.name} on {data.name}",
        path=out / "reliability.png",
    )  # fmt: skip
    plt.close(fig)
    mel = _mel_score(proba, classes)
    if mel is not None and (y == MELANOMA).any() and (y != MELANOMA).any():
        fig = plot_operating_curve(y, {model_path.name: mel}, path=out / "melanoma_tradeoff.png")
        plt.close(fig)
