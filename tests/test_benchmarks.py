"""The benchmark scripts' --smoke modes run (what CI checks of them)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


def _load(name):
    """The script as a module; its sibling modules import as when it is run."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_reproduce_smoke(tmp_path, capsys):
    payload = _load("reproduce").main(["--smoke", "--out", str(tmp_path)])
    rows = payload["results"]
    assert {"majority class", "metadata only", "frozen CNN + metadata", "CAE + metadata"} <= set(
        rows
    )
    assert "fine-tuned CNN + metadata (FusionNet)" in rows
    assert rows["majority class"]["balanced_accuracy"][0] == pytest.approx(1 / 7, abs=1e-6)
    assert rows["frozen CNN + metadata"]["accuracy"][0] > rows["majority class"]["accuracy"][0]
    assert (tmp_path / "confusion_best.png").stat().st_size > 1000
    assert json.loads((tmp_path / "reproduce_smoke.json").read_text())["protocol"].startswith(
        "StratifiedGroupKFold"
    )
    assert "| model | folds | accuracy" in capsys.readouterr().out


def test_grid_search_cost_smoke(tmp_path):
    result = _load("grid_search_cost").main(["--smoke", "--out", str(tmp_path)])
    assert result["n_fits"] == 31
    assert result["images_encoded_grid_search"] == result["images_encoded_single_fit"] == 150


def test_encode_throughput_smoke(tmp_path):
    result = _load("encode_throughput").main(["--smoke", "--out", str(tmp_path)])
    assert result["summary"]["cached_speedup"] > 10


def test_frozen_features_smoke(tmp_path):
    payload = _load("frozen_features").main(["--smoke", "--out", str(tmp_path)])
    results = payload["results"]
    assert results["efficientnet_lite0:64:multi"]["n_features"] == 3968
    for r in results.values():  # accuracy, balanced accuracy, weighted F1 per prior power
        assert len(r["0.0"]) == 3 and 0 < r["0.0"][0] <= 1
    assert (tmp_path / "frozen_features_smoke.json").exists()


def test_reproduce_folds_merge_and_time_budget(tmp_path):
    reproduce = _load("reproduce")
    base = ["--smoke", "--approaches", "majority", "metadata"]
    full = reproduce.main([*base, "--out", str(tmp_path / "full")])
    reproduce.main([*base, "--folds", "1", "--out", str(tmp_path / "a")])
    reproduce.main([*base, "--folds", "3", "2", "--out", str(tmp_path / "b")])
    merged = reproduce.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                             "--out", str(tmp_path / "merged")])  # fmt: skip
    for name, row in full["results"].items():
        got = merged["results"][name]
        assert [f["fold"] for f in got["folds"]] == [1, 2, 3]
        assert got["accuracy"] == pytest.approx(row["accuracy"])
        assert got["balanced_accuracy"] == pytest.approx(row["balanced_accuracy"])
    oof_full = np.load(tmp_path / "full" / "oof_proba.npz")
    oof_merged = np.load(tmp_path / "merged" / "oof_proba.npz")
    assert not np.isnan(oof_merged["proba"]).any()
    np.testing.assert_allclose(oof_merged["proba"], oof_full["proba"])
    assert merged["args"]["merged_from"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    # the clinical table (lesion-grouped intervals) is the full run's: the lesion ids are
    # saved with the out-of-fold probabilities
    np.testing.assert_array_equal(oof_merged["groups"], oof_full["groups"])
    assert set(merged["clinical"]) == set(full["clinical"]) == {"majority class", "metadata only"}
    for name, row in full["clinical"].items():
        for metric, interval in row.items():
            assert merged["clinical"][name][metric] == pytest.approx(interval), (name, metric)
    assert (tmp_path / "merged" / "clinical.md").read_text() == (
        tmp_path / "full" / "clinical.md"
    ).read_text()
    with pytest.raises(ValueError, match="fold 1 of 'majority class' is in two runs"):
        reproduce.main(["--merge", str(tmp_path / "a"), str(tmp_path / "full"),
                        "--out", str(tmp_path / "bad")])  # fmt: skip
    # a budget already spent starts no fold, and the table says why
    stopped = reproduce.main([*base, "--time-budget", "0", "--out", str(tmp_path / "cut")])
    assert stopped["results"] == {} and "stopped before fold 1/3" in stopped["stopped"]
    assert "time budget" in (tmp_path / "cut" / "table.md").read_text()


def test_finetune_class_weight_is_computed_by_the_network():
    """The network computes the weights from its own training labels (sqrt: the root of
    balanced, tests/_nn/test_partial.py), so a VotingClassifier's integer labels work too."""
    reproduce = _load("reproduce")
    args = reproduce.argparse.Namespace(finetune_class_weight="sqrt")
    assert reproduce.finetune_class_weight(args) == "sqrt"
    args.finetune_class_weight = "none"
    assert reproduce.finetune_class_weight(args) is None


def test_tta1_row_only_for_a_network_with_its_own_tta():
    """A fitted pipeline predicts with fitted clones that set_params does not reach: no
    [tta=1] row for it (it would silently repeat the tta=4 row)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.pipeline import make_fusion_pipeline

    reproduce = _load("reproduce")
    pipeline = make_fusion_pipeline(FrozenCNNEncoder("tiny_cnn", weights=None, tta=4))
    assert reproduce.no_tta("frozen", pipeline) == {}

    class Net(ClassifierMixin, BaseEstimator):
        def __init__(self, tta=4):
            self.tta = tta

        def predict_proba(self, X):
            return np.full((len(X), 2), self.tta, dtype=float)

    net = Net()
    net.classes_ = np.array([0, 1])
    ((name, (predict_proba, classes)),) = reproduce.no_tta("net", net).items()
    assert name == "net [tta=1]" and list(classes) == [0, 1]
    assert (predict_proba(np.zeros(3)) == 1).all() and net.tta == 4
    assert reproduce.no_tta("net", Net(tta=1)) == {}


def test_grouped_validation_routes_the_lesions_to_every_network(tmp_path, monkeypatch):
    """--grouped-validation: a seed ensemble's members and the calibrated inner fits all
    split their early-stopping images by lesion."""
    from sklearn.ensemble import VotingClassifier

    from skinfuse._nn import splits as training
    from skinfuse.datasets import make_synthetic_lesions
    from skinfuse.fusion import FusionNetClassifier

    seen = []

    def spy(n, y_idx, fraction, seed, groups=None):
        train, valid = real(n, y_idx, fraction, seed, groups)
        seen.append(groups is not None and not set(groups[train]) & set(groups[valid]))
        return train, valid

    real = training.validation_split
    monkeypatch.setattr(training, "validation_split", spy)
    lesions = make_synthetic_lesions(90, image_size=32, n_classes=2, random_state=0,
                                     data_dir=tmp_path)  # fmt: skip
    net = dict(backbone="tiny_cnn", weights=None, image_size=32, max_epochs=1,
               num_workers=0, validation_fraction=0.2)  # fmt: skip
    model = VotingClassifier(
        [(f"net{s}", FusionNetClassifier(**net, random_state=s)) for s in (0, 1)], voting="soft"
    )
    reproduce = _load("reproduce")
    X, y, groups = lesions.data, lesions.target.astype(str), lesions.groups
    fitted = reproduce.fit_row(model, X, y, groups, "temperature", route_groups=True)
    # 3 grouped inner calibration folds, then the final fit on all of X: 2 members each
    assert seen == [True] * 8
    assert set(fitted("ens")) == {"ens", "ens [temperature]"}
    seen.clear()
    reproduce.fit_row(FusionNetClassifier(**net), X, y, groups, "none")
    assert seen == [False]  # without the flag: the image-level split, as before


def test_train_throughput_smoke(tmp_path):
    result = _load("train_throughput").main(["--smoke", "--out", str(tmp_path)])
    rates = result["images_per_second"]
    assert len(rates) == 3 and all(r > 0 for r in rates.values())
    assert result["summary"]["store_vs_loop"] > 0
    assert (tmp_path / "train_throughput_smoke.json").exists()


def test_finetune_recipe_gives_the_recipes_network_settings():
    reproduce = _load("reproduce")
    args = reproduce.argparse.Namespace(
        finetune_recipe="gpu", cache_dir=None, device="cpu", num_workers=0, verbose=0
    )
    params = reproduce.recipe_params(args)
    assert params["backbone"] == "efficientnet_lite2" and params["image_size"] == 260
    assert params["warmup_epochs"] == 1 and params["tta"] == 4 and "random_state" not in params
    ensemble = reproduce.networks(params, [0, 1])
    assert [m.random_state for _, m in ensemble.estimators] == [0, 1]
    args.finetune_recipe = "gpu-ensemble"
    with pytest.raises(ValueError, match="not a single FusionNetClassifier"):
        reproduce.recipe_params(args)


def test_clinical_figures_joins_rows_of_several_runs(tmp_path, monkeypatch, capsys):
    """Rows of runs made apart (one split over two runs on disjoint folds) are drawn on the
    images every row covers, with the operating points of skinfuse.metrics."""
    from skinfuse.metrics import specificity_at_sensitivity

    monkeypatch.syspath_prepend(str(BENCH))  # the script imports late_fusion, as when run
    rng = np.random.default_rng(0)
    classes = np.array(["bcc", "mel", "nv"])
    y = rng.choice(classes, 60)
    good = np.where(y[:, None] == classes, 2.0, 0.0) + rng.random((60, 3))
    good /= good.sum(axis=1, keepdims=True)
    poor = rng.dirichlet(np.ones(3), 60)

    def save(folder, rows):
        folder.mkdir()
        np.savez_compressed(folder / "oof_proba.npz", classes=classes, y=y,
                            rows=np.array(list(rows)), proba=np.stack(list(rows.values())))  # fmt: skip

    half = np.where(np.arange(60)[:, None] < 30, good, np.nan)
    save(tmp_path / "a", {"frozen": poor, "net": half})
    save(tmp_path / "b", {"net": np.where(np.isnan(half), good, np.nan)})
    save(tmp_path / "c", {"cut short": np.where(np.arange(60)[:, None] < 20, poor, np.nan)})
    runs = [str(tmp_path / d) for d in "abc"]
    out = tmp_path / "tradeoff.png"
    scores = _load("clinical_figures").main(
        [*runs, "--rows", "frozen=frozen recipe", "net", "--out", str(out)]
    )
    assert list(scores) == ["frozen recipe", "net"]
    np.testing.assert_allclose(scores["net"], good[:, 1])  # joined over runs a and b
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "60 images covered" in printed
    spec82 = specificity_at_sensitivity(y, good[:, 1], 0.82)
    assert f"specificity_at_82_sensitivity {spec82:.3f}" in printed
    _load("clinical_figures").main([*runs, "--rows", "net", "cut short", "--out", str(out)])
    assert "20 images covered" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="holds no oof_proba.npz"):
        _load("clinical_figures").main([str(tmp_path), "--rows", "net", "--out", str(out)])
    with pytest.raises(SystemExit, match="no row 'absent'"):
        _load("clinical_figures").main([*runs, "--rows", "absent", "--out", str(out)])


def test_fingerprint_finds_a_changed_output(tmp_path, capsys):
    fingerprint = _load("fingerprint")
    args = ["--data", str(tmp_path / "none"), "--n", "12", "--only", "autoencoder"]
    assert fingerprint.main([*args, "--out", str(tmp_path / "before.json")]) == 0
    assert "synthetic lesions" in capsys.readouterr().out  # no data folder: said so
    assert fingerprint.main([*args, "--compare", str(tmp_path / "before.json")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("identical")  # deterministic
    before = json.loads((tmp_path / "before.json").read_text())
    before["autoencoder"]["transform"] = "0" * 16
    (tmp_path / "changed.json").write_text(json.dumps(before))
    assert fingerprint.main([*args, "--compare", str(tmp_path / "changed.json")]) == 1
    assert "autoencoder.transform: " + "0" * 16 in capsys.readouterr().out
    assert fingerprint.digest(np.zeros(3)) != fingerprint.digest(np.zeros(3, np.float32))


def test_external_smoke_scores_every_set_with_and_without_metadata(tmp_path):
    external = _load("external")
    results = external.main(
        ["--smoke", "--out", str(tmp_path), "--n-resamples", "20", "--image-only"]
    )
    assert list(results["recipes"]) == ["tiny", "tiny-image-only"]
    alone = results["recipes"]["tiny-image-only"]["held-out lesions"]
    sets_keys = ("predict_s", "sets", "subgroups")
    assert {k: v for k, v in alone["as given"].items() if k not in sets_keys} == {
        k: v for k, v in alone["no metadata"].items() if k not in sets_keys
    }
    # calibrated recipes: prediction sets, referral and the held-out subgroup report
    held = results["recipes"]["tiny"]["held-out lesions"]["as given"]
    at_90 = held["sets"]["levels"]["0.9"]
    assert 0 <= at_90["coverage"] <= 1 and at_90["mean_set_size"] >= 1
    assert set(at_90["coverage_per_class"]) == set(held["classes_present"])
    assert 0 <= at_90["referral_rate"] <= 1 and held["sets"]["temperature"] > 0
    assert held["subgroups"]["rows"][0]["attribute"] == "all"
    for name in (
        "subgroups_tiny.md",
        "subgroups_tiny.png",
        "prediction_sets_tiny_held-out.png",
        "referral_tiny_synthetic-external.png",
    ):
        assert (tmp_path / name).exists(), name
    rows = results["recipes"]["tiny"]
    assert set(rows) == {"held-out lesions", "synthetic-external"}
    for test, variants in rows.items():
        assert list(variants)[:2] == ["as given", "no metadata"]
        given = variants["as given"]
        auc = given["melanoma_auc"]
        assert 0 <= auc["low"] <= auc["estimate"] <= auc["high"] <= 1
        assert set(given["recall"]) == set(given["classes_present"])
        assert given["n_images"] == len(np.load(tmp_path / f"proba_tiny_{test.split()[0]}.npz",
                                                allow_pickle=True)["y"])  # fmt: skip
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["recipes"]["tiny"]["held-out lesions"]["as given"]["balanced_accuracy"][
        "estimate"
    ] == pytest.approx(rows["held-out lesions"]["as given"]["balanced_accuracy"]["estimate"])
    table = (tmp_path / "table.md").read_text()
    assert "| synthetic-external | no metadata |" in table and "Recall per class" in table
    assert "prediction sets (class-conditional) and the referral rule" in table
    assert (tmp_path / "tiny.skinfuse").exists()


def test_onnx_latency_smoke(tmp_path):
    pytest.importorskip("onnxruntime")
    payload = _load("onnx_latency").main(["--smoke", "--out", str(tmp_path)])
    assert len(payload["results"]) == 4
    for row in payload["results"].values():
        assert row["max_abs_difference"] < 1e-4 and row["torch"] > 0 and row["onnxruntime"] > 0
