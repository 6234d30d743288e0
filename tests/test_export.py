import json

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from skinfuse._export import export_onnx  # noqa: E402
from skinfuse.encoders import FrozenCNNEncoder  # noqa: E402
from skinfuse.fusion import FusionNetClassifier  # noqa: E402
from skinfuse.images import _read_image  # noqa: E402


def _images(paths, size):
    return np.ascontiguousarray(
        np.stack([_read_image(p, size=size) for p in paths]).transpose(0, 3, 1, 2)
    )


def test_fusion_network_onnx_matches_torch(lesions, tmp_path):
    X, y = lesions.data, lesions.target
    net = FusionNetClassifier(
        "tiny_cnn", weights=None, image_size=16, max_epochs=1, validation_fraction=0.0,
        num_workers=0, random_state=0,
    ).fit(X, y)  # fmt: skip
    paths = export_onnx(net, tmp_path / "net.onnx")
    info = json.loads(paths["preprocessing"].read_text())
    assert info["classes"] == np.asarray(net.classes_).tolist()
    meta_info = info["inputs"]["metadata"]
    assert meta_info["feature_names"] == net.metadata_.get_feature_names_out().tolist()
    one_hot = meta_info["columns"]["localization"][-1]
    seen = set(X["localization"].dropna().str.lower()) | {"missing"}  # some are missing
    assert X["localization"].isna().any() and one_hot["categories"] == sorted(seen)
    age = {step["step"]: step for step in meta_info["columns"]["age"]}
    assert age["scale"]["mean"] == pytest.approx(
        net.metadata_.named_transformers_["numeric"]["scale"].mean_[0]
    )
    # the all-missing row is what the preprocessor gives for a row of missing values
    row = X[:1].copy()
    row[["age", "sex", "localization"]] = np.nan
    np.testing.assert_allclose(meta_info["all_missing_row"], net.metadata_.transform(row)[0])
    session = ort.InferenceSession(str(paths["onnx"]))
    test = X[:40]
    feeds = {
        "image": _images(test[net.image_column], 16),
        "metadata": net.metadata_.transform(test).astype(np.float32),
    }
    proba = session.run(None, feeds)[0]
    np.testing.assert_allclose(proba, net.predict_proba(test), atol=1e-4)
    assert not np.allclose(proba, proba[:1])  # the inputs matter


def test_frozen_encoder_onnx_matches_torch(lesions, tmp_path):
    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=16, num_workers=0)
    images = lesions.data["image_path"][:10]
    expected = encoder.fit_transform(images)
    paths = export_onnx(encoder, tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(paths["onnx"]))
    embedding = session.run(None, {"image": _images(images, 16)})[0]
    np.testing.assert_allclose(embedding, expected, atol=1e-4)
    info = json.loads(paths["preprocessing"].read_text())
    assert info["outputs"]["embedding"]["columns"] == encoder.get_feature_names_out().tolist()


def test_export_refuses_models_without_network(tmp_path):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(TypeError, match="FusionNetClassifier or a FrozenCNNEncoder"):
        export_onnx(LogisticRegression(), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="not fitted"):
        export_onnx(FrozenCNNEncoder("tiny_cnn", weights=None), tmp_path / "x.onnx")


def test_cli_exports_a_fusion_pipelines_encoder(lesions, tmp_path, capsys):
    import skinfuse
    from skinfuse._cli import main
    from skinfuse.pipeline import make_fusion_pipeline

    X, y = lesions.data[:40], lesions.target[:40]
    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=16, num_workers=0)
    model = make_fusion_pipeline(encoder, sampler=None, classifier="logreg").fit(X, y)
    path = skinfuse.save(model, tmp_path / "model.skinfuse")
    assert main(["export", str(path), "--onnx", str(tmp_path / "out" / "encoder.onnx")]) == 0
    assert "encoder.onnx" in capsys.readouterr().out
    info = json.loads((tmp_path / "out" / "encoder.json").read_text())
    assert any("FrozenCNNEncoder inside" in note for note in info["notes"])
    session = ort.InferenceSession(str(tmp_path / "out" / "encoder.onnx"))
    embedding = session.run(None, {"image": _images(X["image_path"][:5], 16)})[0]
    from skinfuse._utils._estimators import walk_estimators

    fitted = next(e for e in walk_estimators(skinfuse.load(path)) if hasattr(e, "embedder_"))
    np.testing.assert_allclose(embedding, fitted.transform(X[["image_path"]][:5]), atol=1e-4)


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    from skinfuse._cli import main

    assert main(["export", str(tmp_path / "missing.skinfuse"), "--onnx", "x.onnx"]) == 2
    assert "model file not found" in capsys.readouterr().err


def _recipe_from_docs():
    """``metadata_input`` as docs/export.md writes it (run from the page: they stay one)."""
    import re
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    code = re.search(r"(def metadata_input\(case\):.*?)\n\n\n", page, re.S).group(1)
    return code


def test_the_docs_metadata_recipe_gives_the_preprocessors_features(lesions, tmp_path):
    import pandas as pd

    from skinfuse._export._onnx import _metadata_description
    from skinfuse.metadata import make_metadata_preprocessor

    preprocessor = make_metadata_preprocessor().fit(lesions.data)  # as a fusion network's
    info = {"inputs": {"metadata": _metadata_description(preprocessor)}}
    namespace = {"info": info, "np": np}
    exec(_recipe_from_docs(), namespace)
    cases = pd.DataFrame({
        "age": [40.0, np.nan, 85.0], "sex": ["Male ", None, "female"],
        "localization": ["back", "scalp-unknown", None],
    })  # fmt: skip
    with pytest.warns(UserWarning, match="not seen in fit"):
        expected = preprocessor.transform(cases)
    for i, case in enumerate(cases.to_dict("records")):
        case = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in case.items()}
        np.testing.assert_allclose(namespace["metadata_input"](case), expected[i], atol=1e-6)
    missing = namespace["metadata_input"]({"age": None, "sex": None, "localization": None})
    np.testing.assert_allclose(info["inputs"]["metadata"]["all_missing_row"], missing, atol=1e-6)
