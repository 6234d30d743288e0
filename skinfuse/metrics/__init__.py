"""Evaluation the way dermatology reads it: per-class reports, melanoma operating points,
partial AUC, calibration error, and confidence intervals that resample lesions, not images.

Accuracy flatters HAM10000 (the majority class alone scores 0.67). Papers and the ISIC
challenges compare models by balanced accuracy, by melanoma sensitivity and specificity
at an operating point (reader studies: specificity at the dermatologists' sensitivity),
by partial AUC above 80 % sensitivity (ISIC 2024) and by calibration.

Prediction sets (:class:`skinfuse.conformal.PredictionSets`) are read by
:func:`referral_summary` (coverage, set size, the referral rule's referral rate and
melanomas caught) and :func:`referral_curve`; :func:`subgroup_report` gives the clinical
metrics by sex, age band and body site, flagging groups whose melanoma sensitivity falls
below the overall one.

On data of another source, :func:`dataset_summary` and :func:`shift_report` show how it
differs from the training data (image sizes, class mix, metadata missing or unseen,
confidence).

Binary functions take the labels, the score of the class of interest (e.g.
``proba[:, list(model.classes_).index("mel")]``) and ``pos_label`` (``"mel"`` by default).

A classifier set to a target sensitivity is fitted by
:func:`skinfuse.imbalance.fit_triage_classifier`.
"""

from .._utils._deprecation import moved_names
from ._calibration import expected_calibration_error
from ._operating import (
    operating_point,
    partial_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)
from ._plots import plot_confusion_matrix, plot_operating_curve, plot_reliability_diagram
from ._referral import (
    plot_prediction_sets,
    plot_referral_curve,
    referral,
    referral_curve,
    referral_summary,
)
from ._report import BootstrapInterval, bootstrap_interval, clinical_report
from ._shift import dataset_summary, shift_report
from ._subgroups import age_band, plot_subgroup_report, subgroup_report
from ._summary import clinical_summary

__all__ = [
    "BootstrapInterval",
    "age_band",
    "bootstrap_interval",
    "clinical_report",
    "clinical_summary",
    "dataset_summary",
    "expected_calibration_error",
    "operating_point",
    "partial_auc",
    "plot_confusion_matrix",
    "plot_operating_curve",
    "plot_prediction_sets",
    "plot_referral_curve",
    "plot_reliability_diagram",
    "plot_subgroup_report",
    "referral",
    "referral_curve",
    "referral_summary",
    "sensitivity_at_specificity",
    "shift_report",
    "specificity_at_sensitivity",
    "subgroup_report",
]

__getattr__ = moved_names(
    "skinfuse.metrics",
    {"triage_classifier": ("skinfuse.imbalance", "fit_triage_classifier", "it fits a model")},
)
