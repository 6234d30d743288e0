"""The benchmark scripts' --smoke modes run (what CI checks of them)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
