"""Device decoding (skinfuse._nn.decode) against Pillow's path (skinfuse.images._read_image).

On the CPU, torchvision decodes with libjpeg-turbo: the same code path as nvjpeg on CUDA
apart from the decoder itself (the CUDA test at the end checks that one where it can).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from skinfuse._nn.decode import (
    DeviceDecodedBatches,
    EncodedJPEG,
    decode_batch,
    decodes_on_device,
    read_item,
)
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.images import _read_image


def _pil(paths, size):
    return np.stack([_read_image(p, size=size) for p in paths]).transpose(0, 3, 1, 2)


def _diff(got, ref):
    d = np.abs(got.cpu().numpy().astype(np.int16) - ref.astype(np.int16))
    return d.max(), d.mean()


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Eight 128-px synthetic lesions as JPEG files (quality 95)."""
    folder = tmp_path_factory.mktemp("jpegs")
    bunch = make_synthetic_lesions(
        n_samples=8, image_size=128, image_format="jpg", data_dir=folder, random_state=0
    )
    return bunch.data["image_path"].tolist()


# (size, largest |difference|, largest mean |difference|), measured on these images
# (0, 1, 1, 17, 7, 8 levels; means 0.00, 0.18, 0.23, 1.20, 0.53, 0.59) and rounded up.
# 128 -> 128 is a plain decode (libjpeg-turbo against Pillow's libjpeg: identical here);
# 100 and 160 px resize the full image; at 64, 48 and 32 px Pillow decodes at 1/2, 1/2 and
# 1/4 scale (``draft``), which the device path mirrors by averaging blocks of pixels: close
# on average, but the scaled IDCT is not a block average, so sharp edges differ most at an
# exact 2x (64 px: no resize after the reduced decode).
@pytest.mark.parametrize(
    ("size", "max_diff", "mean_diff"),
    [(128, 1, 0.05), (100, 2, 0.25), (160, 2, 0.3), (64, 20, 1.5), (48, 9, 0.7), (32, 10, 0.7)],
)
def test_jpeg_pixels_follow_pillow(jpegs, size, max_diff, mean_diff):
    got = decode_batch(jpegs, size, "cpu")
    assert got.dtype == torch.uint8 and got.shape == (len(jpegs), 3, size, size)
    largest, mean = _diff(got, _pil(jpegs, size))
    assert largest <= max_diff and mean <= mean_diff, (largest, mean)


def test_without_the_draft_mirror_small_sizes_differ_more(jpegs, monkeypatch):
    """The block average is what keeps 32 px close to Pillow (a test that can fail)."""
    import skinfuse._nn.decode as decode

    ref = _pil(jpegs, 32)
    _, with_mirror = _diff(decode_batch(jpegs, 32, "cpu"), ref)
    monkeypatch.setattr(decode.F, "avg_pool2d", lambda x, s, ceil_mode: x)
    _, without = _diff(decode_batch(jpegs, 32, "cpu"), ref)
    assert without > 1.5 * with_mirror


def _write(path, array, **options):
    Image.fromarray(array).save(path, **options)
    return str(path)


def _pattern(h=24, w=40):
    """An image that looks different after any flip or turn."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[: h // 3, : w // 4] = (250, 30, 30)
    img[-h // 4 :, w // 2 :] = (30, 30, 250)
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(_pattern()).save(path, quality=95, exif=exif)
    record = read_item(str(path), 16)
    assert isinstance(record, EncodedJPEG) and record.orientation == orientation
    largest, mean = _diff(decode_batch([str(path)], 16, "cpu"), _pil([str(path)], 16))
    assert largest <= 3 and mean <= 0.6, (largest, mean)


def test_grayscale_and_progressive_jpegs_are_decoded_on_the_device(tmp_path):
    gray = _write(tmp_path / "gray.jpg", _pattern()[:, :, 0], quality=95)
    progressive = _write(tmp_path / "prog.jpg", _pattern(), quality=95, progressive=True)
    for path in (gray, progressive):
        assert isinstance(read_item(path, 16), EncodedJPEG)
        largest, mean = _diff(decode_batch([path], 16, "cpu"), _pil([path], 16))
        assert largest <= 3 and mean <= 0.6, (path, largest, mean)
    got = decode_batch([gray], 16, "cpu")[0]
    assert torch.equal(got[0], got[1]) and torch.equal(got[0], got[2])


def test_other_images_go_through_pillow_unchanged(tmp_path):
    img = _pattern()
    png = _write(tmp_path / "a.png", img)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(img).convert("CMYK").save(cmyk, quality=95)
    whole = _write(tmp_path / "whole.jpg", img, quality=95)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:-2])
    items = [png, str(cmyk), img, img[:, :, 0]]
    for item in items:
        assert isinstance(read_item(item, 16), torch.Tensor)  # decoded by Pillow already
    assert isinstance(read_item(whole, 16), EncodedJPEG)
    got = decode_batch([*items, whole], 16, "cpu").numpy()
    ref = np.stack([_read_image(item, size=16) for item in items]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got[:4], ref)
    # Pillow's verdict on a truncated JPEG, word for word
    with pytest.raises(ValueError) as pil_error:
        _read_image(str(truncated), size=16)
    with pytest.raises(ValueError) as device_error:
        decode_batch([whole, str(truncated)], 16, "cpu")
    assert str(device_error.value) == str(pil_error.value)
    assert str(truncated) in str(device_error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"this is not a jpeg", "cannot decode image file"), (None, "image file not found")],
)
def test_unreadable_files_raise_pillows_error(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as excinfo:
        decode_batch([str(path)], 16, "cpu")
    assert str(path) in str(excinfo.value)


def test_a_jpeg_the_decoder_refuses_falls_back_to_pillow(jpegs, monkeypatch):
    """nvjpeg refuses some JPEGs (e.g. unsupported encodings): that image alone goes to
    Pillow and comes out with Pillow's exact pixels; the others stay on the device."""
    import torchvision.io

    refused = read_item(jpegs[1], 32).data
    real = torchvision.io.decode_jpeg
    calls = []

    def picky(data, **kwargs):
        calls.append(data)
        if isinstance(data, list) and any(d is refused for d in data):
            raise RuntimeError("batch spoiled")
        if data is refused or (torch.is_tensor(data) and torch.equal(data, refused)):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    got = decode_batch(jpegs[:3], 32, "cpu").numpy()
    ref = _pil(jpegs[:3], 32)
    np.testing.assert_array_equal(got[1], ref[1])
    assert not np.array_equal(got[0], ref[0])  # decoded by torchvision: not bit-identical
    assert len(calls) == 3


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_in_order_with_and_without_workers(jpegs, tmp_path, num_workers):
    png = _write(tmp_path / "x.png", _pattern())
    items = [*jpegs, png, *jpegs[:3]]
    batches = DeviceDecodedBatches(items, 32, batch_size=4, device="cpu", num_workers=num_workers)
    assert batches.n_rows == len(items) and len(batches) == 3
    got = torch.cat(list(batches))
    torch.testing.assert_close(got, decode_batch(items, 32, "cpu"), rtol=0, atol=0)


def test_decodes_on_device():
    assert decodes_on_device("device", "cpu") and decodes_on_device("auto", "cuda:1")
    assert not decodes_on_device("auto", "cpu") and not decodes_on_device("auto", "mps")
    assert not decodes_on_device("pil", "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_follows_the_cpu_decoder(jpegs, tmp_path):
    png = _write(tmp_path / "x.png", _pattern())
    items = [*jpegs, png]
    for size in (32, 128, 224):
        got = decode_batch(items, size, "cuda")
        assert got.device.type == "cuda"
        largest, mean = _diff(got, _pil(items, size))
        assert largest <= 8 and mean <= 1.0, (size, largest, mean)
