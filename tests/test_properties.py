"""Property-based tests: any input ends in a result or in a documented error, never a crash.

- Metadata: any DataFrame with the columns age, sex, localization, whatever its values and
  dtypes, given to the metadata preprocessor gives a finite float matrix whose width is
  the number of feature names, or a ``ValueError``/``TypeError`` with a message.
- Images: any bytes written as a ``.jpg``/``.png`` file, given to ``read_image`` and
  ``load_images``, give an image or a ``ValueError`` naming the file.

Runs are reproducible: derandomized, no example database, a fixed number of examples.
"""

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skinfuse.images import load_images, read_image
from skinfuse.metadata import make_metadata_preprocessor

FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ------------------------------------------------------------------------------------------
# metadata

SCALARS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e308, -1e308, 5e-324, 1e12, 119.5, 120.5, 480.0]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 0, 1, 2]),
    st.text(max_size=6),
    st.sampled_from(["", " ", "\t\n", "BACK", " back ", "Face", "male", "FEMALE", "é", "ß"]),
    st.sampled_from([None, np.nan, pd.NA, pd.NaT, True, False]),
    st.binary(max_size=3),
)
NULLABLE = ["Int64", "Float64", "string", "boolean", "category", "object"]


AGES = st.one_of(st.floats(0, 120), st.integers(0, 120), st.none(), st.just(np.nan))
NAMES = st.one_of(
    st.sampled_from(["male", "female", "unknown", "back", "face", "lower extremity"]),
    st.sampled_from(["BACK", " back ", "Face", "\tFACE\n", "", " "]),
    st.text(max_size=5),
    st.sampled_from([None, np.nan, pd.NA]),
)


@st.composite
def columns(draw, n, plausible):
    """A column of ``n`` values: ``plausible`` ones (``AGES`` or ``NAMES``) most of the
    time, else any mixture of ``SCALARS``; as objects, NumPy or (nullable) pandas dtypes."""
    kind = draw(st.sampled_from(["plausible"] * 6 + ["mixed", "floats", "ints", "typed", "typed"]))
    if kind == "plausible":
        return pd.Series(draw(st.lists(plausible, min_size=n, max_size=n)), dtype=object)
    if kind == "mixed":
        return pd.Series(draw(st.lists(SCALARS, min_size=n, max_size=n)), dtype=object)
    if kind == "floats":
        values = draw(st.lists(st.floats() | st.just(np.nan), min_size=n, max_size=n))
        return pd.Series(values, dtype="float64")
    if kind == "ints":
        values = draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
        return pd.Series(values, dtype="int64")
    values = draw(st.lists(plausible | SCALARS, min_size=n, max_size=n))
    dtype = draw(st.sampled_from(NULLABLE))
    try:
        return pd.Series(values, dtype=object).astype(dtype)
    except (TypeError, ValueError, OverflowError):  # pandas refuses this cast: keep objects
        return pd.Series(values, dtype=object)


@st.composite
def metadata_frames(draw):
    n = draw(st.integers(min_value=0, max_value=8))
    frame = pd.DataFrame(
        {
            "age": draw(columns(n, AGES)),
            "sex": draw(columns(n, NAMES)),
            "localization": draw(columns(n, NAMES)),
        }
    )
    return frame.convert_dtypes() if draw(st.booleans()) else frame


def _well_formed():
    return pd.DataFrame(
        {
            "age": [40.0, np.nan, 55.0, 70.0],
            "sex": ["male", "female", None, "male"],
            "localization": ["back", "face", np.nan, "trunk"],
        }
    )


def _check_result(model, X, out):
    names = model.get_feature_names_out()
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.shape == (len(X), len(names))
    assert np.isfinite(out).all()


def _normalised(column):
    """The categories the preprocessor should find in a column it accepted."""
    values = [v.strip().lower() if isinstance(v, str) else None for v in column]
    values = [None if v == "" else v for v in values]
    return {v if v is not None else "missing" for v in values}


def _run(action):
    """The result of ``action()``, or None for a documented error; any other exception fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = action()
        except (ValueError, TypeError) as exc:
            assert str(exc), f"{type(exc).__name__} without a message"
            result = None
    unexpected = [w for w in caught if not issubclass(w.category, UserWarning)]
    assert not unexpected, [f"{w.category.__name__}: {w.message}" for w in unexpected]
    return result


@FAST
@given(X=metadata_frames())
def test_metadata_preprocessor_fits_any_frame_or_says_why(X):
    model = make_metadata_preprocessor()
    out = _run(lambda: model.fit_transform(X))
    if out is None:
        return
    _check_result(model, X, out)
    names = model.get_feature_names_out().tolist()
    for column in ("sex", "localization"):
        expected = _normalised(X[column])
        if expected == {"missing"}:
            continue  # no observed value: sklearn's imputer drops the column, with a warning
        found = {n[len(column) + 1 :] for n in names if n.startswith(column + "_")}
        assert found == expected, column
    again = _run(lambda: model.transform(X))
    np.testing.assert_array_equal(again, out)


@FAST
@given(X=metadata_frames())
def test_fitted_metadata_preprocessor_transforms_any_frame_or_says_why(X):
    model = make_metadata_preprocessor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(_well_formed())
    out = _run(lambda: model.transform(X))
    if out is not None:
        _check_result(model, X, out)


# ------------------------------------------------------------------------------------------
# images


def _valid_image(fmt):
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


VALID = {".png": _valid_image("PNG"), ".jpg": _valid_image("JPEG")}


def _declaring(width, height):
    """The valid PNG with a header declaring another size (CRC recomputed)."""
    png = VALID[".png"]
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF) + png[33:]


# found by these tests (both crashed read_image before issue 11's fix), kept as examples
BOMB = _declaring(20000, 20000)  # PIL's DecompressionBombError escaped
# read_image raised ValueError without the file name:
SHORT_IHDR = VALID[".png"][:11] + b"\x01" + VALID[".png"][12:]
HEADERS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00"]


@st.composite
def image_bytes(draw):
    """Random bytes, a known header followed by random bytes, or a valid small image
    with a few bytes changed, cut short or extended."""
    kind = draw(st.sampled_from(["random", "header", "mutated", "truncated", "size"]))
    if kind == "size":  # a valid PNG whose header declares another size (up to 65535²)
        return _declaring(*(draw(st.sampled_from([1, 7, 64, 20000, 65535])) for _ in "wh"))
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "header":
        return draw(st.sampled_from(HEADERS)) + draw(st.binary(max_size=64))
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("bytes")


def _write(folder, suffix, data):
    path = os.path.join(folder, "case" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


@FAST
@given(data=image_bytes(), suffix=st.sampled_from([".jpg", ".png"]))
@example(data=BOMB, suffix=".png")
@example(data=SHORT_IHDR, suffix=".png")
def test_read_image_of_any_bytes_gives_an_image_or_names_the_file(folder, data, suffix):
    path = _write(folder, suffix, data)
    try:
        image = read_image(path, size=8)
    except ValueError as exc:
        assert path in str(exc)
    else:
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8


@FAST
@given(
    data=image_bytes(),
    suffix=st.sampled_from([".jpg", ".png"]),
    on_error=st.sampled_from(["raise", "skip", "warn"]),
)
@example(data=BOMB, suffix=".png", on_error="skip")
def test_load_images_of_any_bytes_gives_images_or_names_the_file(folder, data, suffix, on_error):
    path = _write(folder, suffix, data)
    good = _write(folder, "-good.png", VALID[".png"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pixels, ok = load_images([good, path], size=8, on_error=on_error)
        except ValueError as exc:
            assert on_error == "raise" and path in str(exc)
            return
    assert pixels.shape == (2, 8, 8, 3) and pixels.dtype == np.uint8 and ok[0]
    if not ok[1]:
        assert not pixels[1].any()  # left black
        named = [w for w in caught if path in str(w.message)]
        assert bool(named) == (on_error == "warn")
