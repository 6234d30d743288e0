"""Model cards the Hugging Face Hub reads, and hf:// model files (no network: the download
is replaced by a local file)."""

import numpy as np
import pytest
import yaml

import skinfuse
from skinfuse.metrics import bootstrap_interval
from skinfuse.pipeline import make_fusion_pipeline


@pytest.fixture(scope="module")
def model(lesions):
    return make_fusion_pipeline(None, sampler=None, classifier="logreg").fit(
        lesions.data, lesions.target
    )


def _front_matter(text):
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def test_card_front_matter_metrics_equal_the_manifest(model, lesions, tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    y = lesions.target
    interval = bootstrap_interval(
        balanced_accuracy_score, y, model.predict(lesions.data), groups=lesions.groups,
        n_resamples=50,
    )  # fmt: skip
    metrics = {
        "balanced_accuracy": interval,
        "accuracy": np.float64(0.7),
        "accuracy_std": 0.05,
        "cv": "StratifiedGroupKFold(5) grouped by lesion_id",
        "recipe": "metadata",
    }
    path = skinfuse.save(
        model, tmp_path / "model.skinfuse", metrics=metrics,
        card={"license": "cc-by-nc-4.0", "datasets": ["org/ham10000"], "tags": ["ham10000"]},
    )  # fmt: skip
    meta, body = _front_matter((tmp_path / "model.md").read_text())
    manifest = skinfuse._model_files.read_manifest(path)
    assert meta["license"] == "cc-by-nc-4.0"
    assert meta["datasets"] == ["org/ham10000"]
    assert {"skinfuse", "not-a-medical-device", "ham10000"} <= set(meta["tags"])
    assert "Not a medical device" in meta["intended_use"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["name"] == metrics["cv"]
    by_type = {m["type"]: m for m in result["metrics"]}
    assert set(by_type) == {"balanced_accuracy", "accuracy"}  # strings and _std are not metrics
    stored = manifest["metrics"]["balanced_accuracy"]
    assert by_type["balanced_accuracy"]["value"] == stored["estimate"] == interval.estimate
    assert by_type["balanced_accuracy"]["args"]["low"] == stored["low"] == interval.low
    assert by_type["balanced_accuracy"]["args"]["high"] == stored["high"] == interval.high
    assert by_type["accuracy"]["value"] == manifest["metrics"]["accuracy"] == 0.7
    assert by_type["accuracy"]["args"]["std"] == manifest["metrics"]["accuracy_std"]
    assert "# Model card: Pipeline" in body and "not a medical device" in body


def test_card_true_defaults_and_hub_modelcard_reads_it(model, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    skinfuse.save(model, tmp_path / "model.skinfuse", card=True)
    card = huggingface_hub.ModelCard.load(tmp_path / "model.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["library_name"] == "skinfuse"
    assert "model-index" not in data  # no metrics given: nothing to claim


def test_card_options_are_checked(model, tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        skinfuse.save(model, tmp_path / "m.skinfuse", card={"licence": "mit"})
    with pytest.raises(TypeError, match="list of strings"):
        skinfuse.save(model, tmp_path / "m.skinfuse", card={"datasets": "org/ham10000"})


def test_load_from_the_hub_without_network(model, lesions, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    path = skinfuse.save(model, tmp_path / "model.skinfuse")
    calls = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = skinfuse.load("hf://org/skin-model@v1/models/model.skinfuse")
    assert calls == [("org/skin-model", "models/model.skinfuse", "v1")]
    np.testing.assert_array_equal(
        loaded.predict_proba(lesions.data), model.predict_proba(lesions.data)
    )
    skinfuse.load("hf://org/skin-model/model.skinfuse")
    assert calls[-1] == ("org/skin-model", "model.skinfuse", None)
    with pytest.raises(ValueError, match="hf://org/repo/file.skinfuse"):
        skinfuse.load("hf://org/model.skinfuse")
