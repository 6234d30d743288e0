"""The README's Python examples run as written (on synthetic data)."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write model files in the working folder
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["heatmaps"].shape == (8, 260, 260)  # Lite0 + Lite2: the larger size
    assert namespace["scores"]["test_score"].mean() > 0.2
    assert namespace["shap_values"].values.shape[:2] == (20, 4)
    assert list(namespace["importance"].feature_names)
    loaded, frozen, X = namespace["model"], namespace["frozen"], namespace["X"]
    assert (loaded.predict(X.iloc[:10]) == frozen.predict(X.iloc[:10])).all()
    assert (tmp_path / "frozen.skinfuse").exists() and (tmp_path / "frozen.md").exists()
