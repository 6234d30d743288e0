import json

from skinfuse import show_versions
from skinfuse.__main__ import main


def test_demo_runs_end_to_end_and_fusion_wins(tmp_path, capsys):
    assert main(["demo", "--n-samples", "150", "--image-size", "32", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| image + metadata |" in out and "lesion_id" in out
    saved = json.loads((tmp_path / "demo_results.json").read_text())
    results = saved["results"]
    assert len(saved["pictures"]) == 5
    for name in saved["pictures"]:  # Grad-CAM, SHAP summary/waterfall, importance, confusion
        assert (tmp_path / name).stat().st_size > 5000
    assert len(results) == 3
    fused = results["image + metadata"]["accuracy"][0]
    assert fused > results["metadata only"]["accuracy"][0]


def test_show_versions(capsys):
    info = show_versions()
    assert info["scikit-learn"] and info["torch"] and "skinfuse" in capsys.readouterr().out
