"""The manifest (versions, classes, columns, checksums) and the model card."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ._format import _type_name
from ._networks import _json_safe

#: Packages whose versions the manifest records.
_VERSIONED = (
    "scikit-learn", "imbalanced-learn", "numpy", "torch", "skorch", "skops", "safetensors"
)  # fmt: skip


# -- the manifest ------------------------------------------------------------------------------
def _version_of(package):
    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover
        return None


def _describe(model, torch_estimators) -> dict:
    def listed(name):
        try:
            value = getattr(model, name)
        except (AttributeError, ValueError, TypeError):  # unfitted, or an unfitted step
            return None
        return np.asarray(value).tolist()

    sizes = sorted(
        {int(est._size() if hasattr(est, "_size") else est.image_size) for est in torch_estimators
         if not isinstance(getattr(est, "backbone", None), (tuple, list))}
    )  # fmt: skip
    return {
        "model_class": _type_name(type(model)),
        **_uncertainty(model),
        "classes": listed("classes_"),
        "feature_names_in": listed("feature_names_in_"),
        "n_features_in": _json_safe(getattr(model, "n_features_in_", None), "n_features_in_"),
        "image_size": (sizes[0] if len(sizes) == 1 else sizes) if sizes else None,
    }


def _uncertainty(model) -> dict:
    """``calibration`` and ``prediction_sets``: what a fitted model says of its probabilities
    (``None`` when it has no such step, or is not fitted)."""
    from .._utils._estimators import walk_estimators
    from ..calibration import TemperatureCalibratedClassifier
    from ..conformal import PredictionSets

    out = {"calibration": None, "prediction_sets": None}
    for est in walk_estimators(model):
        # the fitted copy (estimator_) wins over the unfitted template (estimator)
        if isinstance(est, TemperatureCalibratedClassifier) and (
            out["calibration"] is None or not out["calibration"]["fitted"]
        ):
            out["calibration"] = {
                "method": "temperature",
                "inner_folds": int(est.n_splits),
                "fitted": hasattr(est, "temperature_"),
                "temperature": float(est.temperature_) if hasattr(est, "temperature_") else None,
            }
        if isinstance(est, PredictionSets) and out["prediction_sets"] is None:
            out["prediction_sets"] = {
                "coverage": float(est.coverage),
                "class_conditional": bool(est.class_conditional),
                "conformalized_on": "held-out images" if est.prefit else (
                    "lesion-grouped out-of-fold probabilities of the training images"),
                "n_scores": len(est.scores_) if hasattr(est, "scores_") else None,
            }  # fmt: skip
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the model card ----------------------------------------------------------------------------
def _card_path(path: Path) -> Path:
    return path.with_name(path.name + ".md") if path.suffix == ".md" else path.with_suffix(".md")


def _metrics_markdown(metrics) -> str:
    if not metrics:
        return (
            "No metrics were given to `skinfuse.save(..., metrics=...)`. Report "
            "lesion-grouped cross-validated results here (all images of one lesion in the "
            "same fold), e.g. from `skinfuse.metrics`."
        )
    flat = all(isinstance(v, (int, float, str, bool)) or v is None for v in metrics.values())
    if flat:
        rows = "\n".join(
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items()
        )
        table = f"| metric | value |\n|---|---|\n{rows}"
    else:
        table = f"```json\n{json.dumps(metrics, indent=2)}\n```"
    return (
        "As given to `skinfuse.save` by whoever saved the model (skinfuse did not compute or "
        "check them). They should come from a lesion-grouped evaluation (all images of one "
        f"lesion in the same fold), not from a split by image.\n\n{table}"
    )


def _training_data_markdown(summary) -> str:
    """A few lines on the training data from its recorded summary (``None``: nothing)."""
    if not summary:
        return ""
    lines = [f"- Recorded when the model was saved: {summary.get('n_images')} images"]
    if summary.get("classes"):
        mix = ", ".join(f"{c} {100 * v:.1f} %" for c, v in summary["classes"].items())
        lines.append(f"- Class mix: {mix}")
    missing = ", ".join(
        f"{name} {100 * column['missing']:.0f} %"
        for name, column in summary.get("metadata", {}).items()
    )
    if missing:
        lines.append(f"- Metadata missing: {missing}")
    images = summary.get("images", {})
    if "median_width" in images:
        lines.append(
            f"- Images: median {images['median_width']:.0f}x{images['median_height']:.0f} px"
        )
    return "\n".join(lines) + "\n\n"


def _calibration_line(manifest) -> str:
    calibration = manifest.get("calibration")
    if not calibration:
        return "none (probabilities as the model gives them)"
    t = calibration["temperature"]
    return (f"temperature scaling on {calibration['inner_folds']} lesion-grouped inner folds"
            + (f", T = {t:.3f}" if t is not None else " (not fitted)"))  # fmt: skip


def _sets_line(manifest) -> str:
    sets = manifest.get("prediction_sets")
    if not sets:
        return "none"
    kind = "class-conditional" if sets["class_conditional"] else "marginal"
    return f"{100 * sets['coverage']:.3g} % {kind} coverage, conformalized on {sets['conformalized_on']}"


def _model_card(model, manifest, path) -> str:
    versions = manifest["versions"]
    classes = manifest["classes"]
    columns = manifest["feature_names_in"]
    with np.printoptions(threshold=20):
        text = repr(model)
    return f"""# Model card: {manifest["model_class"].rsplit(".", 1)[-1]}

File `{path.name}` (skinfuse model file, format {manifest["format_version"]}), saved
{manifest["created"]} with skinfuse {manifest["skinfuse_version"]}, scikit-learn
{versions.get("scikit-learn")}, torch {versions.get("torch")}. Open it with
`skinfuse.load("{path.name}")`: no pickle is involved.

## Model

```
{text}
```

- Classes: {", ".join(map(str, classes)) if classes else "not recorded (not a fitted classifier)"}
- Input columns: {", ".join(map(str, columns)) if columns else "not recorded"}
- Image size: {manifest["image_size"] or "no images (metadata only)"}
- Calibration: {_calibration_line(manifest)}
- Prediction sets: {_sets_line(manifest)}

## Intended use

Research on the classification of dermoscopic images of skin lesions together with
clinical metadata (age, sex, body site): comparing methods, studying errors and
explanations. Not for the diagnosis or triage of patients.

## Data

{_training_data_markdown(manifest.get("training_data"))}Describe here the training data: source (e.g. HAM10000), number of lesions and of images,
class distribution, population (age, sex, skin types), acquisition devices and sites, and
how duplicates of one lesion were kept together.

## Evaluation (lesion-grouped)

{_metrics_markdown(manifest["metrics"])}

## Limitations

- Research use only. This model is **not a medical device**: it has not been validated
  clinically or approved by any regulator, and must not be used to diagnose, rule out or
  triage skin cancer.
- It knows only the classes above; a lesion of another kind is still given one of them.
- Performance depends on the population, the skin types, the camera/dermatoscope and the
  class prevalence it is applied to; public dermoscopy data sets under-represent darker
  skin. Probabilities are calibrated, if at all, for the training prevalence.
- Results measured on images of lesions seen in training overstate performance: only
  lesion-grouped results are meaningful.
"""
