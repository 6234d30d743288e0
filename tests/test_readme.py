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


RESULTS = README.parent / "docs" / "results.md"

#: README passages that quote a row of the summary table of docs/results.md, by a
#: substring of the row's first cell; ``{accuracy}`` etc. are the row's figures.
QUOTES = {
    "frozen EfficientNet-Lite0 + Lite2": [
        "{accuracy} accuracy / {balanced} balanced accuracy",
    ],
    'autoencoder (`features="multi"`': [
        "{accuracy} / {balanced} (weighted F1 {weighted_f1})",
    ],
    "partially fine-tuned (last 2 stages": [
        "({accuracy} accuracy,\n#     {balanced} balanced accuracy",
        "{accuracy} / {balanced}, macro F1 {macro_f1}",
    ],
    "soft vote of two such networks": [
        "{accuracy} accuracy, {balanced} balanced accuracy, {macro_f1} macro F1",
        "about {minutes} minutes),",
    ],
    "fine-tuned, H100": [
        "on a GPU {accuracy} / {balanced}",
    ],
}


def _summary_rows() -> dict:
    """The summary table of docs/results.md (the first table): first cell -> its figures."""
    text = RESULTS.read_text()
    table = text[text.index("| approach |") :].split("\n\n", 1)[0].splitlines()
    rows = {}
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        minutes = re.search(r"(\d+) min", cells[0])
        rows[cells[0]] = {
            "accuracy": cells[1],
            "balanced": cells[2],
            "macro_f1": cells[3],
            "weighted_f1": cells[4],
            "minutes": minutes.group(1) if minutes else None,
        }
    return rows


def test_readme_headline_numbers_match_the_results_summary():
    """Each HAM10000 figure the README quotes is the one in docs/results.md's summary."""
    readme, rows = README.read_text(), _summary_rows()
    assert len(rows) >= 7
    missing = []
    for key, passages in QUOTES.items():
        matching = [name for name in rows if key in name]
        assert len(matching) == 1, f"{key!r} names {len(matching)} rows of the summary table"
        figures = rows[matching[0]]
        missing += [p.format(**figures) for p in passages if p.format(**figures) not in readme]
    assert missing == [], "the README should quote these, as docs/results.md has them"


def test_readme_figures_all_appear_in_the_results():
    """No three-decimal score and no duration in the README that docs/results.md lacks."""
    readme, results = README.read_text(), RESULTS.read_text()
    scores = set(re.findall(r"\b0\.\d{3}\b", readme))
    assert len(scores) >= 10
    assert sorted(s for s in scores if s not in results) == []
    for minutes in set(re.findall(r"about (\d+) minutes", readme)):
        assert re.search(rf"\b{minutes} min", results), f"{minutes} minutes: not in results.md"
    assert "8,584 images" in readme and "200x150" in readme  # which data the numbers are on
