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
    model, *, data, layout=None, out=None, n_resamples=1000, random_state=0,
    metadata_columns=None, device=None, subgroups=True, verbose=1, precision=None,
):  # fmt: skip
    """Score a model on a labelled folder, with lesion-grouped 95 % intervals.

    ``layout`` names the folder's layout (:data:`skinfuse.datasets.LAYOUTS`); ``None``
    detects it. ``metadata_columns`` (``None``: those the model was trained on) are read
    from the dataset's table; ``device`` runs the networks there, in ``precision`` (``None``:
    the model's own).

    Prints the per-class clinical report, which of the model's classes the data has (the
    macro metrics are over those), the clinical summary
    (:func:`skinfuse.metrics.clinical_summary`) and the shift summary: the data as the
    model sees it next to the training data's, when the model file records it
    (:func:`skinfuse.metrics.shift_report`). With ``out`` (a folder) writes
    ``clinical_report.csv``, ``metrics.json``, ``reliability.png`` and
    ``melanoma_tradeoff.png``.

    With ``subgroups`` (default) and metadata in the data: the report by sex, age band and
    body site (:func:`skinfuse.metrics.subgroup_report`; ``out``: ``subgroups.csv`` and the
    forest plot ``subgroups.png``). A model with prediction sets (trained with
    ``--coverage``): their coverage, per class, mean size and the referral rule
    (:func:`skinfuse.metrics.referral_summary`; ``out``: ``prediction_sets.png``).
    Returns ``(report, metrics)``.
    """
    from .._model_files import read_manifest
    from ..metrics import clinical_report, clinical_summary, dataset_summary, shift_report

    device = common.check_device(device)
    model_path = common.check_in_file(model, "model file", "MODEL")
    data = common.check_data_dir(data)
    if out is not None:
        out = common.prepare_out(out)
    bunch = common.load_data(data, layout, "evaluate", verbose)
    model = common.load_model(model_path)
    training = read_manifest(model_path)["training_data"]
    common.set_verbose(model, verbose)
    common.set_device(model, device)
    common.set_precision(model, precision)
    X = common.model_input(bunch, common.metadata_columns_of(model, metadata_columns))
    y, groups = bunch.target.to_numpy(dtype=object), bunch.groups
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
    classes_note = _classes_note(classes, report.attrs["classes_absent"])
    if report.attrs["classes_absent"]:
        print(classes_note, flush=True)
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
    extra_out = {}
    sets = _sets_summary(model, proba, y, classes)
    if sets is not None:
        extra_out["prediction_sets"] = sets
    if subgroups and _has_metadata(X):
        extra_out["subgroups"] = _subgroups(y, proba, classes, groups, X, n_resamples,
                                            random_state)  # fmt: skip
    summary = dataset_summary(X, y, proba, classes=classes)
    shift = shift_report(summary, training, names=("training", "evaluated"))
    print(_shift_text(shift, training is not None), flush=True)
    if out is not None:
        extra = {
            "classes": {"model": classes.tolist(), "absent": report.attrs["classes_absent"],
                        "note": classes_note},
            "shift": {"training": training, "evaluated": summary, **shift.attrs},
        }  # fmt: skip
        _write_evaluation(out, report, metrics, y, proba, classes, model_path, data, extra)
        _write_groups(out, extra_out, y, classes, model)
        common.say(verbose, f"report written to {out}")
    return report, metrics


def _has_metadata(X) -> bool:
    from .._columns import METADATA_COLUMNS

    return any(c in X.columns and X[c].notna().any() for c in METADATA_COLUMNS)


def _sets_summary(model, proba, y, classes):
    """Coverage, set sizes and the referral rule of a model with prediction sets, printed."""
    from ..conformal import PredictionSets
    from ..metrics import referral_summary

    if not isinstance(model, PredictionSets):
        return None
    sets = model.sets_from_proba(proba)
    s = referral_summary(y, sets, classes=classes, pos_label=MELANOMA)
    per_class = ", ".join(f"{c} {v:.3f} (n={s['support_per_class'][c]})"
                          for c, v in s["coverage_per_class"].items())  # fmt: skip
    print(f"prediction sets at {model.coverage:g} coverage ("
          f"{'class-conditional' if model.class_conditional else 'marginal'}): coverage "
          f"{s['coverage']:.3f}, mean set size {s['mean_set_size']:.2f}, singletons "
          f"{s['singletons']:.3f}, empty {s['empty_sets']:.3f}\n  per class: {per_class}\n"
          f"  referral (melanoma in the set, or not one class): {s['referral_rate']:.3f} of "
          f"images referred, {s['melanomas_caught']:.3f} of {s['n_positive']} melanomas "
          "caught", flush=True)  # fmt: skip
    return {"summary": s, "sets": sets, "coverage": model.coverage}


def _subgroups(y, proba, classes, groups, X, n_resamples, random_state):
    from ..metrics import subgroup_report

    report = subgroup_report(
        y, proba, classes=classes, groups=groups, metadata=X, pos_label=MELANOMA,
        n_resamples=n_resamples, random_state=random_state,
    )  # fmt: skip
    shown = ["n_images", "n_lesions", "n_positive"]
    table = report[shown].astype(str)
    for name in ("sensitivity", "specificity", "balanced_accuracy", "ece"):
        if name in report:
            table[name] = [
                "-" if np.isnan(r[name]) else f"{r[name]:.3f} [{r[name + '_low']:.3f}, "
                f"{r[name + '_high']:.3f}]" for _, r in report.iterrows()
            ]  # fmt: skip
    table["flagged"] = np.where(report["flagged"], "BELOW", "")
    print(f"by patient group ({MELANOMA} sensitivity and specificity of the predicted class; "
          f"95% lesion-grouped intervals; BELOW: the {MELANOMA} sensitivity interval lies "
          "wholly below the overall one):", flush=True)  # fmt: skip
    lines = ["| group | " + " | ".join(table.columns) + " |", "|---" * (table.shape[1] + 1) + "|"]
    lines += [f"| {a}: {g} | " + " | ".join(row) + " |" for (a, g), row in table.iterrows()]
    print("\n".join(lines), flush=True)
    return report


def _write_groups(out, extra, y, classes, model) -> None:
    """``subgroups.csv`` and ``subgroups.png``; ``prediction_sets.png``."""
    from ..metrics import plot_prediction_sets, plot_subgroup_report

    if "subgroups" in extra and "sensitivity" in extra["subgroups"]:
        extra["subgroups"].to_csv(out / "subgroups.csv")
        plot_subgroup_report(extra["subgroups"], path=out / "subgroups.png")
    elif "subgroups" in extra:
        extra["subgroups"].to_csv(out / "subgroups.csv")
    if "prediction_sets" in extra:
        sets = extra["prediction_sets"]
        plot_prediction_sets(y, sets["sets"], classes=classes, coverage=sets["coverage"],
                             path=out / "prediction_sets.png")  # fmt: skip
        summary = json.dumps(sets["summary"], indent=2)
        (out / "prediction_sets.json").write_text(summary)


def _classes_note(classes, absent) -> str:
    n, k = len(classes), len(classes) - len(absent)
    if not absent:
        return f"classes present: all {n} of the model's"
    return (
        f"classes present: {k} of the model's {n} (absent: {', '.join(map(str, absent))}); "
        f"balanced accuracy and macro F1 are over the {k} present; predictions of an absent "
        "class count as errors"
    )


def _shift_text(shift, with_training) -> str:
    """The shift summary as a markdown table, then what the data has new or lacks."""
    head = "the evaluated data next to the training data's (from the model file)"
    if not with_training:
        head = ("the evaluated data (the model file records no training data summary: it "
                "was saved before skinfuse recorded one)")  # fmt: skip
    lines = [f"shift summary: {head}:", "| quantity | " + " | ".join(shift.columns) + " |",
             "|---" * (len(shift.columns) + 1) + "|"]  # fmt: skip
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in shift.iterrows()]
    for column, values in shift.attrs["unseen_categories"].items():
        lines.append(f"unseen {column} (never in the training data): {', '.join(values)}")
    for column in shift.attrs["missing_columns"]:
        lines.append(f"{column}: wholly missing here (the training data had it)")
    return "\n".join(lines)


def _write_evaluation(out, report, metrics, y, proba, classes, model_path, data, extra) -> None:
    import matplotlib.pyplot as plt

    from ..metrics import plot_operating_curve, plot_reliability_diagram

    report.to_csv(out / "clinical_report.csv")
    document = {
        "model": str(model_path),
        "data": str(data),
        "n_images": len(y),
        "metrics": {name: dataclasses.asdict(iv) for name, iv in metrics.items()},
        "per_class": json.loads(report.to_json(orient="index")),
        **extra,
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
