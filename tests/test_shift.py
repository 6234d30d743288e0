"""skinfuse.metrics.dataset_summary and shift_report on tiny synthetic folders: sizes read
from the file headers, shares by hand, unseen categories and missing columns."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from skinfuse.metrics import dataset_summary, shift_report


@pytest.fixture
def folder(tmp_path):
    """Five images: 40x30 and 30x40 (4:3), 20x20 (square), 50x20 (other), one corrupt."""
    paths = []
    for k, (size, fmt) in enumerate(
        [((40, 30), "PNG"), ((30, 40), "JPEG"), ((20, 20), "PNG"), ((50, 20), "PNG")]
    ):
        path = tmp_path / f"img{k}.{fmt.lower()}"
        Image.new("RGB", size, (120, 80, 60)).save(path, format=fmt)
        paths.append(str(path))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    return [*paths, str(broken)]


def test_summary_values_from_headers_without_decoding(folder, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    X = pd.DataFrame(
        {
            "image_path": folder,
            "age": [40.0, np.nan, 60.0, 80.0, np.nan],
            "sex": ["male", "female", "unknown", "male", None],
            "localization": ["back", "back", "face", "acral", "back"],
        }
    )
    y = ["nv", "nv", "mel", "nv", "bcc"]
    proba = [[0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
    summary = dataset_summary(X, y, proba, classes=["bcc", "mel", "nv"])
    assert summary["n_images"] == 5
    images = summary["images"]
    assert images["n_read"] == 4 and images["share_unreadable"] == 0.2
    # medians of the widths 40, 30, 20, 50 and of the heights 30, 40, 20, 20
    assert (images["median_width"], images["median_height"]) == (35, 25)
    assert (images["min_side"], images["max_side"]) == (20, 50)
    assert images["share_4_3"] == 0.5 and images["share_square"] == 0.25
    assert images["share_other_ratio"] == 0.25 and images["share_portrait"] == 0.25
    assert images["formats"] == {"PNG": 0.75, "JPEG": 0.25}
    age, sex, site = (summary["metadata"][c] for c in ("age", "sex", "localization"))
    assert age == {"missing": 0.4, "kind": "numeric", "mean": 60.0, "min": 40.0, "max": 80.0}
    assert sex == {"missing": 0.4, "kind": "categorical", "categories": {"male": 2 / 3,
                                                                           "female": 1 / 3}}  # fmt: skip
    assert site["missing"] == 0 and site["categories"] == {"back": 0.6, "face": 0.2, "acral": 0.2}
    assert summary["classes"] == {"bcc": 0.2, "mel": 0.2, "nv": 0.6}  # in the order of classes
    assert summary["mean_confidence"] == pytest.approx((0.7 + 0.6 + 0.8 + 0.5 + 0.4) / 5)
    assert summary["predicted"] == {"bcc": 0.2, "mel": 0.2, "nv": 0.6}
    # paths alone: images only, no metadata, no classes
    alone = dataset_summary(np.asarray(folder[:3]))
    assert alone["metadata"] == {} and "classes" not in alone
    assert alone["images"]["median_width"] == 30 and alone["images"]["share_square"] == 1 / 3


def test_shift_report_names_unseen_categories_and_missing_columns(folder):
    train = dataset_summary(
        pd.DataFrame({"image_path": folder[:2], "age": [50.0, 70.0], "sex": ["male", "female"],
                      "localization": ["back", "face"]}),
        ["nv", "mel"],
    )  # fmt: skip
    data = dataset_summary(
        pd.DataFrame({"image_path": folder[2:4], "age": [np.nan, np.nan],
                      "localization": ["acral", "back"]}),
        ["nv", "bcc"], [[0.1, 0.9], [0.8, 0.2]], classes=["bcc", "nv"],
    )  # fmt: skip
    table = shift_report(data, train)
    assert table.attrs["unseen_categories"] == {"localization": ["acral"]}
    assert table.attrs["missing_columns"] == ["age", "sex"]  # all NaN here, absent here
    assert table.attrs["new_classes"] == ["bcc"]
    assert list(table.columns) == ["training", "data"]
    assert table.loc["images"].tolist() == ["2", "2"]
    assert table.loc["median size (WxH)"].tolist() == ["35x35", "35x20"]
    assert table.loc["square / 4:3 / other"].tolist() == ["0% / 100% / 0%", "50% / 0% / 50%"]
    assert table.loc["age missing"].tolist() == ["0%", "100%"]
    assert table.loc["age mean"].tolist() == ["60.0", ""]
    assert table.loc["sex missing"].tolist() == ["0%", ""]
    assert table.loc["class mel"].tolist() == ["50%", ""]
    assert table.loc["class bcc"].tolist() == ["", "50%"]
    assert table.loc["mean confidence"].tolist() == ["", "0.850"]
    alone = shift_report(data)
    assert list(alone.columns) == ["data"] and alone.attrs["unseen_categories"] == {}


def test_summary_refuses_inconsistent_input(folder):
    X = pd.DataFrame({"image_path": folder[:2]})
    with pytest.raises(ValueError, match="proba needs classes"):
        dataset_summary(X, proba=[[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        dataset_summary(X, proba=[[0.5, 0.5], [0.5, 0.5]], classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="y has 3 labels for 2 images"):
        dataset_summary(X, ["a", "b", "c"])
    with pytest.raises(ValueError, match="no 'image_path' column"):
        dataset_summary(pd.DataFrame({"path": folder[:2]}))
