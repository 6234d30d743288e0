import json
import warnings

import numpy as np
import pandas as pd
import pytest

from skinfuse import show_versions
from skinfuse._cli import demo as _demo
from skinfuse._cli import main

#: Categories Python shows by default (the others are hidden unless asked for).
HIDDEN = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def test_demo_runs_end_to_end_without_warnings_and_fusion_wins(tmp_path, capsys):
    args = ["demo", "--n-samples", "150", "--image-size", "32", "--out", str(tmp_path)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    shown = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
             if not issubclass(w.category, HIDDEN)]  # fmt: skip
    assert shown == []  # a fresh install's first run is quiet
    out = capsys.readouterr().out
    assert "| image + metadata |" in out and "lesion_id" in out
    saved = json.loads((tmp_path / "demo_results.json").read_text())
    results = saved["results"]
    # Grad-CAM, SHAP summary/waterfall, importance, confusion, reliability, melanoma curve
    assert saved["pictures"][-2:] == ["reliability.png", "melanoma_tradeoff.png"]
    assert len(saved["pictures"]) == 7
    for name in saved["pictures"]:
        assert (tmp_path / name).stat().st_size > 5000
    assert len(results) == 3
    fused = results["image + metadata"]["accuracy"][0]
    assert fused > results["metadata only"]["accuracy"][0]


def test_show_versions(capsys):
    info = show_versions()
    assert info["scikit-learn"] and info["torch"] and "skinfuse" in capsys.readouterr().out
    assert "onnxruntime" in info  # None where it is not installed


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the demo starts building models (i.e. starts the real work)."""

    def models(*args):
        raise AssertionError("the demo started working before checking its arguments")

    monkeypatch.setattr(_demo, "_models", models)


@pytest.fixture
def metadata_only(monkeypatch):
    """Fast stand-ins for the demo's models: the metadata-only pipeline under both names."""
    from skinfuse.pipeline import make_fusion_pipeline

    def models(*args):
        model = make_fusion_pipeline(None, classifier="logreg", sampler=None, random_state=0)
        return {"metadata only": model, "image + metadata": model}

    monkeypatch.setattr(_demo, "_models", models)


def _one_line_error(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--image-size", "0"], ["--image-size", "at least 8, got 0"]),
        (["--n-splits", "1"], ["--n-splits", "at least 2"]),
        (["--n-samples", "many"], ["--n-samples", "expected an integer, got 'many'"]),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, no_work, args, needles):
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", *args, "--out", str(tmp_path)])
    assert excinfo.value.code == 2
    _one_line_error(capsys.readouterr().err, *needles)


def test_run_demo_refuses_image_size_0(no_work):
    with pytest.raises(ValueError, match="image_size must be an integer >= 8, got 0"):
        _demo.run_demo(image_size=0, out=None)


@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_unusable_output_folder_is_refused_before_any_work(tmp_path, capsys, no_work, where):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / where
    assert main(["demo", "--n-samples", "40", "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, "cannot write to the output folder", str(out))


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no_ham"
    assert main(["demo", "--data", str(missing), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys.readouterr().err, "HAM10000 folder not found", str(missing))


def test_table_is_printed_before_files_are_written(tmp_path, capsys, metadata_only, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_demo, "_explain", disk_full)
    assert main(["demo", "--n-samples", "40", "--n-splits", "2", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "| metadata only |" in captured.out  # the results survive the failure
    _one_line_error(captured.err, "No space left on device")


@pytest.mark.parametrize("n_samples, random_state", [(60, 0), (150, 1), (400, 2)])
def test_synthetic_sites_are_seen_in_training_in_every_split(n_samples, random_state,
                                                            tmp_path):  # fmt: skip
    from sklearn.model_selection import StratifiedGroupKFold

    from skinfuse.datasets import make_synthetic_lesions

    bunch = make_synthetic_lesions(n_samples, image_size=8, random_state=random_state,
                                   data_dir=tmp_path)  # fmt: skip
    cv = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=random_state)
    X = _demo._sites_seen_in_training(bunch, cv, random_state)
    before, after = bunch.data["localization"], X["localization"]
    changed = before.notna() & after.isna()
    assert 0 < changed.sum() <= 0.15 * n_samples  # only the rare sites of some folds
    assert (after[~changed].fillna("-") == before[~changed].fillna("-")).all()
    groups = np.asarray(bunch.groups)
    splits = list(cv.split(X, bunch.target, groups))
    first = splits[0][0]
    inner = _demo._inner_cv(random_state).split(X.iloc[first], bunch.target.iloc[first],
                                                groups[first])  # fmt: skip
    for train, test in splits + [(first[a], first[b]) for a, b in inner]:
        seen = set(after.iloc[train].dropna())
        assert set(after.iloc[test].dropna()) <= seen
    assert X.drop(columns="localization").equals(bunch.data.drop(columns="localization"))
    assert isinstance(X, pd.DataFrame)
