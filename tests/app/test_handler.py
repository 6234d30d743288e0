"""The page's handler without a server: one upload in, the result (or a message) out."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from skinfuse._app import InputError, ModelPage, _handler, analyse


@pytest.fixture(scope="module")
def page(app_models):
    return ModelPage.from_file(app_models[0])


@pytest.fixture(scope="module")
def plain_page(app_models):
    return ModelPage.from_file(app_models[1])


def _decoded(data_url):
    head, payload = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))


def test_form_lists_the_models_own_fields_categories_and_card(page):
    form = page.form()
    fields = {f["name"]: f for f in form["fields"]}
    assert list(fields) == ["age", "sex", "localization"]
    assert fields["age"]["min"] == 0 and fields["age"]["max"] == 120
    assert set(fields["sex"]["choices"]) == {"female", "male"}
    assert "back" in fields["localization"]["choices"]
    assert "not a medical device" in form["notice"]
    assert form["coverage"] == 0.9
    assert form["card"]["Prediction sets"].startswith("90 %")
    assert form["card"]["Training data"] == "60 images"


@pytest.mark.parametrize("fields", [None, {"age": "55", "sex": "male", "localization": "back"},
                                    {"age": "", "sex": "female"}])  # fmt: skip
def test_result_with_or_without_metadata(page, fields, lesion_png):
    result = analyse(page, lesion_png(40, 50), fields)
    proba = [p["probability"] for p in result["probabilities"]]
    assert sum(proba) == pytest.approx(1.0, abs=1e-6)
    assert proba == sorted(proba, reverse=True)
    assert result["top"] == result["probabilities"][0]["name"]
    assert {p["class"] for p in result["probabilities"]} == set(page.classes)
    assert "melanoma" in {p["name"] for p in result["probabilities"]}  # class names in words
    overlay, shown = _decoded(result["overlay"]), _decoded(result["image"])
    assert overlay.shape == shown.shape == (40, 50, 3)
    assert not np.array_equal(overlay, shown)  # the map is drawn over the image
    names = [p["name"] for p in result["probabilities"]]
    assert set(result["prediction_set"]) <= set(names)
    expected = "melanoma" in result["prediction_set"] or len(result["prediction_set"]) != 1
    assert result["refer"] is expected


def test_metadata_changes_the_probabilities_as_the_model_does(page, lesion_png):
    import pandas as pd

    fields = {"age": "70", "sex": "male", "localization": "back"}
    result = analyse(page, lesion_png(), fields, overlay=False)
    image = np.asarray(Image.open(io.BytesIO(lesion_png())).convert("RGB"))
    X = pd.DataFrame({"image_path": [image], "age": [70.0], "sex": ["male"],
                      "localization": ["back"]})  # fmt: skip
    expected = page.model.predict_proba(X)[0]
    got = {p["class"]: p["probability"] for p in result["probabilities"]}
    assert [got[c] for c in page.classes] == pytest.approx(expected.tolist())


def test_a_model_without_sets_has_no_set_and_no_referral(plain_page, lesion_png):
    result = analyse(plain_page, lesion_png(), {}, overlay=False)
    assert result["prediction_set"] is None and result["refer"] is None
    assert result["overlay"] is None
    card = plain_page.form()["card"]
    assert card["Calibration"].startswith("none") and card["Prediction sets"] == "none"


def test_a_large_image_is_shown_at_most_max_side(page, lesion_png):
    result = analyse(page, lesion_png(600, 700), {})
    assert max(result["height"], result["width"]) == _handler.MAX_SIDE
    assert _decoded(result["overlay"]).shape[:2] == (result["height"], result["width"])


def _bomb_png(side):
    """A 1-pixel PNG whose header claims ``side x side`` pixels (a decompression bomb's
    header: the size is read before any pixel)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "fields", "needle"),
    [
        (b"", {}, "no image"),
        (b"this is text, not a JPEG\n" * 10, {}, "not an image"),
        ("truncated", {}, "truncated"),
        (_bomb_png(9_000), {}, "decompression-bomb guard"),
        (_bomb_png(100_000), {}, "too large to decode safely"),
        ("good", {"age": "150"}, "age 150 is out of range"),
        ("good", {"age": "-1"}, "out of range"),
        ("good", {"age": "old"}, "must be a number"),
        ("good", {"localization": "moon"}, "'moon' is not one the model knows"),
        ("good", {"sex": "x"}, "choose one of female, male"),
        ("good", {"colour": "red"}, "does not read colour"),
    ],
)
def test_bad_input_gives_a_message(page, lesion_png, data, fields, needle):
    if data == "good":
        data = lesion_png()
    elif data == "truncated":
        data = lesion_png(64, 64)[:300]
    with pytest.raises(InputError, match=needle):
        analyse(page, data, fields)


def test_an_upload_over_the_size_limit_is_refused_before_decoding(page, monkeypatch, lesion_png):
    monkeypatch.setattr(_handler, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(InputError, match="reads images up to"):
        analyse(page, lesion_png(), {})
