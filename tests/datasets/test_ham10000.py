import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinfuse.datasets import load_ham10000

REAL_DATA = Path(
    os.environ.get("SKINFUSE_DATA", Path(__file__).parents[3] / "shared/data/ham10000")
)

# Clearly fake ids (never shaped like real HAM10000 ids).
ROWS = [
    ("FAKELES_1", "FAKE_1", "nv", "follow_up", "45.0", "male", "back"),
    ("FAKELES_1", "FAKE_2", "nv", "follow_up", "45.0", "male", "back"),
    ("FAKELES_2", "FAKE_3", "mel", "histo", "", "unknown", "face"),
    ("FAKELES_3", "FAKE_4", "bkl", "consensus", "70.0", "female", "unknown"),
    ("FAKELES_4", "FAKE_5", "mel", "histo", "60.0", "female", "trunk"),
]
HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"


def _write_layout(root: Path, layout: str, skip=()):
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [",".join(r) for r in ROWS]
    if layout == "official":
        (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
        dirs = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    else:
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
        dirs = [root / "images"]
    for d in dirs:
        d.mkdir()
    for i, row in enumerate(ROWS):
        if row[1] in skip:
            continue
        img = Image.fromarray(np.full((6, 8, 3), 10 * i, np.uint8))
        img.save(dirs[i % len(dirs)] / f"{row[1]}.jpg")
    return root


@pytest.mark.parametrize("layout", ["official", "flat"])
def test_load_layouts(tmp_path, layout):
    root = _write_layout(tmp_path / layout, layout)
    bunch = load_ham10000(root)
    assert list(bunch.data.columns) == ["image_path", "age", "sex", "localization"]
    assert bunch.target.tolist() == ["nv", "nv", "mel", "bkl", "mel"]
    assert bunch.groups.tolist() == [
        "FAKELES_1",
        "FAKELES_1",
        "FAKELES_2",
        "FAKELES_3",
        "FAKELES_4",
    ]
    assert bunch.target_names.tolist() == ["bkl", "mel", "nv"]
    assert "CC BY-NC" in bunch.DESCR and "doi:10.1038/sdata.2018.161" in bunch.DESCR
    # image paths are absolute and point to the right files
    for path, image_id in zip(bunch.data["image_path"], bunch.frame["image_id"]):
        assert os.path.isabs(path) and os.path.basename(path) == f"{image_id}.jpg"
        assert os.path.isfile(path)
    # "unknown" and empty -> NaN
    assert np.isnan(bunch.data["age"].iloc[2]) and bunch.data["age"].iloc[0] == 45.0
    assert pd.isna(bunch.data["sex"].iloc[2]) and bunch.data["sex"].iloc[3] == "female"
    assert pd.isna(bunch.data["localization"].iloc[3])
    assert bunch.data["sex"].dtype == object
    # dx_type is kept for analysis but is never an input
    assert "dx_type" in bunch.frame.columns and "dx_type" not in bunch.data.columns


def test_as_frame_false_and_return_X_y(tmp_path):
    root = _write_layout(tmp_path / "flat", "flat")
    X, y = load_ham10000(root, return_X_y=True)
    assert isinstance(X, pd.DataFrame) and X.shape == (5, 4) and y.name == "dx"
    bunch = load_ham10000(root, as_frame=False)
    assert isinstance(bunch.data, np.ndarray) and bunch.data.shape == (5, 4)
    assert bunch.frame is None and bunch.target.tolist()[2] == "mel"


def test_incomplete_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_ham10000(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no HAM10000 metadata found.*fetch_ham10000"):
        load_ham10000(tmp_path / "empty")
    root = _write_layout(tmp_path / "partial", "flat", skip={"FAKE_3", "FAKE_5"})
    with pytest.raises(ValueError, match=r"incomplete: 2 of 5 images .*FAKE_3, FAKE_5"):
        load_ham10000(root)
    no_images = tmp_path / "noimg"
    no_images.mkdir()
    (no_images / "HAM10000_metadata.csv").write_text(HEADER + "\n")
    with pytest.raises(ValueError, match="HAM10000_images_part_1"):
        load_ham10000(no_images)
    bad_cols = tmp_path / "badcols"
    (bad_cols / "images").mkdir(parents=True)
    (bad_cols / "metadata.csv").write_text("image_id,dx\nFAKE_1,nv\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        load_ham10000(bad_cols)


@pytest.mark.skipif(not (REAL_DATA / "metadata.csv").is_file(), reason="HAM10000 share not present")
def test_real_share_counts():
    bunch = load_ham10000(REAL_DATA)
    assert bunch.data.shape == (8584, 4)
    assert len(bunch.target_names) == 7
    assert len(np.unique(bunch.groups)) == 6403
    assert bunch.target.value_counts()["nv"] == 5747
    assert bunch.data["sex"].isna().sum() == 49
    assert bunch.data["localization"].isna().sum() == 202


def test_empty_image_id_is_refused_naming_the_line(tmp_path):
    root = _write_layout(tmp_path / "flat", "flat")
    csv = root / "metadata.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].replace("FAKE_3", "")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"1 of 5 rows of \S*metadata\.csv have no image_id \(lines 4\)"
    ):
        load_ham10000(root)


def test_duplicate_image_ids_warn_and_keep_the_first(tmp_path):
    root = _write_layout(tmp_path / "flat", "flat")
    csv = root / "metadata.csv"
    repeat = "FAKELES_9,FAKE_2,mel,histo,30.0,female,face"
    csv.write_text(csv.read_text() + repeat + "\n" + repeat + "\n")
    with pytest.warns(
        UserWarning,
        match=r"metadata\.csv lists 1 image_id\(s\) more than once \(FAKE_2\).*dropping 2",
    ):
        bunch = load_ham10000(root)
    assert bunch.frame["image_id"].tolist() == ["FAKE_1", "FAKE_2", "FAKE_3", "FAKE_4", "FAKE_5"]
    assert bunch.target.tolist() == ["nv", "nv", "mel", "bkl", "mel"]  # the first FAKE_2 row
    assert bunch.groups[1] == "FAKELES_1"


@pytest.mark.parametrize(
    "content, match",
    [
        ("", r"metadata file \S*metadata\.csv is empty"),
        ("\n\n", r"metadata file \S*metadata\.csv is empty"),
        (HEADER + "\n", r"\S*metadata\.csv lists no images"),
        (HEADER + "\nFAKELES_1,FAKE_1,nv,histo,45,male,back\nFAKELES_2,FAKE_2,nv,histo,4,x,y,z,w\n",
         r"cannot read the HAM10000 metadata file \S*metadata\.csv: .*Expected 7 fields"),
        (b"\xff\xfe\x00\x81garbage\x00", r"cannot read the HAM10000 metadata file \S*metadata\.csv"),
    ],
)  # fmt: skip
def test_empty_or_malformed_metadata_names_the_file(tmp_path, content, match):
    root = _write_layout(tmp_path / "flat", "flat")
    if isinstance(content, bytes):
        (root / "metadata.csv").write_bytes(content)
    else:
        (root / "metadata.csv").write_text(content)
    with pytest.raises(ValueError, match=match):
        load_ham10000(root)
