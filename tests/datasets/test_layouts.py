"""load_lesion_table, the presets and layout detection, on tiny synthetic folders in each
layout (clearly fake names; no real data), plus counts on the real Derm7pt share if present."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinfuse.datasets import (
    HAM10000_CLASSES,
    HAM10000_SITES,
    LABEL_MAPS,
    LAYOUTS,
    SITE_MAPS,
    detect_layout,
    load_derm7pt,
    load_ham10000,
    load_isic2019,
    load_isic2020,
    load_lesion_folder,
    load_lesion_table,
    load_pad_ufes20,
    make_synthetic_lesions,
)

REAL_DERM7PT = Path(
    os.environ.get("SKINFUSE_DERM7PT", Path(__file__).parents[3] / "shared/data/derm7pt")
)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """Six small synthetic lesion images, as PIL images."""
    folder = tmp_path_factory.mktemp("synthetic")
    lesions = make_synthetic_lesions(7, image_size=16, random_state=0, data_dir=folder)
    return [Image.open(p).convert("RGB") for p in lesions.frame["image_path"][:6]]


def _save(pixels, paths):
    for image, path in zip(pixels, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")  # the content need not match the extension here


def _csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")


def make_derm7pt(root, pixels):
    # the table names a folder in one case, the disk holds it in another (as in the release)
    rows = [
        ("clark nevus", "back", "female", "Fa1/Fa1001.jpg"),
        ("Melanoma (in situ)", "head neck", "male", "Fa1/Fa1002.jpg"),
        ("seborrheic keratosis", "lower limbs", "female", "Fb2/Fb2003.jpg"),
        ("basal cell carcinoma", "buttocks", "male", "Fb2/Fb2004.jpg"),
        ("melanosis", "acral", "female", "Fc3/Fc3005.jpg"),
        ("blue nevus", "genital areas", "male", "Fc3/Fc3006.jpg"),
    ]
    header = "case_num,diagnosis,seven_point_score,location,sex,derm"
    _csv(root / "meta.csv", header, [(i, d, 3, loc, s, p) for i, (d, loc, s, p) in
                                     enumerate(rows)])  # fmt: skip
    disk = [r[3] for r in rows]
    disk[5] = "FC3/Fc3006.JPG"
    _save(pixels, [root / "images" / p for p in disk])
    return ["nv", "mel", "bkl", "bcc", "nv"]  # melanosis dropped


def make_isic2019(root, pixels):
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    labels = ["MEL", "NV", "AK", "SCC", "BKL", "NV"]
    ids = [f"FAKEISIC_{i}" for i in range(6)]
    onehot = [[f"{float(c == y):.1f}" for c in classes] for y in labels]
    _csv(root / "ISIC_2019_Training_GroundTruth.csv", "image," + ",".join(classes),
         [(i, *row) for i, row in zip(ids, onehot)])  # fmt: skip
    meta = [(i, a, site, les, sex) for i, a, site, les, sex in zip(
        ids, [55, 40, "", 70, 65, 40],
        ["anterior torso", "head/neck", "palms/soles", "posterior torso", "", "oral/genital"],
        ["FAKELES_1", "FAKELES_2", "FAKELES_3", "FAKELES_3", "FAKELES_4", "FAKELES_5"],
        ["male", "female", "male", "male", "", "female"])]  # fmt: skip
    _csv(root / "ISIC_2019_Training_Metadata.csv",
         "image,age_approx,anatom_site_general,lesion_id,sex", meta)  # fmt: skip
    _save(pixels, [root / "ISIC_2019_Training_Input" / f"{i}.jpg" for i in ids])
    return ["mel", "nv", "akiec", "akiec", "bkl", "nv"]


def make_isic2020(root, pixels):
    ids = [f"FAKEISIC_{i}" for i in range(6)]
    diagnoses = ["nevus", "melanoma", "unknown", "seborrheic keratosis", "lentigo NOS", "nevus"]
    rows = [(i, f"FAKEPAT_{k // 2}", "female" if k % 2 else "male", 45, "torso", d,
             "malignant" if d == "melanoma" else "benign", int(d == "melanoma"))
            for k, (i, d) in enumerate(zip(ids, diagnoses))]  # fmt: skip
    header = ("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
              "benign_malignant,target")  # fmt: skip
    _csv(root / "train.csv", header, rows)
    _save(pixels, [root / "jpeg" / "train" / f"{i}.jpg" for i in ids])
    return ["nv", "mel", "bkl", "bkl", "nv"]  # unknown dropped


def make_pad_ufes20(root, pixels):
    diagnoses = ["NEV", "MEL", "ACK", "BCC", "SCC", "SEK"]
    rows = [(f"FAKEPAT_{k // 2}", 900 + k, f"FAKEPAT_{k // 2}_{900 + k}_{k}.png", d, 60 + k,
             "FEMALE" if k % 2 else "MALE", region, "True")
            for k, (d, region) in enumerate(zip(diagnoses, ["ARM", "FACE", "NOSE", "BACK",
                                                            "THIGH", "CHEST"]))]  # fmt: skip
    header = "patient_id,lesion_id,img_id,diagnostic,age,gender,region,biopsed"
    _csv(root / "metadata.csv", header, rows)
    parts = [f"imgs_part_{k // 2 + 1}" for k in range(6)]
    _save(pixels, [root / "images" / part / r[2] for part, r in zip(parts, rows)])
    return ["nv", "mel", "akiec", "bcc", "akiec", "bkl"]


def make_ham10000(root, pixels):
    rows = [(f"FAKELES_{k // 2}", f"FAKE_{k}", dx, 40 + k, "male", "back")
            for k, dx in enumerate(["nv", "nv", "mel", "bkl", "bcc", "df"])]  # fmt: skip
    _csv(root / "metadata.csv", "lesion_id,image_id,dx,age,sex,localization", rows)
    _save(pixels, [root / "images" / f"FAKE_{k}.png" for k in range(6)])
    return [r[2] for r in rows]


MAKERS = {
    "ham10000": (make_ham10000, load_ham10000),
    "derm7pt": (make_derm7pt, load_derm7pt),
    "isic2019": (make_isic2019, load_isic2019),
    "isic2020": (make_isic2020, load_isic2020),
    "pad_ufes20": (make_pad_ufes20, load_pad_ufes20),
}


def test_every_layout_has_a_synthetic_folder_here():
    assert set(MAKERS) == set(LAYOUTS)


@pytest.mark.filterwarnings("ignore:dropping:UserWarning")
@pytest.mark.parametrize("layout", list(MAKERS))
def test_each_layout_loads_by_its_preset_and_by_detection(tmp_path, pixels, layout):
    make, load = MAKERS[layout]
    expected = make(tmp_path, pixels)
    bunch = load(tmp_path)
    assert bunch.target.tolist() == expected
    assert list(bunch.data.columns) == ["image_path", "age", "sex", "localization"]
    assert all(os.path.isfile(p) and os.path.isabs(p) for p in bunch.data["image_path"])
    assert set(bunch.target_names) <= set(HAM10000_CLASSES)
    assert set(bunch.data["sex"].dropna()) <= {"male", "female"}
    assert set(bunch.data["localization"].dropna()) <= set(HAM10000_SITES)
    assert len(bunch.groups) == len(expected) and "image_id" in bunch.frame
    assert "Licence" in bunch.DESCR and "Citation" in bunch.DESCR
    assert detect_layout(tmp_path) == layout
    folder = load_lesion_folder(tmp_path)
    assert folder.layout == layout and folder.target.tolist() == expected
    assert folder.data["image_path"].tolist() == bunch.data["image_path"].tolist()


def test_preset_values_in_ham_words(tmp_path, pixels):
    make_derm7pt(tmp_path / "derm", pixels)
    with pytest.warns(UserWarning, match=r"dropping 1 of 6 rows .*'melanosis' \(1\)"):
        derm = load_derm7pt(tmp_path / "derm")
    assert derm.data["localization"].tolist() == ["back", "face", "lower extremity", "trunk",
                                                  "genital"]  # fmt: skip
    assert derm.data["age"].isna().all()
    assert derm.groups.tolist() == derm.frame["derm"].tolist()  # one case per lesion
    make_isic2019(tmp_path / "isic", pixels)
    isic = load_isic2019(tmp_path / "isic")
    assert isic.data["localization"].tolist()[:4] == ["trunk", "face", "acral", "back"]
    assert isic.data["age"].tolist()[:3] == [55.0, 40.0, pytest.approx(np.nan, nan_ok=True)]
    assert pd.isna(isic.data["sex"].iloc[4]) and isic.groups[2] == isic.groups[3]
    make_pad_ufes20(tmp_path / "pad", pixels)
    pad = load_pad_ufes20(tmp_path / "pad")
    assert pad.data["sex"].tolist()[:2] == ["male", "female"]
    assert pad.data["localization"].tolist()[:3] == ["upper extremity", "face", "face"]
    assert pad.data["age"].tolist()[0] == 60.0
    make_isic2020(tmp_path / "isic2020", pixels)
    with pytest.warns(UserWarning, match=r"dropping 1 of 6 .*'unknown' \(1\)"):
        isic2020 = load_isic2020(tmp_path / "isic2020")
    assert isic2020.groups.tolist()[:2] == ["FAKEPAT_0", "FAKEPAT_0"]  # patient groups


def test_paths_are_matched_without_regard_to_case(tmp_path, pixels):
    _save(pixels[:2], [tmp_path / "imgs" / "SUB" / "Ab01.JPG", tmp_path / "imgs" / "cd02.png"])
    table = pd.DataFrame({"file": ["sub/ab01.jpg", "CD02"], "dx": ["nv", "mel"],
                          "lesion": ["a", "b"]})  # fmt: skip
    bunch = load_lesion_table(table, tmp_path / "imgs", image_column="file", label_column="dx",
                              group_column="lesion")  # fmt: skip
    names = [Path(p).relative_to(tmp_path / "imgs").as_posix() for p in bunch.data["image_path"]]
    assert names == ["SUB/Ab01.JPG", "cd02.png"]
    table["file"] = ["sub/ab01.jpg", "nowhere.png"]
    with pytest.raises(ValueError, match=r"incomplete: 1 of 2 images .*nowhere\.png"):
        load_lesion_table(table, tmp_path / "imgs", image_column="file", group_column="lesion")


@pytest.mark.parametrize("all_rows", [False, True])
def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path, pixels, all_rows):
    """pandas would shift the row (one row) or the whole table by a column (every row)."""
    _save(pixels[:2], [tmp_path / "a.png", tmp_path / "b.png"])
    extra = ",extra" if all_rows else ""
    lines = ["image,dx,lesion", f"a.png,nv,L1{extra}", "b.png,mel,L2,oops"]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    line = 2 if all_rows else 3
    with pytest.raises(ValueError, match=rf"table\.csv: Expected 3 fields in line {line}, saw 4"):
        load_lesion_table(tmp_path / "table.csv", image_column="image", label_column="dx",
                          group_column="lesion")  # fmt: skip


def test_groups_fall_back_from_lesion_to_patient_to_image_with_a_warning(tmp_path, pixels):
    _save(pixels[:3], [tmp_path / f"{k}.png" for k in range(3)])
    table = pd.DataFrame({"image": ["0", "1", "2"], "lesion": ["L1", None, None],
                          "patient": ["P1", "P1", None]})  # fmt: skip
    with pytest.warns(UserWarning, match=r"1 of 3 images .* each is its own group.*may leak"):
        bunch = load_lesion_table(table, tmp_path, image_column="image", group_column="lesion",
                                  patient_column="patient")  # fmt: skip
    assert bunch.groups.tolist() == ["L1", "patient:P1", "image:2"]
    assert bunch.target.isna().all() and bunch.target_names.tolist() == []
    with pytest.warns(UserWarning, match=r"3 of 3 images .* no lesion or patient column"):
        load_lesion_table(table, tmp_path, image_column="image")


@pytest.mark.filterwarnings("ignore:dropping:UserWarning")
def test_a_label_the_map_does_not_know_is_named_with_the_fix(tmp_path, pixels):
    make_derm7pt(tmp_path, pixels)
    label_map = {k: v for k, v in LABEL_MAPS["derm7pt"].items() if k != "blue nevus"}
    with pytest.raises(ValueError, match=r"label_map does not know: 'blue nevus' \(1 rows\).*"
                                         r"None.*LABEL_MAPS"):  # fmt: skip
        load_derm7pt(tmp_path, label_map=label_map)
    site_map = {k: v for k, v in SITE_MAPS["derm7pt"].items() if k != "back"}
    with pytest.raises(ValueError, match=r"'location'.*site_map does not know: 'back'"):
        load_derm7pt(tmp_path, site_map=site_map)


def test_maps_are_editable_and_change_the_result(tmp_path, pixels):
    make_derm7pt(tmp_path, pixels)
    label_map = {**LABEL_MAPS["derm7pt"], "melanosis": "bkl", "blue nevus": None}
    site_map = {**SITE_MAPS["derm7pt"], "head neck": "scalp"}
    with pytest.warns(UserWarning, match=r"'blue nevus' \(1\)"):
        bunch = load_derm7pt(tmp_path, label_map=label_map, site_map=site_map)
    assert bunch.target.tolist() == ["nv", "mel", "bkl", "bcc", "bkl"]
    assert bunch.data["localization"].tolist()[1] == "scalp"
    assert LABEL_MAPS["derm7pt"]["melanosis"] is None  # the built-in map is unchanged


def test_built_in_maps_speak_ham10000():
    for mapping in LABEL_MAPS.values():
        assert set(mapping.values()) - {None} <= set(HAM10000_CLASSES)
    for mapping in SITE_MAPS.values():
        assert set(mapping.values()) - {None} <= set(HAM10000_SITES)


def test_a_folder_of_no_known_layout_lists_the_layouts(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no known dataset layout") as excinfo:
        load_lesion_folder(tmp_path)
    for name, files in LAYOUTS.items():
        assert name in str(excinfo.value) and files in str(excinfo.value)


@pytest.mark.skipif(not (REAL_DERM7PT / "meta.csv").is_file(), reason="Derm7pt share absent")
def test_real_derm7pt_counts():
    with pytest.warns(UserWarning, match=r"dropping 24 of 1011 rows"):
        derm = load_derm7pt(REAL_DERM7PT)
    assert derm.data.shape == (987, 4)
    assert derm.target_names.tolist() == ["bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert derm.data["age"].isna().all() and derm.data["sex"].notna().all()
    assert len(set(derm.groups)) == 987
    assert detect_layout(REAL_DERM7PT) == "derm7pt"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_command_line_reads_every_layout(tmp_path, pixels, capsys):
    from skinfuse._cli import main

    train = tmp_path / "train"
    lesions = make_synthetic_lesions(40, image_size=16, random_state=0, data_dir=tmp_path / "s")
    frame = lesions.frame.assign(image_id=[Path(p).stem for p in lesions.frame["image_path"]])
    (train / "images").mkdir(parents=True)
    for path in frame["image_path"]:
        Path(path).rename(train / "images" / Path(path).name)
    columns = ["lesion_id", "image_id", "dx", "age", "sex", "localization"]  # no dx_type
    frame[columns].to_csv(train / "metadata.csv", index=False)
    model = tmp_path / "tiny.skinfuse"
    assert main(["train", "--data", str(train), "--recipe", "tiny", "--out", str(model)]) == 0
    assert "ham10000 layout" in capsys.readouterr().out
    make_derm7pt(tmp_path / "derm", pixels)
    args = ["evaluate", str(model), "--data", str(tmp_path / "derm"), "--n-resamples", "10"]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "per-class report (5 images, 5 lesions)" in printed
    # Derm7pt's classes are a subset of the model's, it has no age: both said
    assert "classes present: 4 of the model's 7 (absent: akiec, df, vasc)" in printed
    missing = lesions.frame["age"].isna().mean()
    assert f"| age missing | {100 * missing:.0f}% | 100% |" in printed
    assert "age: wholly missing here (the training data had it)" in printed
    make_pad_ufes20(tmp_path / "pad", pixels)
    out = tmp_path / "pad.csv"
    args = ["predict", str(model), "--data", str(tmp_path / "pad"), "--layout", "pad_ufes20"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert pd.read_csv(out)["image_id"].str.startswith("FAKEPAT_").sum() == 6
    args = ["evaluate", str(model), "--data", str(tmp_path / "pad"), "--layout", "isic2019"]
    assert main(args) == 2
    assert "no ISIC 2019 layout" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert main(["evaluate", str(model), "--data", str(tmp_path / "other")]) == 2
    assert "no known dataset layout" in capsys.readouterr().err


def test_the_maps_in_the_docs_are_the_maps_in_the_code():
    from skinfuse.datasets import SEX_MAP

    page = (Path(__file__).parents[2] / "docs" / "own_data.md").read_text()
    for mapping in [*LABEL_MAPS.values(), *SITE_MAPS.values(), SEX_MAP]:
        for word, ham in mapping.items():
            assert f"| `{word}` | {f'`{ham}`' if ham else '*none*'} |" in page, word


def test_text_columns_of_a_read_table_are_objects(tmp_path):
    from skinfuse.datasets._files import read_csv_table

    csv = tmp_path / "t.csv"
    csv.write_text("image_id,dx,dx_type\na,nv,histo\nb,mel,\n")
    table = read_csv_table(csv)
    assert all(dtype == np.dtype(object) for dtype in table.dtypes)  # as before
    assert table["dx_type"].isna().tolist() == [False, True]
