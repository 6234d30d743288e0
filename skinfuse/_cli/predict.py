"""``skinfuse predict``: a CSV of predictions (and Grad-CAM figures) for a folder of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._columns import IMAGE_COLUMN
from . import common

__all__ = ["run_predict"]


def _check_subfolders(images: Path, recursive) -> None:
    """Without ``recursive``, warn about (or, with no image on top, refuse) the images of
    ``images``' subfolders, which would be skipped."""
    from ..datasets import _image_files as image_files

    if recursive:
        return
    nested = [p for p in image_files(images, recursive=True) if p.parent != images]
    if not nested:
        return
    n_folders = len({p.relative_to(images).parts[0] for p in nested})
    where = f"{len(nested)} images in {n_folders} subfolder(s) of {images}"
    if not image_files(images):
        raise ValueError(f"no images in {images} itself, but {where}: pass --recursive")
    common.warn("predict", f"{where} are skipped; pass --recursive to predict them too")


def _image_folder(images: Path, metadata, columns, recursive):
    """``(X, image ids)`` for the images in ``images`` (sorted), metadata joined by id; warns
    (once) when a model that reads metadata gets missing values."""
    from ..datasets import _load_image_folder

    X, ids, unmatched = _load_image_folder(images, metadata, columns=columns, recursive=recursive)
    if columns and metadata is None:
        common.warn("predict", f"no --metadata: {', '.join(columns)} are treated as missing "
                               "values; predictions without metadata are less accurate")  # fmt: skip
    elif columns and unmatched:
        common.warn("predict", f"{unmatched} of {len(ids)} images have no row in {metadata}: "
                               "their metadata are missing values (less accurate)")  # fmt: skip
    return X, ids


def _check_grad_cam(model, X) -> None:
    """Refuse --grad-cam at once (on one case) for a model it cannot explain."""
    from ..explain import grad_cam

    try:
        grad_cam(model, X.iloc[:1])
    except ValueError as exc:
        raise ValueError(f"--grad-cam cannot explain this model: {exc}") from None


def _write_grad_cam(model, X, ids, y_pred, folder: Path, per_figure, verbose) -> list:
    import matplotlib.pyplot as plt

    from ..explain import grad_cam, plot_grad_cam

    starts = range(0, len(X), per_figure)
    if verbose:
        from .._utils._progress import progress

        starts = progress(starts, desc="Grad-CAM", unit="figure")
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


def _prediction_sets(model, model_path):
    """The model's :class:`~skinfuse.conformal.PredictionSets`, or a ValueError saying how to
    get one."""
    from ..conformal import PredictionSets

    if not isinstance(model, PredictionSets):
        raise ValueError(
            f"--coverage needs prediction sets, and {model_path} has none: train the model "
            "with 'skinfuse train ... --coverage 0.9' (conformalized on lesion-grouped "
            "out-of-fold probabilities), or wrap it in skinfuse.conformal.PredictionSets "
            "fitted on held-out lesions and save that"
        )
    return model


def _set_columns(table, sets, classes) -> None:
    from ..metrics import referral

    table["prediction_set"] = ["|".join(map(str, classes[row])) for row in sets]
    table["set_size"] = sets.sum(axis=1)
    table["refer"] = referral(sets, classes=classes)


def run_predict(
    model, *, out, data=None, layout=None, images=None, recursive=False, metadata=None,
    metadata_columns=None, grad_cam=None, per_figure=16, device=None, coverage=None,
    verbose=1, precision=None,
):  # fmt: skip
    """Predict every image of a dataset folder (``data``, in ``layout`` or a detected one)
    or of a folder of images (with ``recursive``, its subfolders' too; without, a warning
    names the images skipped there).

    ``metadata_columns`` (``None``: those the model was trained on) are read from the
    dataset's table or the ``metadata`` CSV; ``device`` runs the networks there, in
    ``precision`` (``None``: the model's own).

    Writes ``out`` (CSV): ``image_id``, ``image_path``, ``prediction`` and one
    ``proba_<class>`` column per class; with ``grad_cam``, Grad-CAM figures of
    ``per_figure`` images each in that folder. With ``coverage`` (a model trained with
    ``--coverage``): ``prediction_set`` (its classes joined by ``|``; empty: no class
    plausible enough), ``set_size`` and ``refer`` (:func:`skinfuse.metrics.referral`:
    melanoma in the set, or not exactly one class). Returns the predictions DataFrame.
    """
    if (data is None) == (images is None):
        raise ValueError("pass either --data (a dataset folder) or --images (a folder)")
    if metadata is not None and images is None:
        raise ValueError("--metadata goes with --images (a dataset folder has its own)")
    if layout is not None and data is None:
        raise ValueError("--layout goes with --data (the layout of a dataset folder)")
    if recursive and images is None:
        raise ValueError("--recursive goes with --images (a dataset folder has its layout)")
    device = common.check_device(device)
    model_path = common.check_in_file(model, "model file", "MODEL")
    if data is not None:
        data = common.check_data_dir(data)
    else:
        images = common.check_data_dir(images, "--images")
        _check_subfolders(images, recursive)
        if metadata is not None:
            metadata = common.check_in_file(metadata, "metadata file", "--metadata")
    out = common.check_out_file(out, "--out")
    if grad_cam is not None:
        grad_cam = common.prepare_out(grad_cam)
    if data is not None:
        bunch = common.load_data(data, layout, "predict", verbose)
    model = common.load_model(model_path)
    common.set_verbose(model, verbose)
    common.set_device(model, device)
    common.set_precision(model, precision)
    sets_model = None if coverage is None else _prediction_sets(model, model_path)
    columns = common.metadata_columns_of(model, metadata_columns)
    if data is not None:
        X, ids = common.model_input(bunch, columns), bunch.frame["image_id"].to_numpy(dtype=object)
    else:
        X, ids = _image_folder(images, metadata, columns, recursive)
    if grad_cam is not None:
        _check_grad_cam(model, X)
    common.say(verbose, f"predicting {len(X)} images with {model_path}")
    proba = model.predict_proba(X)
    classes = np.asarray(model.classes_)
    y_pred = classes[proba.argmax(axis=1)]
    table = pd.DataFrame({"image_id": ids, "image_path": X[IMAGE_COLUMN].to_numpy(),
                          "prediction": y_pred})  # fmt: skip
    for k, c in enumerate(classes):
        table[f"proba_{c}"] = proba[:, k]
    if sets_model is not None:
        _set_columns(table, sets_model.sets_from_proba(proba, coverage=coverage), classes)
    table.to_csv(out, index=False)
    counts = ", ".join(f"{c}: {n}" for c, n in table["prediction"].value_counts().items())
    if sets_model is not None:
        counts += (f"; at {coverage:g} coverage, mean set size {table['set_size'].mean():.2f}, "
                   f"{int(table['refer'].sum())} referred")  # fmt: skip
    common.say(verbose, f"predictions written to {out} ({counts})")
    if grad_cam is not None:
        written = _write_grad_cam(model, X, ids, y_pred, grad_cam, per_figure, verbose)
        common.say(verbose, f"{len(written)} Grad-CAM figure(s) written to {grad_cam}")
    return table
