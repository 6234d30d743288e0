"""Every estimator reports an unreadable image as one ValueError naming the file.

Decompression bombs, corrupt files and directories, while fitting and while predicting,
with images decoded in the main process (``num_workers=0``) and in DataLoader workers
(``num_workers=2``): the message is the one-line ``ValueError`` of
:func:`skinfuse.images.read_image`, never a worker's traceback.
"""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from skinfuse.encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
from skinfuse.fusion import FusionNetClassifier

SMALL = {
    FrozenCNNEncoder: dict(backbone="tiny_cnn", weights=None, image_size=8, batch_size=4),
    FineTunedCNNEncoder: dict(
        backbone="tiny_cnn", weights=None, image_size=8, max_epochs=1, batch_size=4,
        cross_fit=None, validation_fraction=0.0, random_state=0,
    ),
    ConvAutoencoderEncoder: dict(
        latent_dim=4, image_size=8, channels=(4,), max_epochs=1, batch_size=4, random_state=0,
    ),
    FusionNetClassifier: dict(
        backbone="tiny_cnn", weights=None, metadata=None, image_size=8, max_epochs=1,
        batch_size=4, validation_fraction=0.0, random_state=0,
    ),
}  # fmt: skip
ESTIMATORS = list(SMALL)


def _bomb_png(path, side=50_000):
    """A 60-byte PNG whose header declares side x side pixels (over Pillow's bomb limit)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def good(tmp_path):
    """Eight readable 10-px images of two classes."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        path = tmp_path / f"good_{i}.png"
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return np.array(paths, dtype=object), np.array(["a", "b"] * 4)


def _bad(tmp_path, kind):
    if kind == "bomb":
        return str(_bomb_png(tmp_path / "bad_bomb.png")), "too large to decode safely"
    if kind == "corrupt":
        path = tmp_path / "bad_corrupt.jpg"
        path.write_bytes(b"this is not a jpeg")
        return str(path), "cannot decode image file"
    path = tmp_path / "bad_folder.png"
    path.mkdir()
    return str(path), "is a directory, not an image file"


def _fit(estimator, X, y):
    if isinstance(estimator, FrozenCNNEncoder):
        return estimator.fit_transform(X)  # fit alone reads no image
    return estimator.fit(X, y)


def _check_one_line(excinfo, path, what):
    message = str(excinfo.value)
    assert excinfo.type is ValueError
    assert path in message and what in message
    assert "\n" not in message and "Traceback" not in message and "worker" not in message


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("kind", ["bomb", "corrupt"])
@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_fit_with_an_unreadable_image_names_it(Estimator, kind, num_workers, good, tmp_path):
    X, y = good
    path, what = _bad(tmp_path, kind)
    X = np.append(X, path)
    y = np.append(y, "b")
    estimator = Estimator(**SMALL[Estimator], num_workers=num_workers)
    with pytest.raises(ValueError) as excinfo:
        _fit(estimator, X, y)
    _check_one_line(excinfo, path, what)


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_predict_with_an_unreadable_image_names_it(Estimator, good, tmp_path):
    X, y = good
    path, what = _bad(tmp_path, "bomb")
    estimator = _fit(Estimator(**SMALL[Estimator], num_workers=2), X, y)
    if isinstance(estimator, np.ndarray):
        estimator = Estimator(**SMALL[Estimator], num_workers=2).fit(X)
    X_bad = np.append(X[:4], path)
    with pytest.raises(ValueError) as excinfo:
        if hasattr(estimator, "predict"):
            estimator.predict(X_bad)
        else:
            estimator.transform(X_bad)
    _check_one_line(excinfo, path, what)


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_fit_with_a_directory_as_image_names_it(Estimator, good, tmp_path):
    X, y = good
    path, what = _bad(tmp_path, "directory")
    X = np.append(X, path)
    y = np.append(y, "b")
    with pytest.raises(ValueError) as excinfo:
        _fit(Estimator(**SMALL[Estimator], num_workers=2), X, y)
    _check_one_line(excinfo, path, what)


def _truncated_jpeg(tmp_path):
    path = tmp_path / "bad_truncated.jpg"
    image = np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    Image.fromarray(image).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-40])
    return str(path), "cannot decode image file"


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("kind", ["bomb", "corrupt", "directory", "truncated"])
def test_device_decoding_names_an_unreadable_image_as_pillow_does(kind, num_workers, good,
                                                                   tmp_path):  # fmt: skip
    """FrozenCNNEncoder(decode="device") reads JPEG files itself: an unreadable one still
    gets the PIL path's one-line message."""
    X, _ = good
    jpeg = tmp_path / "good.jpg"
    Image.open(X[0]).save(jpeg, quality=90)
    path, what = _truncated_jpeg(tmp_path) if kind == "truncated" else _bad(tmp_path, kind)
    X = np.append(X, [str(jpeg), path])
    estimator = FrozenCNNEncoder(**SMALL[FrozenCNNEncoder], decode="device",
                                 num_workers=num_workers)  # fmt: skip
    with pytest.raises(ValueError) as excinfo:
        estimator.fit_transform(X)
    _check_one_line(excinfo, path, what)
