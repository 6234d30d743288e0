"""``skinfuse train --coverage / --no-calibration``, ``predict --coverage`` and
``evaluate``'s subgroup report, on a tiny synthetic folder in HAM10000 layout."""

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

import skinfuse
from skinfuse._cli import main
from skinfuse.calibration import TemperatureCalibratedClassifier
from skinfuse.conformal import PredictionSets
from skinfuse.datasets import make_synthetic_lesions

pytest.importorskip("mapie")

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A flat HAM10000 folder (metadata.csv + images/) of 120 synthetic images."""
    root = tmp_path_factory.mktemp("ham")
    lesions = make_synthetic_lesions(120, image_size=24, random_state=1,
                                     data_dir=root / "generated")  # fmt: skip
    (root / "images").mkdir()
    frame = lesions.frame.copy()
    for image_id, path in zip(frame["image_id"], frame["image_path"]):
        shutil.copy(path, root / "images" / f"{image_id}.png")
    frame[COLUMNS].to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="module")
def sets_file(ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "sets.skinfuse"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "--coverage",
            "0.9", "--quiet"]  # fmt: skip
    assert main(args) == 0
    return out


def _manifest(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def test_train_coverage_stores_calibrated_sets_and_the_file_says_so(sets_file):
    model = skinfuse.load(sets_file)
    assert isinstance(model, PredictionSets) and model.coverage == 0.9
    assert isinstance(model.estimator_, TemperatureCalibratedClassifier)
    assert len(model.scores_) == 120  # every training image, out of fold
    manifest = _manifest(sets_file)
    assert manifest["calibration"]["method"] == "temperature"
    assert manifest["calibration"]["temperature"] == pytest.approx(model.estimator_.temperature_)
    assert manifest["prediction_sets"]["coverage"] == 0.9
    assert manifest["prediction_sets"]["class_conditional"] is True


def test_predict_coverage_writes_each_images_set_and_referral(sets_file, ham, tmp_path):
    out = tmp_path / "pred.csv"
    args = ["predict", str(sets_file), "--data", str(ham), "--out", str(out), "--coverage",
            "0.9", "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = pd.read_csv(out, keep_default_na=False)
    model = skinfuse.load(sets_file)
    classes = list(model.classes_)
    assert {"prediction_set", "set_size", "refer"} <= set(table.columns)
    proba = table[[f"proba_{c}" for c in classes]].to_numpy()
    sets = model.sets_from_proba(proba)
    expected = ["|".join(np.asarray(classes)[row]) for row in sets]
    assert table["prediction_set"].tolist() == expected
    assert (table["set_size"] == sets.sum(axis=1)).all()
    mel = sets[:, classes.index("mel")]
    assert (table["refer"] == (mel | (sets.sum(axis=1) != 1))).all()
    # the true class is in the set for most images (training images: a sanity check only)
    truth = pd.read_csv(ham / "metadata.csv").set_index("image_id").loc[table["image_id"], "dx"]
    held = [t in s.split("|") for t, s in zip(truth, table["prediction_set"])]
    assert np.mean(held) >= 0.8


def test_predict_coverage_without_sets_in_the_model_says_how(ham, tmp_path, capsys):
    out = tmp_path / "bare.skinfuse"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out),
            "--no-calibration", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert _manifest(out)["calibration"] is None
    assert not isinstance(skinfuse.load(out), TemperatureCalibratedClassifier)
    args = ["predict", str(out), "--data", str(ham), "--out", str(tmp_path / "p.csv"),
            "--coverage", "0.9", "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "skinfuse train ... --coverage 0.9" in err and len(err.strip().splitlines()) == 1


def test_coverage_flags_are_checked(ham, tmp_path, capsys):
    base = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(tmp_path / "m")]
    with pytest.raises(SystemExit):
        main([*base, "--coverage", "1.5"])
    assert "must be between 0 and 1" in capsys.readouterr().err
    assert main([*base, "--coverage", "0.9", "--no-calibration", "--quiet"]) == 2
    assert "drop --no-calibration" in capsys.readouterr().err


def test_evaluate_prints_the_subgroup_report_and_the_sets(sets_file, ham, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", str(sets_file), "--data", str(ham), "--out", str(out),
            "--n-resamples", "20", "--quiet"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "by patient group" in printed and "| sex: female |" in printed
    assert "| age: 30-44 |" in printed or "| age: 45-59 |" in printed
    assert "prediction sets at 0.9 coverage (class-conditional)" in printed
    report = pd.read_csv(out / "subgroups.csv")
    assert report.iloc[0][["attribute", "group"]].tolist() == ["all", "all"]
    assert (out / "subgroups.png").exists() and (out / "prediction_sets.png").exists()
    summary = json.loads((out / "prediction_sets.json").read_text())
    assert 0 <= summary["coverage"] <= 1 and summary["n_images"] == 120
    assert main([*args, "--no-subgroups"]) == 0
    assert "by patient group" not in capsys.readouterr().out
