import re
import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinfuse.images import as_image_list, check_image_files, load_images, read_image, to_rgb_uint8


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


def test_read_png_roundtrip_exact(tmp_path, rgb):
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(str(path)), rgb)


@pytest.mark.parametrize("ext", ["jpg", "tif", "bmp"])
def test_read_other_formats(tmp_path, ext):
    yy, xx = np.mgrid[0:12, 0:16]
    smooth = np.dstack([yy * 20, xx * 15, 255 - xx * 15]).astype(np.uint8)
    path = tmp_path / f"a.{ext}"
    Image.fromarray(smooth).save(path)
    out = read_image(path)
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
    tol = 8 if ext == "jpg" else 0  # JPEG is lossy
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() <= tol


def test_grayscale_palette_rgba_to_rgb(tmp_path, rgb):
    gray = Image.fromarray(rgb[:, :, 0])
    gray.save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 16, 3)
    np.testing.assert_array_equal(out[:, :, 1], rgb[:, :, 0])
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (12, 16, 3)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


def test_16bit_png_scaled_to_8bit(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])


def test_exif_orientation_honoured(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)
    # after a 90° clockwise rotation the white half is on top
    assert out[:10].mean() > 200 and out[10:].mean() < 50


def test_resize_and_arrays():
    arr = np.zeros((10, 20), np.float32)
    arr[:, 10:] = 1.0
    out = read_image(arr, size=(5, 8))
    assert out.shape == (5, 8, 3)
    assert out[:, :3].max() == 0 and out[:, -3:].min() == 255
    assert read_image(np.zeros((4, 4, 1), np.uint8), size=2).shape == (2, 2, 3)


def test_to_rgb_uint8_conversions():
    assert to_rgb_uint8(np.array([[0.5]]))[0, 0, 0] == 128
    assert to_rgb_uint8(np.array([[300]], dtype=np.int64))[0, 0, 0] == 255
    assert to_rgb_uint8(np.ones((1, 1, 4), np.uint8) * 7).tolist() == [[[7, 7, 7]]]
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 5)))


def test_as_image_list_accepts_columns(tmp_path):
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    expected = paths
    assert as_image_list(paths) == expected
    assert as_image_list(np.array(paths, dtype=object)) == expected
    assert as_image_list(pd.Series(paths)) == expected
    assert as_image_list(pd.DataFrame({"image_path": paths})) == expected
    assert as_image_list(np.array(paths, dtype=object).reshape(-1, 1)) == expected
    assert len(as_image_list(np.zeros((2, 4, 4, 3), np.uint8))) == 2
    with pytest.raises(TypeError, match="single path"):
        as_image_list(paths[0])
    with pytest.raises(ValueError, match="one-column"):
        as_image_list(pd.DataFrame({"a": paths, "b": paths}))
    with pytest.raises(TypeError, match="item 1"):
        as_image_list([paths[0], 3.5])


def test_missing_files_reported_before_decoding(tmp_path, rgb):
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    paths = [str(good)] * 4 + [str(tmp_path / "gone1.png"), str(tmp_path / "gone2.png")]
    with pytest.raises(ValueError, match=r"gone1\.png.*2 of 6 paths are missing"):
        check_image_files(paths)
    with pytest.raises(ValueError, match=r"2 of 6 paths are missing"):
        load_images(paths, size=8)
    with pytest.warns(UserWarning, match="2 of 6"):
        ok = check_image_files(paths, on_error="warn")
    assert ok.tolist() == [True] * 4 + [False] * 2


def test_corrupt_and_truncated_files(tmp_path, rgb):
    good = tmp_path / "good.jpg"
    Image.fromarray(rgb).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a jpeg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"1 of 2 images could not be read: .*corrupt\.jpg"):
        load_images([str(good), str(corrupt)], size=8)
    with pytest.raises(ValueError, match="truncated.jpg"):
        read_image(truncated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, ok = load_images([str(good), str(corrupt), str(truncated)], size=8, on_error="skip")
    assert ok.tolist() == [True, False, False]
    assert pixels[1:].max() == 0 and pixels[0].max() > 0
    with pytest.warns(UserWarning, match="2 of 3 images could not be read"):
        load_images([str(good), str(corrupt), str(truncated)], size=8, on_error="warn")


def test_load_images_values(tmp_path):
    paths = []
    for i, value in enumerate([10, 200]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((9, 7, 3), value, np.uint8)).save(path)
        paths.append(str(path))
    pixels, ok = load_images(paths, size=4)
    assert pixels.shape == (2, 4, 4, 3) and ok.all()
    assert pixels[0].max() == 10 and pixels[1].min() == 200


def test_bad_arguments():
    with pytest.raises(ValueError, match="'on_error' parameter of load_images"):
        load_images([np.zeros((2, 2), np.uint8)], on_error="ignore")
    with pytest.raises(ValueError, match="'on_error' parameter of check_image_files"):
        check_image_files([np.zeros((2, 2), np.uint8)], on_error="ignore")
    with pytest.raises(ValueError, match="'size' parameter of read_image"):
        read_image(np.zeros((2, 2), np.uint8), size=0)
    with pytest.raises(ValueError, match=r"size must be a positive int or a \(height, width\)"):
        read_image(np.zeros((2, 2), np.uint8), size=(2, 0))
    with pytest.raises(ValueError, match="'resample' parameter of read_image"):
        read_image(np.zeros((2, 2), np.uint8), size=2, resample="cubic-ish")
    with pytest.raises(ValueError, match="'resample' parameter of load_images"):
        load_images([np.zeros((2, 2), np.uint8)], resample="cubic-ish")
    with pytest.raises(TypeError, match="'image' parameter of to_rgb_uint8"):
        to_rgb_uint8(3)
    with pytest.raises(ValueError, match="not found"):
        read_image("/nonexistent/x.png")


def _bomb_png(path, side=50_000):
    """A 60-byte PNG whose header declares side x side pixels (over Pillow's bomb limit)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_value_error_naming_the_file(tmp_path, rgb):
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    bomb = _bomb_png(tmp_path / "bomb.png")
    paths = [str(good), str(bomb)]
    with pytest.raises(ValueError, match=r"bomb\.png is too large to decode safely.*MAX_IMAGE"):
        read_image(bomb)
    with pytest.raises(ValueError, match=r"1 of 2 images could not be read: .*bomb\.png"):
        load_images(paths, size=8)
    with pytest.warns(UserWarning, match=r"1 of 2 images could not be read: .*bomb\.png"):
        pixels, ok = load_images(paths, size=8, on_error="warn")
    assert ok.tolist() == [True, False] and pixels[1].max() == 0 and pixels[0].max() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, ok = load_images(paths, size=8, on_error="skip")
    assert ok.tolist() == [True, False]


def test_directory_is_reported_as_a_directory_not_as_missing(tmp_path, rgb):
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    paths = [str(good), str(folder), str(tmp_path / "gone.png")]
    with pytest.raises(ValueError, match="directory, not an image file: .*folder.png") as exc:
        read_image(folder)
    assert "not found" not in str(exc.value)
    with pytest.raises(ValueError) as exc:
        check_image_files(paths)
    message = str(exc.value)
    assert re.search(r"not found: \S*gone\.png; 1 of 3 paths are missing", message)
    assert re.search(r"directory, not an image file: \S*folder\.png; 1 of 3 paths", message)
    assert "folder.png" not in message.split(";")[0]  # the directory is not listed as missing
    with pytest.warns(UserWarning, match="is a directory"):
        assert check_image_files(paths, on_error="warn").tolist() == [True, False, False]
    with pytest.warns(UserWarning, match=r"folder\.png: is a directory, not an image file"):
        pixels, ok = load_images(paths, size=8, on_error="warn")
    assert ok.tolist() == [True, False, False] and pixels[1:].max() == 0
    with pytest.raises(ValueError, match="is a directory"):
        load_images(paths, size=8)


def test_decoder_errors_name_the_file(tmp_path):
    # Pillow's PPM reader raises a bare ValueError ("invalid literal for int()") on this header.
    bad = tmp_path / "bad.ppm"
    bad.write_bytes(b"P6\n8 x8\n255\n" + bytes(192))
    with pytest.raises(ValueError, match=r"cannot decode image file \S*bad\.ppm: invalid literal"):
        read_image(bad)


def test_unreadable_file_names_the_file(tmp_path, rgb, monkeypatch):
    path = tmp_path / "locked.png"
    Image.fromarray(rgb).save(path)

    def denied(fp, *args, **kwargs):  # what open() raises without read permission (not root)
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ValueError, match=r"cannot read image file \S*locked\.png: permission"):
        read_image(path)
    with pytest.warns(UserWarning, match=r"locked\.png: cannot read image file"):
        _, ok = load_images([str(path)], size=8, on_error="warn")
    assert ok.tolist() == [False]
