"""Evaluation the way dermatology reads it: per-class reports, melanoma operating points,
partial AUC, calibration error, and confidence intervals that resample lesions, not images.

Accuracy flatters HAM10000 (the majority class alone scores 0.67). Papers and the ISIC
challenges compare models by balanced accuracy, by melanoma sensitivity and specificity
at an operating point (reader studies: specificity at the dermatologists' sensitivity),
by partial AUC above 80 % sensitivity (ISIC 2024) and by calibration.

Binary functions take the labels, the score of the class of interest (e.g.
``proba[:, list(model.classes_).index("mel")]``) and ``pos_label`` (``"mel"`` by default).

A classifier set to a target sensitivity is fitted by
:func:`skinfuse.imbalance.fit_triage_classifier`.
"""

from ._calibration import expected_calibration_error
from ._operating import (
    operating_point,
    partial_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)
from ._plots import plot_confusion_matrix, plot_operating_curve, plot_reliability_diagram
from ._report import BootstrapInterval, bootstrap_interval, clinical_report
from ._summary import clinical_summary

__all__ = [
    "BootstrapInterval",
    "bootstrap_interval",
    "clinical_report",
    "clinical_summary",
    "expected_calibration_error",
    "operating_point",
    "partial_auc",
    "plot_confusion_matrix",
    "plot_operating_curve",
    "plot_reliability_diagram",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
]

#: Names that moved out of this module: old name -> (new module, new name).
_MOVED = {"triage_classifier": ("skinfuse.imbalance", "fit_triage_classifier")}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        import warnings

        module, new_name = _MOVED[name]
        warnings.warn(
            f"skinfuse.metrics.{name} moved to {module}.{new_name} (it fits a model); the "
            f"old name will be removed in skinfuse 0.3. Import it as "
            f"`from {module} import {new_name}`.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
