"""``skinfuse info MODEL``: what a model file holds, read without building anything."""

import copy
import json
import shutil
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import skinfuse
from skinfuse._cli import main
from skinfuse.datasets import make_synthetic_lesions


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    root = tmp_path_factory.mktemp("ham")
    lesions = make_synthetic_lesions(30, image_size=16, random_state=2, data_dir=root / "gen")
    (root / "images").mkdir()
    for image_id, path in zip(lesions.frame["image_id"], lesions.frame["image_path"]):
        shutil.copy(path, root / "images" / f"{image_id}.png")
    columns = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    lesions.frame[columns].to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="module")
def model_file(ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny.skinfuse"
    # 30 lesions of 7 classes: too few for the calibration's inner folds inside --cv 2
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "--cv", "2",
            "--no-calibration"]  # fmt: skip
    assert main([*args, "-q"]) == 0
    return out


@pytest.fixture
def nothing_is_loaded(monkeypatch):
    """Fail the test if anything in the file is built (skops) or the model is loaded."""

    def fail(*args, **kwargs):
        raise AssertionError("info built an object from the file")

    monkeypatch.setattr(sio, "loads", fail)
    monkeypatch.setattr(sio, "load", fail)
    monkeypatch.setattr(skinfuse, "load", fail)


def test_info_prints_what_the_file_holds(model_file, capsys, nothing_is_loaded):
    assert main(["info", str(model_file)]) == 0
    text = capsys.readouterr().out
    manifest = skinfuse._model_files.read_manifest(model_file)
    assert f"with skinfuse {skinfuse.__version__}" in text
    assert f"scikit-learn {manifest['versions']['scikit-learn']}" in text
    assert "model: imblearn.pipeline.Pipeline (recipe 'tiny')" in text
    assert "estimators:\n  Pipeline\n    ColumnTransformer\n      FrozenCNNEncoder\n" in text
    assert "    MLPClassifier" in text
    assert f"classes: {', '.join(manifest['classes'])}" in text
    assert "input columns: image_path, age, sex, localization" in text
    assert "image size: 32" in text and "network: FrozenCNNEncoder.embedder_" in text
    ba = manifest["metrics"]["balanced_accuracy"]
    assert f"  balanced_accuracy: {ba:.4g}" in text
    assert "cv: StratifiedGroupKFold(2) grouped by lesion_id" in text
    assert "training data:\n  Recorded when the model was saved: 30 images" in text
    assert "types: all trusted" in text and "checksums: ok" in text


def test_info_json_is_the_manifest_read_back(model_file, capsys, nothing_is_loaded):
    assert main(["info", str(model_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    manifest = skinfuse._model_files.read_manifest(model_file)
    assert info["recipe"] == "tiny" and info["model_class"] == manifest["model_class"]
    assert info["classes"] == manifest["classes"] and info["versions"] == manifest["versions"]
    assert info["training_data"] == manifest["training_data"]
    assert info["metrics"] == {k: v for k, v in manifest["metrics"].items() if k != "recipe"}
    assert info["estimators"]["class"] == "imblearn.pipeline.Pipeline"
    assert info["untrusted_types"] == [] and info["checksums_ok"] is True


def test_info_verbose_adds_every_version_and_the_networks_settings(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    short = capsys.readouterr().out
    assert main(["info", str(model_file), "-v"]) == 0
    long = capsys.readouterr().out
    assert "safetensors" not in short and "safetensors" in long
    assert "pooling=" not in short and "pooling=" in long


def test_info_names_untrusted_types_without_building_them(ham, tmp_path, capsys,
                                                          nothing_is_loaded):  # fmt: skip
    X = np.random.default_rng(0).uniform(size=(20, 2))
    model = make_pipeline(FunctionTransformer(copy.copy), LogisticRegression())
    model.fit(X, np.arange(20) % 2)
    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    assert untrusted == ["copy.copy"]  # a function off the trusted list
    path = skinfuse.save(model, tmp_path / "m.skinfuse", trusted=untrusted)
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "untrusted types (skinfuse.load refuses the file unless passed trusted=[...]" in text
    assert all(name in text for name in untrusted)
    assert "classes: 0, 1" in text and "training data: no summary stored" in text


def test_info_reports_a_damaged_file(model_file, tmp_path, capsys):
    damaged = tmp_path / "damaged.skinfuse"
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "weights.safetensors":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(item, data)
    assert main(["info", str(damaged)]) == 0
    assert "checksums: MISMATCH (damaged file)" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "not a zip"])
def test_info_on_a_missing_or_foreign_file_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "m.skinfuse"
    if content is not None:
        path.write_text(content)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("skinfuse info: error:")
    assert ("model file not found" if content is None else "not a skinfuse model file") in err
