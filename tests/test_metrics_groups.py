"""The referral rule, prediction-set summaries and the subgroup report (skinfuse.metrics)."""

import numpy as np
import pandas as pd
import pytest

from skinfuse.metrics import (
    age_band,
    plot_prediction_sets,
    plot_referral_curve,
    plot_subgroup_report,
    referral,
    referral_curve,
    referral_summary,
    subgroup_report,
)

CLASSES = ["bkl", "mel", "nv"]


def test_referral_rule_refers_melanoma_in_the_set_ambiguous_and_empty_sets():
    sets = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=bool)
    assert referral(sets, classes=CLASSES).tolist() == [True, False, True, True, False]
    assert referral(sets, classes=CLASSES, max_set_size=2).tolist() == [
        True, False, False, True, False]  # fmt: skip
    assert referral(sets, classes=CLASSES, refer_classes=["mel", "bkl"]).tolist() == [
        True, False, True, True, True]  # fmt: skip
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        referral(sets[:, :2], classes=CLASSES)


def test_referral_summary_counts_coverage_sizes_and_melanomas_caught():
    y = ["mel", "mel", "nv", "nv", "bkl"]
    sets = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=bool)
    s = referral_summary(y, sets, classes=CLASSES)
    assert s["coverage"] == pytest.approx(0.8)
    assert s["coverage_per_class"] == {"bkl": 1.0, "mel": 0.5, "nv": 1.0}
    assert s["mean_set_size"] == pytest.approx(7 / 5) and s["singletons"] == pytest.approx(0.6)
    assert s["referral_rate"] == pytest.approx(0.4) and s["melanomas_caught"] == 0.5
    assert s["n_positive"] == 2 and s["empty_sets"] == 0


def test_referral_curve_rows_follow_the_levels():
    y = np.array(["mel", "nv", "nv", "bkl"])
    small = np.eye(3, dtype=bool)[[1, 2, 2, 0]]
    large = np.ones((4, 3), dtype=bool)
    curve = referral_curve(y, {0.95: large, 0.8: small}, classes=CLASSES)
    assert curve.index.tolist() == [0.8, 0.95]
    assert curve["referral_rate"].tolist() == [0.25, 1.0]
    assert curve["melanomas_caught"].tolist() == [1.0, 1.0]
    assert "coverage_mel" in curve


def _subgroup_data(seed=0, n=800):
    rng = np.random.RandomState(seed)
    y = rng.choice(CLASSES, n, p=[0.2, 0.3, 0.5])
    meta = pd.DataFrame({
        "sex": rng.choice(["female", "male"], n),
        "age": rng.choice([20, 40, 50, 65, 80, np.nan], n),
        "localization": rng.choice(["back", "face", "acral"], n, p=[0.6, 0.39, 0.01]),
    })  # fmt: skip
    proba = np.full((n, 3), 0.1)
    proba[np.arange(n), np.searchsorted(CLASSES, y)] = 0.8
    # the model misses every melanoma of men
    missed = (y == "mel") & (meta["sex"] == "male").to_numpy()
    proba[missed] = [0.1, 0.2, 0.7]
    return y, proba, meta, np.arange(n) // 2


def test_subgroup_report_flags_a_group_whose_sensitivity_is_below_the_overall_interval():
    y, proba, meta, groups = _subgroup_data()
    report = subgroup_report(y, proba, classes=CLASSES, groups=groups, metadata=meta,
                             n_resamples=100)  # fmt: skip
    assert report.index[0] == ("all", "all")
    assert report.loc[("sex", "male"), "sensitivity"] == 0.0
    assert report.loc[("sex", "female"), "sensitivity"] == 1.0
    assert report["flagged"].tolist().count(True) == 1 and report.loc[("sex", "male"), "flagged"]
    overall = report.loc[("all", "all")]
    assert overall["sensitivity_low"] <= overall["sensitivity"] <= overall["sensitivity_high"]
    ages = report.loc["age"].index.tolist()
    assert ages == ["<30", "30-44", "45-59", "60-74", "75+"]  # in order, missing ages dropped
    assert report.loc["age", "n_images"].sum() == meta["age"].notna().sum()
    acral = report.loc[("localization", "acral")]  # 1 % of the images: too few lesions
    assert acral["n_lesions"] < 10 and np.isnan(acral["sensitivity"]) and not acral["flagged"]


def test_subgroup_report_checks_its_rows_and_skips_absent_columns():
    y, proba, meta, groups = _subgroup_data(n=100)
    report = subgroup_report(y, proba, classes=CLASSES, groups=groups, metadata=meta[["sex"]],
                             n_resamples=20)  # fmt: skip
    assert set(report.index.get_level_values(0)) == {"all", "sex"}
    with pytest.raises(ValueError, match="one row per image"):
        subgroup_report(y[:50], proba[:50], classes=CLASSES, groups=groups[:50], metadata=meta)


def test_age_bands_are_named_and_missing_ages_stay_missing():
    assert age_band([5, 30, 74.9, 75, None], edges=(30, 75)).tolist() == [
        "<30", "30-74", "30-74", "75+", np.nan]  # fmt: skip


def test_the_figures_draw_and_save(tmp_path):
    y, proba, meta, groups = _subgroup_data(n=200)
    report = subgroup_report(y, proba, classes=CLASSES, groups=groups, metadata=meta,
                             n_resamples=20)  # fmt: skip
    fig = plot_subgroup_report(report, path=tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 0
    assert len(fig.axes[0].get_yticklabels()) == len(report)
    sets = proba > 0.15
    plot_prediction_sets(y, sets, classes=CLASSES, coverage=0.9, path=tmp_path / "sets.png")
    curve = referral_curve(y, {0.9: sets}, classes=CLASSES)
    plot_referral_curve(curve, path=tmp_path / "referral.png")
    assert (tmp_path / "sets.png").exists() and (tmp_path / "referral.png").exists()
