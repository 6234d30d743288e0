"""
======================================================================
Clinical evaluation: calibration, melanoma trade-off, lesion intervals
======================================================================

The numbers clinicians ask for, from ``skinfuse.metrics``, on out-of-fold predictions
grouped by lesion:

1. a reliability diagram before and after temperature scaling fitted on lesion-grouped
   **inner** folds;
2. the melanoma sensitivity/specificity trade-off;
3. bootstrap confidence intervals that resample **lesions**, not images.
"""

# %%
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedGroupKFold

from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder
from skinfuse.metrics import (
    bootstrap_interval,
    expected_calibration_error,
    operating_point,
    plot_operating_curve,
    plot_reliability_diagram,
    specificity_at_sensitivity,
)
from skinfuse.pipeline import make_fusion_pipeline

# Small folds can miss a rare body site that the test fold has; skinfuse then warns and
# encodes it as an unknown category. Expected with 240 lesions, so silenced here.
warnings.filterwarnings("ignore", message="column 'localization' has", category=UserWarning)

lesions = make_synthetic_lesions(240, image_size=64, random_state=0)
X, y, groups = lesions.data, np.asarray(lesions.target), np.asarray(lesions.groups)
model = make_fusion_pipeline(
    FrozenCNNEncoder("efficientnet_lite0", image_size=64, verbose=0), random_state=0
)
outer = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=0)
classes = np.unique(y)

# %%
# Out-of-fold probabilities, before and after temperature scaling
# ----------------------------------------------------------------
# For each outer fold, the calibrated model learns one temperature on lesion-grouped
# inner folds of the outer training set (passed as precomputed splits, see
# docs/evaluation.md), so no lesion of the outer test fold is ever seen.
proba_raw = np.zeros((len(y), len(classes)))
proba_cal = np.zeros_like(proba_raw)
for train, test in outer.split(X, y, groups):
    inner = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
    inner_splits = list(inner.split(X.iloc[train], y[train], groups[train]))
    fitted = clone(model).fit(X.iloc[train], y[train])
    proba_raw[test] = fitted.predict_proba(X.iloc[test])
    calibrated = CalibratedClassifierCV(
        model, method="temperature", cv=inner_splits, ensemble=False
    ).fit(X.iloc[train], y[train])
    proba_cal[test] = calibrated.predict_proba(X.iloc[test])

for name, proba in [("before", proba_raw), ("after", proba_cal)]:
    ece = expected_calibration_error(y, proba, classes=classes)
    print(f"expected calibration error {name} temperature scaling: {ece:.3f}")

# %%
# The inner folds of 240 synthetic lesions are small, so the learned temperature is noisy
# and the gain modest; on HAM10000 the same procedure lowers the frozen recipe's error
# from 0.142 to 0.035 (docs/evaluation.md).
#
# One picture, both curves: a calibrated model's points lie on the diagonal.
fig_reliability = plot_reliability_diagram(
    y,
    {"uncalibrated": proba_raw, "temperature (inner grouped folds)": proba_cal},
    classes=classes,
    title="out-of-fold reliability, 240 synthetic lesions",
)

# %%
# The melanoma trade-off
# ----------------------
# Melanoma against the rest, out of fold: what each sensitivity costs in specificity,
# and the threshold of one operating point. Temperature scaling keeps the predicted
# classes; it only moves the melanoma scores a little relative to each other.
mel = list(classes).index("mel")
fig_curve = plot_operating_curve(
    y,
    {"uncalibrated": proba_raw[:, mel], "temperature": proba_cal[:, mel]},
    pos_label="mel",
    mark_sensitivity=0.8,
)
print(operating_point(y, proba_cal[:, mel], sensitivity=0.8, pos_label="mel"))

# %%
# Confidence intervals over lesions
# ---------------------------------
# Images of one lesion are not independent, so the bootstrap resamples lesions
# (``groups``) and keeps all their images together.
interval = bootstrap_interval(
    lambda t, p: specificity_at_sensitivity(t, p, 0.8),
    y,
    proba_cal[:, mel],
    groups=groups,
    n_resamples=200,
)
print(interval)
