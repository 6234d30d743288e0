"""skinfuse.save / skinfuse.load: model files that open without running code.

Every model kind is saved here and loaded in a fresh process (no embedding cache, no
class already imported), which must give identical predictions.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import VotingClassifier

import skinfuse
from skinfuse.encoders import (
    ConvAutoencoderEncoder,
    FineTunedCNNEncoder,
    FrozenCNNEncoder,
    clear_cache,
)
from skinfuse.fusion import FusionNetClassifier
from skinfuse.pipeline import make_fusion_pipeline

TINY = dict(weights=None, image_size=32)


def _models():
    """name -> (unfitted model, method compared after loading)."""
    cae = dict(image_size=32, channels=(8, 16), max_epochs=1, random_state=0)
    return {
        "metadata_only_rf_prior": (
            make_fusion_pipeline(None, sampler=None, classifier="rf", prior_correction=0.5,
                                 random_state=0).set_params(classifier__estimator__n_estimators=10),
            "predict_proba",
        ),
        "frozen_smote_mlp": (
            make_fusion_pipeline(FrozenCNNEncoder("tiny_cnn", **TINY), classifier="mlp",
                                 random_state=0),
            "predict_proba",
        ),
        "finetuned_logreg_prior": (
            make_fusion_pipeline(
                FineTunedCNNEncoder("tiny_cnn", max_epochs=1, random_state=0, **TINY),
                sampler=None, classifier="logreg", class_weight="balanced", prior_correction=0.5,
            ),
            "predict_proba",
        ),
        "autoencoder_image_only_rf": (
            make_fusion_pipeline(ConvAutoencoderEncoder(8, **cae), metadata=None, select_k=4,
                                 classifier="rf", random_state=0)
            .set_params(classifier__n_estimators=10),
            "predict_proba",
        ),
        "fusionnet": (FusionNetClassifier("tiny_cnn", max_epochs=1, random_state=0, **TINY),
                      "predict_proba"),
        "fusionnet_image_only": (
            FusionNetClassifier("tiny_cnn", metadata=None, max_epochs=1, validation_fraction=0,
                                random_state=0, **TINY),
            "predict_proba",
        ),
        "partial_seed_ensemble": (  # the 'partial-ensemble' recipe's shape
            VotingClassifier(
                [(f"seed{s}", FusionNetClassifier("tiny_cnn", trainable_blocks=1, max_epochs=1,
                                                  validation_fraction=0, random_state=s, **TINY))
                 for s in (0, 1)],
                voting="soft",
            ),
            "predict_proba",
        ),
        "frozen_alone": (FrozenCNNEncoder("tiny_cnn", pooling="avgmax", **TINY), "transform"),
        "finetuned_alone": (
            FineTunedCNNEncoder("tiny_cnn", max_epochs=1, random_state=0, **TINY),
            "predict_proba",
        ),
        "autoencoder_alone": (ConvAutoencoderEncoder(8, **cae), "transform"),
    }  # fmt: skip


MODELS = list(_models())

LOAD_ALL = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pandas as pd
    import skinfuse

    folder = sys.argv[1]
    X = pd.read_csv(f"{folder}/X.csv")
    for name, method in json.loads(open(f"{folder}/methods.json").read()).items():
        model = skinfuse.load(f"{folder}/{name}.skinfuse")
        columns = ["image_path"] if "alone" in name else list(X.columns)
        np.save(f"{folder}/{name}.loaded.npy", getattr(model, method)(X[columns]))
    """
)


@pytest.fixture(scope="module")
def saved(lesions, tmp_path_factory):
    """Every model kind fitted, predicted, saved; then loaded in one fresh process."""
    folder = tmp_path_factory.mktemp("model_files")
    X, y = lesions.data, lesions.target
    X.to_csv(folder / "X.csv", index=False)
    methods, identity = {}, {}
    for name, (model, method) in _models().items():
        Xm = X[["image_path"]] if "alone" in name else X
        model.fit(Xm, y)
        np.save(folder / f"{name}.expected.npy", getattr(model, method)(Xm))
        parts = _torch_attributes(model)
        skinfuse.save(model, folder / f"{name}.skinfuse", metrics={"balanced_accuracy": 0.5})
        identity[name] = parts == _torch_attributes(model)  # put back, the same objects
        methods[name] = method
    (folder / "methods.json").write_text(json.dumps(methods))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(skinfuse.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    subprocess.run([sys.executable, "-c", LOAD_ALL, str(folder)], check=True, env=env, timeout=120)
    return folder, identity


def _torch_attributes(model):
    from skinfuse._model_files import torch_estimators_in

    return [
        (id(est), attr, id(value))
        for est in torch_estimators_in(model)
        for attr, value in vars(est).items()
        if attr in ("net_", "embedder_", "history_")
    ]


@pytest.mark.parametrize("name", MODELS)
def test_fresh_process_predicts_the_same(saved, name):
    folder, identity = saved
    expected = np.load(folder / f"{name}.expected.npy")
    loaded = np.load(folder / f"{name}.loaded.npy")
    assert loaded.shape == expected.shape
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-6)
    assert identity[name], "save must put the model's own networks back"


def test_manifest_records_the_model(saved, lesions):
    folder, _ = saved
    with zipfile.ZipFile(folder / "fusionnet.skinfuse") as zf:
        assert sorted(zf.namelist()) == [
            "histories.json", "manifest.json", "model.skops", "weights.safetensors"
        ]  # fmt: skip
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format_version"] == 1
    assert manifest["skinfuse_version"] == skinfuse.__version__
    assert manifest["versions"]["torch"] and manifest["versions"]["scikit-learn"]
    assert manifest["model_class"] == "skinfuse.fusion.FusionNetClassifier"
    assert manifest["classes"] == sorted(set(lesions.target))
    assert manifest["feature_names_in"] == list(lesions.data.columns)
    assert manifest["image_size"] == 32
    assert manifest["metrics"] == {"balanced_accuracy": 0.5}
    [part] = manifest["torch_parts"]
    assert part["parts"]["net_"]["module_kwargs"]["backbone"] == "tiny_cnn"


def test_history_and_unfitted_models(lesions, tmp_path):
    X, y = lesions.data, lesions.target
    net = FusionNetClassifier("tiny_cnn", max_epochs=2, random_state=0, **TINY).fit(X, y)
    loaded = skinfuse.load(skinfuse.save(net, tmp_path / "net.skinfuse"))
    assert loaded.history_ is loaded.net_.history  # one history, as fitted
    assert loaded.history_[:, "train_loss"] == net.history_[:, "train_loss"]
    assert loaded.net_.module__weights is None and loaded.n_iter_ == 2

    unfitted = make_fusion_pipeline(FineTunedCNNEncoder("tiny_cnn", **TINY), classifier="rf")
    loaded = skinfuse.load(skinfuse.save(unfitted, tmp_path / "unfitted.skinfuse"))
    assert repr(loaded.get_params()) == repr(unfitted.get_params())


# -- what must not load ----------------------------------------------------------------------
class CodeOnLoad(ClassifierMixin, BaseEstimator):
    """A classifier whose unpickling runs code: it writes a file named in its state."""

    def __init__(self, marker=None):
        self.marker = marker

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))

    def predict(self, X):
        return self.classes_[np.zeros(len(X), dtype=int)]

    def __setstate__(self, state):
        Path(state["marker"]).write_text("code ran")
        self.__dict__.update(state)


def _metadata_model(lesions, **kwargs):
    return make_fusion_pipeline(None, sampler=None, classifier="logreg", **kwargs).fit(
        lesions.data, lesions.target
    )


def _rewrite(path, name, data):
    """Replace one member of the archive (as an attacker, or another version, would)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def test_untrusted_type_is_refused_at_save(lesions, tmp_path):
    model = make_fusion_pipeline(None, sampler=None, classifier=CodeOnLoad(str(tmp_path / "m")))
    model.fit(lesions.data, lesions.target)
    with pytest.raises(TypeError, match=r"not on the trusted list: \[.*CodeOnLoad"):
        skinfuse.save(model, tmp_path / "model.skinfuse")
    assert not (tmp_path / "model.skinfuse").exists()


def test_tampered_file_with_untrusted_type_is_refused_without_running_it(lesions, tmp_path):
    path = skinfuse.save(_metadata_model(lesions), tmp_path / "model.skinfuse")
    marker = tmp_path / "marker"
    evil = make_fusion_pipeline(None, sampler=None, classifier=CodeOnLoad(str(marker)))
    payload = sio.dumps(evil.fit(lesions.data, lesions.target))
    # the payload does run code when its type is trusted: skops builds it via __setstate__
    sio.loads(payload, trusted=sio.get_untrusted_types(data=payload))
    assert marker.read_text() == "code ran"
    marker.unlink()
    # a tamperer rewrites the payload and its checksum
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["sha256"]["model.skops"] = __import__("hashlib").sha256(payload).hexdigest()
    _rewrite(path, "model.skops", payload)
    _rewrite(path, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(TypeError, match=r"refusing to load .*not trusted: \[.*CodeOnLoad"):
        skinfuse.load(path)
    assert not marker.exists()


def test_damaged_payload_is_refused(lesions, tmp_path):
    path = skinfuse.save(_metadata_model(lesions), tmp_path / "model.skinfuse")
    with zipfile.ZipFile(path) as zf:
        payload = zf.read("model.skops")
    _rewrite(path, "model.skops", payload[:-10])
    with pytest.raises(ValueError, match="model.skops does not match its checksum"):
        skinfuse.load(path)


def test_a_pickle_is_not_opened(lesions, tmp_path):
    joblib.dump(_metadata_model(lesions), tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="not a skinfuse model file"):
        skinfuse.load(tmp_path / "model.joblib")


def test_custom_backbone_is_refused(lesions, tmp_path):
    from torch import nn

    custom = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    encoder = FrozenCNNEncoder(custom, **TINY).fit(lesions.data[["image_path"]][:4])
    for model in (encoder, make_fusion_pipeline(encoder, classifier="logreg")):
        with pytest.raises(TypeError, match="custom backbone .*named backbone.*joblib"):
            skinfuse.save(model, tmp_path / "never-written.skinfuse")
    assert isinstance(encoder.embedder_, nn.Module)  # left as it was
    assert not (tmp_path / "never-written.skinfuse").exists()


def test_torch_object_in_parameters_is_refused(tmp_path):
    import torch

    encoder = FineTunedCNNEncoder("tiny_cnn", optimizer=torch.optim.SGD, **TINY)
    with pytest.raises(TypeError, match=r"FineTunedCNNEncoder.optimizer: .*torch.optim.sgd.SGD"):
        skinfuse.save(encoder, tmp_path / "model.skinfuse")


# -- versions and devices ------------------------------------------------------------------------
def test_other_versions(lesions, tmp_path):
    model = _metadata_model(lesions)
    path = skinfuse.save(model, tmp_path / "model.skinfuse")
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))

    _rewrite(path, "manifest.json", json.dumps({**manifest, "skinfuse_version": "0.1.0"}).encode())
    with pytest.warns(UserWarning, match=rf"saved with skinfuse 0.1.0; this is skinfuse {skinfuse.__version__}"):  # fmt: skip
        loaded = skinfuse.load(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(lesions.data), model.predict_proba(lesions.data)
    )

    newer = {**manifest, "format_version": 2, "skinfuse_version": "9.0"}
    _rewrite(path, "manifest.json", json.dumps(newer).encode())
    with pytest.raises(ValueError, match=r"format version 2, written by skinfuse 9.0; .* reads format version 1"):  # fmt: skip
        skinfuse.load(path)


def test_gpu_fitted_model_loads_on_cpu(lesions, tmp_path, monkeypatch):
    import torch

    X, y = lesions.data, lesions.target
    net = FusionNetClassifier("tiny_cnn", max_epochs=1, random_state=0, **TINY).fit(X, y)
    pipe = make_fusion_pipeline(FrozenCNNEncoder("tiny_cnn", **TINY), classifier="logreg").fit(X, y)
    encoder = pipe.named_steps["features"].named_transformers_["image"]
    for model, est in ((net, net), (pipe, encoder)):
        expected = model.predict_proba(X)
        est.device_ = "cuda"  # as fitted on a GPU; the weights are kept on the CPU
        path = skinfuse.save(model, tmp_path / "model.skinfuse")
        assert est.device_ == "cuda"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        loaded = skinfuse.load(path)
        monkeypatch.undo()
        est_loaded = loaded if est is net else (
            loaded.named_steps["features"].named_transformers_["image"]
        )  # fmt: skip
        assert est_loaded.device_ == "cpu"
        clear_cache()
        np.testing.assert_allclose(loaded.predict_proba(X), expected, rtol=0, atol=1e-6)


# -- the model card ------------------------------------------------------------------------------
def test_model_card(lesions, tmp_path):
    skinfuse.save(
        _metadata_model(lesions), tmp_path / "model.skinfuse",
        metrics={"balanced_accuracy": np.float64(0.61234), "n_lesions": 120}, card=True,
    )  # fmt: skip
    card = (tmp_path / "model.md").read_text()
    assert "| balanced_accuracy | 0.6123 |" in card
    assert "| n_lesions | 120 |" in card
    assert "not a medical device" in card
    assert "lesion-grouped" in card
    assert "skinfuse.load" in card
    assert "Recorded when the model was saved" not in card  # no training_data given


def test_training_data_summary_in_manifest_and_card(lesions, tmp_path):
    from skinfuse._model_files import read_manifest
    from skinfuse.metrics import dataset_summary

    classes = sorted(set(lesions.target))
    summary = dataset_summary(lesions.data, lesions.target, classes=classes)
    path = skinfuse.save(_metadata_model(lesions), tmp_path / "model.skinfuse",
                         training_data=summary, card=True)  # fmt: skip
    assert read_manifest(path)["training_data"] == summary
    card = (tmp_path / "model.md").read_text()
    n = len(lesions.target)
    assert f"- Recorded when the model was saved: {n} images" in card
    first = 100 * np.mean(np.asarray(lesions.target) == classes[0])
    assert f"- Class mix: {classes[0]} {first:.1f} %, " in card
    assert "- Metadata missing: age " in card
    no_summary = skinfuse.save(_metadata_model(lesions), tmp_path / "old.skinfuse")
    assert read_manifest(no_summary)["training_data"] is None


def test_torch_placeholder_keeps_the_import_path_files_name_it_by():
    """Every model file names the placeholder of its torch parts by its import path (skops
    records types by path; load trusts it by that name): where the class is defined may
    change, the path written into files may not."""
    import skinfuse._model_files
    from skinfuse._model_files._format import _TorchPart, _trusted_types, _type_name

    assert _type_name(_TorchPart) == "skinfuse._model_files._TorchPart"
    assert skinfuse._model_files._TorchPart is _TorchPart
    assert "skinfuse._model_files._TorchPart" in _trusted_types()
