"""``skinfuse train | predict | evaluate`` on a tiny synthetic folder in HAM10000 layout."""

import dataclasses
import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone, is_classifier
from sklearn.ensemble import VotingClassifier

import skinfuse
from skinfuse._cli import common, main
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.recipes import RECIPES, make_recipe

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A flat HAM10000 folder (metadata.csv + images/) of 70 synthetic lesions."""
    root = tmp_path_factory.mktemp("ham")
    lesions = make_synthetic_lesions(70, image_size=24, random_state=0, data_dir=root / "generated")
    (root / "images").mkdir()
    frame = lesions.frame.copy()
    for image_id, path in zip(frame["image_id"], frame["image_path"]):
        shutil.copy(path, root / "images" / f"{image_id}.png")
    frame[COLUMNS].to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="module")
def model_file(ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "sub" / "tiny.skinfuse"
    cache = tmp_path_factory.mktemp("cache") / "embeddings"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "--cache-dir",
            str(cache)]  # fmt: skip
    assert main([*args, "--cv", "2", "--quiet"]) == 0
    return out


def _one_line_error(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_writes_a_model_with_cv_metrics(model_file, ham, capsys):
    model = skinfuse.load(model_file)
    lesions = pd.read_csv(ham / "metadata.csv")
    assert set(model.classes_) == set(lesions["dx"])
    with zipfile.ZipFile(model_file) as zf:
        metrics = json.loads(zf.read("manifest.json"))["metrics"]
    for name in ("balanced_accuracy", "accuracy", "macro_f1", "melanoma_sensitivity",
                 "melanoma_specificity_at_82_sensitivity"):  # fmt: skip
        assert 0 <= metrics[name] <= 1 and f"{name}_std" in metrics
    assert metrics["recipe"] == "tiny"
    assert any(model_file.parent.parent.parent.glob("cache*/embeddings/*/*.npz"))
    # the training data's summary, for evaluate to print next to the data it scores
    training = skinfuse._model_files.read_manifest(model_file)["training_data"]
    shares = lesions["dx"].value_counts(normalize=True)
    assert training["classes"] == pytest.approx({c: shares[c] for c in model.classes_})
    assert training["n_images"] == 70 and training["images"]["median_width"] == 24
    assert training["metadata"]["age"]["missing"] == pytest.approx(lesions["age"].isna().mean())


def _expected(model_file, X):
    model = skinfuse.load(model_file)
    return model.predict(X), model.predict_proba(X), list(model.classes_)


def test_predict_data_folder_matches_python(model_file, ham, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model_file), "--data", str(ham), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    bunch = skinfuse.datasets.load_ham10000(ham)
    y_pred, proba, classes = _expected(model_file, bunch.data)
    assert list(table.columns) == ["image_id", "image_path", "prediction",
                                   *[f"proba_{c}" for c in classes]]  # fmt: skip
    assert table["image_id"].tolist() == bunch.frame["image_id"].tolist()
    assert (table["prediction"] == y_pred).all()
    np.testing.assert_allclose(table.iloc[:, 3:].to_numpy(), proba, rtol=1e-6)
    np.testing.assert_allclose(table.iloc[:, 3:].sum(axis=1), 1.0, rtol=1e-6)
    assert "predictions written" in capsys.readouterr().out


@pytest.mark.parametrize("with_metadata", [True, False])
def test_predict_image_folder(model_file, ham, tmp_path, capsys, with_metadata):
    images = tmp_path / "photos"
    images.mkdir()
    ids = sorted(p.stem for p in (ham / "images").iterdir())[:9]
    for i in ids:
        shutil.copy(ham / "images" / f"{i}.png", images / f"{i}.png")
    (images / "notes.txt").write_text("not an image")
    meta = pd.read_csv(ham / "metadata.csv").set_index("image_id").loc[ids]
    csv = tmp_path / "clinical.csv"
    # keyed by file name, "unknown" as in HAM10000, one image without a row
    rows = meta.reset_index().rename(columns={"image_id": "file_name"}).iloc[1:]
    rows["file_name"] = rows["file_name"] + ".png"
    rows[["file_name", "age", "sex", "localization"]].to_csv(csv, index=False)
    out = tmp_path / "pred.csv"
    args = ["predict", str(model_file), "--images", str(images), "--out", str(out), "--quiet"]
    if with_metadata:
        args += ["--metadata", str(csv)]
    assert main(args) == 0
    err = capsys.readouterr().err
    table = pd.read_csv(out)
    assert table["image_id"].tolist() == ids
    X = pd.DataFrame({"image_path": [str(images / f"{i}.png") for i in ids]})
    if with_metadata:
        X = X.join(meta[["age", "sex", "localization"]].reset_index(drop=True))
        X.loc[0, ["age", "sex", "localization"]] = [np.nan, np.nan, np.nan]
        X["age"] = X["age"].astype(float)
        assert "1 of 9 images have no row" in err and len(err.strip().splitlines()) == 1
    else:
        X[["age", "sex", "localization"]] = np.nan
        X[["sex", "localization"]] = X[["sex", "localization"]].astype(object)
        assert err.count("less accurate") == 1
    y_pred, proba, _ = _expected(model_file, X)
    assert (table["prediction"] == y_pred).all()
    np.testing.assert_allclose(table.iloc[:, 3:].to_numpy(), proba, rtol=1e-6)


@pytest.mark.parametrize("per_figure, n_files", [(16, 1), (1, 3)])
def test_predict_grad_cam_writes_pngs(model_file, ham, tmp_path, per_figure, n_files):
    images = tmp_path / "photos"
    images.mkdir()
    for p in sorted((ham / "images").iterdir())[:3]:
        shutil.copy(p, images / p.name)
    cams = tmp_path / "cams"
    args = ["predict", str(model_file), "--images", str(images), "--out",
            str(tmp_path / "p.csv"), "--grad-cam", str(cams), "--per-figure", str(per_figure)]  # fmt: skip
    assert main([*args, "--quiet"]) == 0
    pngs = sorted(cams.glob("*.png"))
    assert len(pngs) == n_files and all(p.stat().st_size > 2000 for p in pngs)


def test_evaluate_prints_and_writes(model_file, ham, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", str(model_file), "--data", str(ham), "--out", str(out)]
    assert main([*args, "--n-resamples", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for needle in ("macro avg", "| balanced_accuracy |", "| macro_f1 |", "| ece |",
                   "| sensitivity_at_90_specificity |",
                   "| partial_auc_above_80_sensitivity |"):  # fmt: skip
        assert needle in printed
    saved = json.loads((out / "metrics.json").read_text())
    bunch = skinfuse.datasets.load_ham10000(ham)
    _, proba, classes = _expected(model_file, bunch.data)
    balanced = skinfuse.metrics.clinical_report(bunch.target, proba, classes=classes)
    iv = saved["metrics"]["balanced_accuracy"]
    assert iv["estimate"] == pytest.approx(balanced.attrs["balanced_accuracy"])
    assert iv["low"] <= iv["estimate"] <= iv["high"] and iv["n_resamples"] == 20
    assert len(saved["metrics"]) == 8
    # the numbers of skinfuse.metrics.clinical_summary, the one definition of the metric set
    summary = skinfuse.metrics.clinical_summary(
        bunch.target, proba, classes=classes, groups=bunch.groups, n_resamples=20
    )
    assert saved["metrics"] == {name: dataclasses.asdict(iv) for name, iv in summary.items()}
    report = pd.read_csv(out / "clinical_report.csv", index_col=0)
    assert "macro avg" in report.index and (report["support"].iloc[:-1] > 0).all()
    for name in ("reliability.png", "melanoma_tradeoff.png"):
        assert (out / name).stat().st_size > 5000


def test_evaluate_on_other_data_names_the_classes_present_and_the_shift(
    model_file, ham, tmp_path, capsys
):
    """Data of 'another clinic': no akiec, no age, a site never seen, 32x24 images; and
    the same model file as saved before training summaries were recorded."""
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    table = pd.read_csv(ham / "metadata.csv")
    table = table[table["dx"] != "akiec"].reset_index(drop=True)
    table["age"] = np.nan
    table.loc[:2, "localization"] = "nailbed"
    table.to_csv(other / "metadata.csv", index=False)
    for image_id in table["image_id"]:
        image = Image.open(ham / "images" / f"{image_id}.png").resize((32, 24))
        image.save(other / "images" / f"{image_id}.png")
    out = tmp_path / "eval"
    args = ["evaluate", str(model_file), "--data", str(other), "--n-resamples", "10", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    n = len(table)
    assert ("classes present: 6 of the model's 7 (absent: akiec); balanced accuracy and macro "
            "F1 are over the 6 present; predictions of an absent class count as errors"
            in printed)  # fmt: skip
    training = skinfuse._model_files.read_manifest(model_file)["training_data"]
    age_missing = f"{100 * training['metadata']['age']['missing']:.0f}%"
    for line in ("shift summary: the evaluated data next to the training data's",
                 "| quantity | training | evaluated |", f"| images | 70 | {n} |",
                 "| median size (WxH) | 24x24 | 32x24 |",
                 "| square / 4:3 / other | 100% / 0% / 0% | 0% / 100% / 0% |",
                 f"| age missing | {age_missing} | 100% |",
                 "unseen localization (never in the training data): nailbed",
                 "age: wholly missing here (the training data had it)"):  # fmt: skip
        assert line in printed, line
    report = pd.read_csv(out / "clinical_report.csv", index_col=0)
    assert report.loc["akiec", "support"] == 0 and np.isnan(report.loc["akiec", "recall"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["classes"]["absent"] == ["akiec"]
    assert "6 of the model's 7" in saved["classes"]["note"]
    shift = saved["shift"]
    assert shift["training"] == training and shift["evaluated"]["n_images"] == n
    assert shift["unseen_categories"] == {"localization": ["nailbed"]}
    assert shift["missing_columns"] == ["age"] and shift["new_classes"] == []
    # balanced accuracy: the mean recall over the 6 classes present
    model = skinfuse.load(model_file)
    bunch = skinfuse.datasets.load_ham10000(other)
    y_pred = model.predict(bunch.data)
    recalls = [np.mean(y_pred[bunch.target == c] == c) for c in set(bunch.target)]
    assert saved["metrics"]["balanced_accuracy"]["estimate"] == pytest.approx(np.mean(recalls))
    assert report.loc["macro avg", "recall"] == pytest.approx(np.mean(recalls))
    # a model file saved before the training summary was recorded: the evaluated data alone
    old = tmp_path / "old.skinfuse"
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "manifest.json":
                manifest = json.loads(data)
                del manifest["training_data"]
                data = json.dumps(manifest).encode()
            dst.writestr(item, data)
    assert main(["evaluate", str(old), "--data", str(other), "--n-resamples", "10",
                 "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "records no training data summary" in printed
    assert f"| quantity | evaluated |\n|---|---|\n| images | {n} |" in printed


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts loading data or a model."""

    def fail(*args, **kwargs):
        raise AssertionError("the command started working before checking its arguments")

    monkeypatch.setattr(common, "load_model", fail)
    monkeypatch.setattr("skinfuse.datasets.load_ham10000", fail)
    monkeypatch.setattr("skinfuse.datasets.load_lesion_folder", fail)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "--data", "D", "--recipe", "huge", "--out", "m"], ["--recipe", "'huge'"]),
        (["train", "--data", "D", "--recipe", "tiny", "--out", "m", "--cv", "1"],
         ["--cv", "at least 2, got 1"]),
        (["train", "--data", "D", "--recipe", "tiny"], ["--out"]),
        (["predict", "M", "--out", "p.csv"], ["--data", "--images"]),
        (["predict", "M", "--data", "D", "--images", "I", "--out", "p.csv"], ["not allowed"]),
        (["predict", "M", "--images", "I", "--out", "p.csv", "--per-figure", "17"],
         ["--per-figure", "at most 16, got 17"]),
        (["evaluate", "M", "--data", "D", "--n-resamples", "x"],
         ["expected an integer, got 'x'"]),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line(capsys, no_work, args, needles):
    with pytest.raises(SystemExit) as excinfo:
        main(args)
    assert excinfo.value.code == 2
    _one_line_error(capsys.readouterr().err, *needles)


def test_paths_are_checked_before_any_work(tmp_path, ham, model_file, capsys, no_work):
    missing = tmp_path / "no_such_folder"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["train", "--data", str(missing), "--recipe", "tiny", "--out", str(tmp_path / "m")],
         ["--data folder not found", str(missing)]),
        (["train", "--data", str(ham), "--recipe", "tiny", "--out", str(a_file / "m")],
         ["cannot write --out", str(a_file / "m")]),
        (["train", "--data", str(ham), "--recipe", "tiny", "--out", str(tmp_path)],
         ["is a folder"]),
        (["predict", str(missing / "m"), "--data", str(ham), "--out", str(tmp_path / "p.csv")],
         ["model file not found"]),
        (["predict", str(model_file), "--images", str(missing), "--out", str(tmp_path / "p")],
         ["--images folder not found"]),
        (["predict", str(model_file), "--data", str(ham), "--out", str(tmp_path / "p.csv"),
          "--grad-cam", str(a_file)], ["cannot write to the output folder", str(a_file)]),
        (["predict", str(model_file), "--data", str(ham), "--metadata", str(a_file), "--out",
          str(tmp_path / "p.csv")], ["--metadata goes with --images"]),
        (["evaluate", str(model_file), "--data", str(ham), "--out", str(a_file / "x")],
         ["cannot write to the output folder"]),
    ]  # fmt: skip
    for args, needles in cases:
        assert main([*args, "--quiet"]) == 2, args
        _one_line_error(capsys.readouterr().err, f"skinfuse {args[0]}: error:", *needles)
    assert not (tmp_path / "m").exists() and not (tmp_path / "p.csv").exists()


def test_user_errors_found_while_working_are_one_line(tmp_path, ham, model_file, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(model_file), "--images", str(empty), "--out",
                 str(tmp_path / "p.csv")]) == 2  # fmt: skip
    _one_line_error(capsys.readouterr().err, "no images in", str(empty))
    not_a_model = tmp_path / "model.skinfuse"
    not_a_model.write_text("hello")
    assert main(["evaluate", str(not_a_model), "--data", str(ham)]) == 2
    _one_line_error(capsys.readouterr().err, "not a skinfuse model file")
    metadata = tmp_path / "meta.csv"
    metadata.write_text("who,age\nx,3\n")
    args = ["predict", str(model_file), "--images", str(ham / "images"), "--metadata",
            str(metadata), "--out", str(tmp_path / "p.csv")]  # fmt: skip
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, "no column naming the image", "image_id")


def test_grad_cam_of_two_concatenated_encoders_is_refused_before_writing(ham, tmp_path, capsys):
    from sklearn.pipeline import FeatureUnion

    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.pipeline import make_fusion_pipeline

    bunch = skinfuse.datasets.load_ham10000(ham)
    encoders = [(f"e{k}", FrozenCNNEncoder("tiny_cnn", weights=None, image_size=16 + 8 * k))
                for k in range(2)]  # fmt: skip
    model = make_fusion_pipeline(FeatureUnion(encoders), classifier="logreg", sampler=None)
    path = skinfuse.save(model.fit(bunch.data, bunch.target), tmp_path / "union.skinfuse")
    out = tmp_path / "p.csv"
    args = ["predict", str(path), "--data", str(ham), "--out", str(out), "--grad-cam",
            str(tmp_path / "cams"), "--quiet"]  # fmt: skip
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, "--grad-cam cannot explain this model")
    assert not out.exists()


def test_a_model_that_cannot_be_saved_is_refused_before_the_fit(ham, tmp_path, capsys,
                                                                 monkeypatch):  # fmt: skip
    from skinfuse import recipes
    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.pipeline import make_fusion_pipeline

    def make_recipe(name, **kwargs):  # a parameter skops would not open safely
        encoder = FrozenCNNEncoder("tiny_cnn", weights=None, cache_dir=tmp_path / "cache")
        model = make_fusion_pipeline(encoder, sampler=None)
        monkeypatch.setattr(model, "fit", lambda *a: pytest.fail("fitted before the check"))
        return model

    monkeypatch.setattr(recipes, "make_recipe", make_recipe)
    out = tmp_path / "m.skinfuse"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "--quiet"]
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, "skinfuse train: error:", "pathlib")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_an_unfitted_estimator_that_clones(name):
    model = make_recipe(name, random_state=3)
    assert is_classifier(model)
    assert clone(model).get_params().keys() == model.get_params().keys()


def test_partial_ensemble_recipe_is_two_partial_networks_with_their_own_seeds():
    vote = make_recipe("partial-ensemble", random_state=3, calibrate=False)
    assert isinstance(vote, VotingClassifier) and vote.voting == "soft"
    (_, a), (_, b) = vote.estimators
    partial = make_recipe("partial", random_state=3, calibrate=False).get_params()
    assert a.get_params() == partial
    assert b.get_params() == {**partial, "random_state": 4}


def test_recipes_are_public_with_their_descriptions():
    assert all(isinstance(r, skinfuse.recipes.Recipe) and r.description for r in RECIPES.values())
    with pytest.raises(ValueError, match="unknown recipe 'huge'; choose one of frozen"):
        make_recipe("huge")


def test_seed_ensemble_is_one_model_for_one_seed_and_a_soft_vote_for_several():
    from sklearn.linear_model import LogisticRegression

    from skinfuse.recipes import seed_ensemble

    single = seed_ensemble(lambda s: LogisticRegression(random_state=s), [7])
    assert isinstance(single, LogisticRegression) and single.random_state == 7
    vote = seed_ensemble(lambda s: LogisticRegression(random_state=s), [None, None])
    assert vote.voting == "soft" and [n for n, _ in vote.estimators] == ["net0", "net1"]
    assert [m.random_state for _, m in vote.estimators] == [None, None]
    vote = make_recipe("gpu-ensemble", random_state=None, calibrate=False)
    assert vote.estimators[1][1].random_state is None
