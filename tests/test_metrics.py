"""skinfuse.metrics against hand-computed cases, scikit-learn and the ISIC 2024 formula."""

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from skinfuse.metrics import (
    bootstrap_interval,
    clinical_report,
    clinical_summary,
    expected_calibration_error,
    operating_point,
    partial_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)


def _isic2024_pauc(y_true, y_score, min_tpr=0.8):
    """The ISIC 2024 challenge's scoring code (labels 1 = malignant), transcribed."""
    v_gt = np.abs(np.asarray(y_true) - 1)
    v_pred = -1.0 * np.asarray(y_score)
    max_fpr = abs(1 - min_tpr)
    scaled = roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
    return 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5)


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.2
    score = rng.normal(size=400) + 1.2 * y
    return np.where(y, "mel", "nv"), score, y.astype(int)


def test_partial_auc_hand_cases():
    y = ["mel", "mel", "nv", "nv"]
    assert partial_auc(y, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.2)  # perfect ranking
    assert partial_auc(y, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.02)  # the diagonal
    assert partial_auc(y, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)  # inverted
    assert partial_auc(y, [0.9, 0.8, 0.2, 0.1], min_tpr=0.0) == pytest.approx(1.0)


def test_partial_auc_is_the_isic_2024_metric(scored):
    labels, score, y01 = scored
    for min_tpr in (0.8, 0.5, 0.9):
        ours = partial_auc(labels, score, min_tpr=min_tpr)
        assert ours == pytest.approx(_isic2024_pauc(y01, score, min_tpr), abs=1e-12)
    assert partial_auc(labels, score, min_tpr=0.0) == pytest.approx(roc_auc_score(y01, score))


def test_operating_points_match_roc_curve(scored):
    labels, score, y01 = scored
    fpr, tpr, _ = roc_curve(y01, score, drop_intermediate=False)
    for target in (0.8, 0.9):
        expected = tpr[fpr <= 1 - target].max()
        assert sensitivity_at_specificity(labels, score, target) == pytest.approx(expected)
    expected = (1 - fpr[tpr >= 0.82]).max()
    assert specificity_at_sensitivity(labels, score, 0.82) == pytest.approx(expected)
    point = operating_point(labels, score, sensitivity=0.82)
    called = score >= point["threshold"]
    assert called[y01 == 1].mean() == pytest.approx(point["sensitivity"])
    assert (~called[y01 == 0]).mean() == pytest.approx(point["specificity"])
    assert point["sensitivity"] >= 0.82


def test_operating_point_errors():
    with pytest.raises(ValueError, match="exactly one"):
        operating_point(["mel", "nv"], [0.1, 0.2])
    with pytest.raises(ValueError, match="pos_label='mel'"):
        operating_point(["bcc", "nv"], [0.1, 0.2], sensitivity=0.8)
    with pytest.raises(ValueError, match="proba\\[:, k\\]"):
        operating_point(["mel", "nv"], [[0.1, 0.9], [0.2, 0.8]], sensitivity=0.8)


def test_expected_calibration_error_hand_cases():
    classes = ["a", "b"]
    # perfectly calibrated: 80 % confident, right 4 times out of 5
    proba = [[0.8, 0.2]] * 5
    assert expected_calibration_error(list("aaaab"), proba, classes=classes) == pytest.approx(0)
    # always sure, right half the time: error 0.5
    proba = [[1.0, 0.0]] * 4
    assert expected_calibration_error(list("aabb"), proba, classes=classes) == pytest.approx(0.5)
    # class-wise: class a: conf 1.0 vs freq .5 (0.5); class b: conf 0 vs .5 (0.5)
    ece = expected_calibration_error(list("aabb"), proba, classes=classes, kind="classwise")
    assert ece == pytest.approx(0.5)


def test_clinical_report_matches_scikit_learn(scored):
    rng = np.random.default_rng(1)
    classes = np.array(["bcc", "mel", "nv"])
    y = rng.choice(classes, 300, p=[0.2, 0.2, 0.6])
    proba = rng.dirichlet([1, 1, 1], 300) + 0.5 * (y[:, None] == classes)
    proba /= proba.sum(axis=1, keepdims=True)
    report = clinical_report(y, proba, classes=classes)
    y_pred = classes[proba.argmax(axis=1)]
    assert list(report.index) == ["bcc", "mel", "nv", "macro avg"]
    assert report.attrs["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, y_pred))
    assert report.loc["macro avg", "recall"] == pytest.approx(report.attrs["balanced_accuracy"])
    assert report.attrs["macro_f1"] == pytest.approx(f1_score(y, y_pred, average="macro"))
    assert report.loc["macro avg", "auc"] == pytest.approx(
        roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    )
    assert report.loc["mel", "support"] == (y == "mel").sum()


def test_a_class_absent_from_the_data_is_marked_and_left_out_of_the_means():
    # the model knows bcc, mel, nv; the data (another source) has no bcc.
    # predictions: mel, bcc (an error: the case is nv), nv, nv, mel (an error: nv)
    classes = ["bcc", "mel", "nv"]
    y = np.array(["mel", "nv", "nv", "nv", "nv"])
    proba = np.array([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7], [0.2, 0.2, 0.6],
                      [0.1, 0.5, 0.4]])  # fmt: skip
    report = clinical_report(y, proba, classes=classes)
    assert report.attrs["classes_absent"] == ["bcc"]
    # bcc: support 0, recall/F1/AUC undefined, precision 0 (its one prediction is wrong)
    bcc = report.loc["bcc"]
    assert bcc["support"] == 0 and bcc["precision"] == 0
    assert np.isnan(bcc["recall"]) and np.isnan(bcc["f1"]) and np.isnan(bcc["auc"])
    # mel: P 1/2, R 1, F1 2/3; nv: P 1, R 2/4, F1 2/3; means over mel and nv only
    assert report.loc["mel", ["precision", "recall", "f1"]].tolist() == pytest.approx(
        [0.5, 1, 2 / 3]
    )
    assert report.loc["nv", ["precision", "recall", "f1"]].tolist() == pytest.approx(
        [1, 0.5, 2 / 3]
    )
    assert report.loc["macro avg", ["precision", "recall", "f1"]].tolist() == pytest.approx(
        [0.75, 0.75, 2 / 3]
    )
    assert report.loc["macro avg", "support"] == 5
    assert report.attrs["balanced_accuracy"] == pytest.approx(0.75)
    assert report.attrs["macro_f1"] == pytest.approx(2 / 3)
    summary = clinical_summary(y, proba, classes=classes)
    assert summary["balanced_accuracy"] == pytest.approx(0.75)
    assert summary["macro_f1"] == pytest.approx(2 / 3)
    assert summary["accuracy"] == pytest.approx(0.6)
    # an absent class the model never predicts: precision undefined too
    never = clinical_report(y[[0, 2, 3]], proba[[0, 2, 3]], classes=classes)
    assert never.loc["bcc"].isna()[["precision", "recall", "f1", "auc"]].all()
    assert never.attrs["balanced_accuracy"] == 1.0 and never.attrs["macro_f1"] == 1.0
    # every class present: nothing marked
    full = clinical_report(["bcc", "mel", "nv"], np.eye(3), classes=classes)
    assert full.attrs["classes_absent"] == [] and not full.isna().any().any()


def test_clinical_summary_hand_case():
    # mel scores 0.9 and 0.3; nv 0.4, 0.2, 0.1: predictions mel, nv, nv, nv, nv
    y = ["mel", "nv", "mel", "nv", "nv"]
    proba = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]]
    summary = clinical_summary(y, proba, classes=["mel", "nv"])
    assert summary == pytest.approx(
        {
            "balanced_accuracy": 0.75,  # mel recall 1/2, nv recall 1
            "accuracy": 0.8,
            "macro_f1": (2 / 3 + 6 / 7) / 2,  # mel: P 1, R 1/2; nv: P 3/4, R 1
            # top-label confidences 0.9 | 0.6, 0.7, 0.8, 0.9 in bins of 1/15: |1 - 0.9| +
            # |1 - 0.6| + |0 - 0.7| + |1 - 0.8| + |1 - 0.9|, over 5 (0.9's share a bin)
            "ece": (0.1 + 0.4 + 0.7 + 0.2 + 0.1) / 5,
            "sensitivity_at_80_specificity": 0.5,  # threshold 0.9: spec 1
            "sensitivity_at_90_specificity": 0.5,
            "specificity_at_82_sensitivity": 2 / 3,  # threshold 0.3: 0.4 called mel
            "partial_auc_above_80_sensitivity": partial_auc(y, [0.9, 0.4, 0.3, 0.2, 0.1]),
        }
    )
    assert list(summary) == ["balanced_accuracy", "accuracy", "macro_f1", "ece",
                             "sensitivity_at_80_specificity", "sensitivity_at_90_specificity",
                             "specificity_at_82_sensitivity",
                             "partial_auc_above_80_sensitivity"]  # fmt: skip


def test_clinical_summary_is_the_metrics_it_names():
    rng = np.random.default_rng(2)
    classes = np.array(["bcc", "mel", "nv"])
    y = rng.choice(classes, 200, p=[0.2, 0.2, 0.6])
    proba = rng.dirichlet([1, 1, 1], 200) + 0.4 * (y[:, None] == classes)
    proba /= proba.sum(axis=1, keepdims=True)
    groups = rng.integers(0, 120, 200)
    mel = proba[:, 1]
    summary = clinical_summary(
        y, proba, classes=classes, sensitivities=(0.82, 0.95), specificities=(0.9,),
        min_tpr=0.5,
    )  # fmt: skip
    report = clinical_report(y, proba, classes=classes)
    assert summary["balanced_accuracy"] == report.attrs["balanced_accuracy"]
    assert summary["macro_f1"] == pytest.approx(report.attrs["macro_f1"])
    assert summary["ece"] == expected_calibration_error(y, proba, classes=classes)
    assert summary["sensitivity_at_90_specificity"] == sensitivity_at_specificity(y, mel, 0.9)
    assert summary["specificity_at_95_sensitivity"] == specificity_at_sensitivity(y, mel, 0.95)
    assert summary["partial_auc_above_50_sensitivity"] == partial_auc(y, mel, min_tpr=0.5)
    assert "sensitivity_at_80_specificity" not in summary
    # with groups: each metric's lesion-grouped interval, the same resamples as by hand
    names = ["ece", "specificity_at_82_sensitivity"]
    intervals = clinical_summary(y, proba, classes=classes, groups=groups, metrics=names,
                                 n_resamples=50, random_state=4)  # fmt: skip
    assert list(intervals) == names
    expected = bootstrap_interval(lambda t, p: specificity_at_sensitivity(t, p[:, 1], 0.82), y,
                                  proba, groups=groups, n_resamples=50, random_state=4)  # fmt: skip
    assert intervals["specificity_at_82_sensitivity"] == expected
    assert intervals["ece"].estimate == summary["ece"]
    # no melanoma in the labels (or in the classes): the operating points are left out
    no_mel = clinical_summary(y[y != "mel"], proba[y != "mel"], classes=classes)
    assert list(no_mel) == ["balanced_accuracy", "accuracy", "macro_f1", "ece"]
    assert list(clinical_summary(y, proba, classes=classes, pos_label="akiec")) == list(no_mel)
    with pytest.raises(ValueError, match="unknown metrics \\['auc'\\]"):
        clinical_summary(y, proba, classes=classes, metrics=["auc"])


def test_bootstrap_resamples_lesions_not_images():
    from sklearn.metrics import accuracy_score

    # 10 lesions of 20 images each: each lesion entirely right or wrong
    groups = np.repeat(np.arange(10), 20)
    y = np.zeros(200, dtype=int)
    pred = np.where(groups < 7, 0, 1)
    by_lesion = bootstrap_interval(accuracy_score, y, pred, groups=groups, n_resamples=500)
    by_image = bootstrap_interval(accuracy_score, y, pred, groups=np.arange(200), n_resamples=500)
    assert by_lesion.estimate == pytest.approx(0.7)
    assert by_lesion.low <= 0.7 <= by_lesion.high
    # images of a lesion move together: the honest interval is much wider
    assert (by_lesion.high - by_lesion.low) > 2.5 * (by_image.high - by_image.low)
    assert by_lesion.n_resamples == 500 and "0.700 [" in str(by_lesion)
    # the same seed gives the same interval
    again = bootstrap_interval(accuracy_score, y, pred, groups=groups, n_resamples=500)
    assert again == by_lesion


def test_bootstrap_skips_resamples_where_the_metric_is_undefined():
    y = np.array(["mel"] + ["nv"] * 9)
    score = np.linspace(1, 0, 10)
    iv = bootstrap_interval(
        lambda a, b: partial_auc(a, b), y, score, groups=np.arange(10), n_resamples=200
    )
    assert iv.n_resamples < 200  # resamples without the melanoma were skipped
    assert iv.estimate == pytest.approx(0.2)


def test_plots_draw_and_save(tmp_path, scored):
    from skinfuse.metrics import plot_operating_curve, plot_reliability_diagram

    labels, score, _ = scored
    proba = np.c_[1 / (1 + np.exp(score)), 1 - 1 / (1 + np.exp(score))]
    classes = np.array(["nv", "mel"])
    fig = plot_reliability_diagram(
        labels, {"raw": proba, "flat": np.full_like(proba, 0.5)}, classes=classes,
        path=tmp_path / "rel.png",
    )  # fmt: skip
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ece = expected_calibration_error(labels, proba, classes=classes)  # its default bins
    assert f"raw (ECE {ece:.3f})" in legend
    assert (tmp_path / "rel.png").stat().st_size > 1000
    fig = plot_operating_curve(labels, {"model": score}, path=tmp_path / "op.png")
    point = operating_point(labels, score, sensitivity=0.82)
    xs, ys = fig.axes[0].lines[1].get_data()  # the marked operating point
    assert (xs[0], ys[0]) == (point["specificity"], point["sensitivity"])
    assert (tmp_path / "op.png").stat().st_size > 1000
    # a benchmark's long row name is broken into lines, not cut off at the figure's edge
    long = "partially fine-tuned CNN (last 2 stages) + metadata (FusionNet) [temperature]"
    fig = plot_reliability_diagram(labels, {long: proba}, classes=classes, title=long)
    title, label = fig.axes[0].get_title(), fig.axes[0].get_legend().get_texts()[1].get_text()
    for text in (title, label):
        assert "\n" in text and max(map(len, text.splitlines())) <= 52
    assert title.replace("\n", " ") == long
    assert label.replace("\n", " ").startswith(f"{long} (ECE ")


@pytest.fixture(scope="module")
def lesions_frame(tmp_path_factory):
    from skinfuse.datasets import make_synthetic_lesions

    return make_synthetic_lesions(
        240, image_size=32, data_dir=tmp_path_factory.mktemp("les"), random_state=0
    )


def _model(C=1.0):
    from sklearn.linear_model import LogisticRegression

    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.pipeline import make_fusion_pipeline

    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32)
    head = LogisticRegression(C=C, max_iter=5000)
    return make_fusion_pipeline(encoder, classifier=head, sampler=None, random_state=0)


def test_temperature_scaling_on_lesion_grouped_folds(lesions_frame):
    """The documented recipe: CalibratedClassifierCV on grouped inner splits keeps the
    predictions (temperature scaling) and lowers the calibration error of an overconfident
    (weakly regularised) model on lesions it never saw."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedGroupKFold

    X, y, groups = lesions_frame.data, np.asarray(lesions_frame.target), lesions_frame.groups
    before, after = [], []
    outer = StratifiedGroupKFold(4, shuffle=True, random_state=0)
    for train, test in outer.split(X, y, groups):
        inner = StratifiedGroupKFold(3, shuffle=True, random_state=0)
        splits = list(inner.split(X.iloc[train], y[train], groups[train]))
        assert all(  # no lesion on both sides of an inner split
            not set(groups[train][a]) & set(groups[train][b]) for a, b in splits
        )
        calibrated = CalibratedClassifierCV(
            _model(C=100.0), method="temperature", cv=splits, ensemble=False
        ).fit(X.iloc[train], y[train])
        plain = _model(C=100.0).fit(X.iloc[train], y[train])
        X_test = X.iloc[test]
        np.testing.assert_array_equal(calibrated.predict(X_test), plain.predict(X_test))
        classes = plain.classes_
        before.append(
            expected_calibration_error(y[test], plain.predict_proba(X_test), classes=classes)
        )
        after.append(
            expected_calibration_error(y[test], calibrated.predict_proba(X_test), classes=classes)
        )
    assert np.mean(after) < 0.8 * np.mean(before)  # measured: 0.26 -> 0.16


def test_confusion_matrix_draws_and_saves(tmp_path):
    from matplotlib.figure import Figure

    from skinfuse.metrics import plot_confusion_matrix

    y_true = ["nv", "nv", "mel", "bcc", "mel"]
    y_pred = ["nv", "mel", "mel", "bcc", "nv"]
    fig = plot_confusion_matrix(y_true, y_pred, labels=["bcc", "mel", "nv"],
                                normalize="true", path=tmp_path / "cm.png")  # fmt: skip
    assert isinstance(fig, Figure) and (tmp_path / "cm.png").stat().st_size > 1000
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.50" in texts and "1.00" in texts
    labels = dict(y_true=["a", "b"], y_pred=["a", "a"])
    with pytest.raises(ValueError, match="'normalize' parameter of plot_confusion_matrix"):
        plot_confusion_matrix(**labels, normalize="rows")
    with pytest.raises(ValueError, match="'cmap' parameter of plot_confusion_matrix"):
        plot_confusion_matrix(**labels, cmap=3)


def test_triage_classifier_old_name_warns_and_gives_the_same_result():
    """skinfuse.metrics.triage_classifier moved to skinfuse.imbalance.fit_triage_classifier."""
    from sklearn.linear_model import LogisticRegression

    import skinfuse.metrics
    from skinfuse.imbalance import fit_triage_classifier

    assert "triage_classifier" not in skinfuse.metrics.__all__
    with pytest.warns(FutureWarning, match="skinfuse.imbalance.fit_triage_classifier"):
        from skinfuse.metrics import triage_classifier
    rng = np.random.default_rng(0)
    lesion = np.repeat(np.arange(60), 2)
    y = np.where(rng.random(60) < 0.3, "mel", "nv")[lesion]
    X = rng.normal(size=(120, 2)) + (y == "mel")[:, None]
    kwargs = dict(groups=lesion, sensitivity=0.8, n_splits=3, random_state=1)
    old, old_point = triage_classifier(LogisticRegression(), X, y, **kwargs)
    new, new_point = fit_triage_classifier(LogisticRegression(), X, y, **kwargs)
    assert old_point == new_point
    np.testing.assert_array_equal(old.predict_proba(X), new.predict_proba(X))
    np.testing.assert_array_equal(old.predict(X), new.predict(X))
    with pytest.raises(AttributeError, match="no attribute 'triage'"):
        skinfuse.metrics.triage  # noqa: B018
