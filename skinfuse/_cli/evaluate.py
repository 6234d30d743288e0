"""``skinfuse evaluate``: score a model on a labelled folder, with lesion-grouped intervals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from . import common

__all__ = ["run_evaluate"]

MELANOMA = "mel"


def run_evaluate(
    model, *, data, layout=None, out=None, n_resamples=1000, random_state=0, verbose=1
):
    """Score a model on a labelled folder, with lesion-grouped 95 % intervals.

    ``layout`` names the folder's layout (:data:`skinfuse.datasets.LAYOUTS`); ``None``
    detects it.

    Prints the per-class clinical report and the clinical summary
    (:func:`skinfuse.metrics.clinical_summary`); with ``out`` (a folder) writes
    ``clinical_report.csv``, ``metrics.json``, ``reliability.png`` and
    ``melanoma_tradeoff.png``. Returns ``(report, metrics)``.
    """
    from ..metrics import clinical_report, clinical_summary

    model_path = common.check_in_file(model, "model file", "MODEL")
    data = common.check_data_dir(data)
    if out is not None:
        out = common.prepare_out(out)
    bunch = common.load_data(data, layout, "evaluate", verbose)
    model = common.load_model(model_path)
    common.set_verbose(model, verbose)
    X, y, groups = bunch.data, bunch.target.to_numpy(dtype=object), bunch.groups
    classes = np.asarray(model.classes_)
    unknown = sorted(set(y) - set(classes.tolist()))
    if unknown:
        raise ValueError(
            f"the labels of {data} include classes the model does not know: {unknown}; "
            f"the model predicts {classes.tolist()}"
        )
    common.say(verbose, f"predicting {len(y)} images of {data} with {model_path}")
    proba = model.predict_proba(X)
    report = clinical_report(y, proba, classes=classes)
    print(f"per-class report ({len(y)} images, {len(pd.unique(groups))} lesions):")
    print(report.round(3).to_string(), flush=True)
    if MELANOMA not in classes or not (y == MELANOMA).any():
        common.warn("evaluate", "no melanoma in the model's classes or in the data: the "
                                "melanoma operating points are left out")  # fmt: skip
    metrics = clinical_summary(
        y, proba, classes=classes, groups=groups, pos_label=MELANOMA, n_resamples=n_resamples,
        random_state=random_state, verbose=verbose,
    )  # fmt: skip
    lines = [f"| metric | value [95% CI, {n_resamples} lesion-grouped bootstrap resamples] |",
             "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {iv} |" for name, iv in metrics.items()]
    print("\n".join(lines), flush=True)
    if out is not None:
        _write_evaluation(out, report, metrics, y, proba, classes, model_path, data)
        common.say(verbose, f"report written to {out}")
    return report, metrics


def _write_evaluation(out, report, metrics, y, proba, classes, model_path, data) -> None:
    import matplotlib.pyplot as plt

    from ..metrics import plot_operating_curve, plot_reliability_diagram

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
    if MELANOMA in classes and (y == MELANOMA).any() and (y != MELANOMA).any():
        mel = proba[:, list(classes).index(MELANOMA)]
        fig = plot_operating_curve(y, {model_path.name: mel}, path=out / "melanoma_tradeoff.png")
        plt.close(fig)
