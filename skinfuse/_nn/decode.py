"""Decoding JPEG files in batches on the device (nvjpeg on CUDA), resized there too.

The CPU reads the files' bytes (cheap, in DataLoader workers); torchvision decodes a
batch of JPEGs at once on ``device`` (``torchvision.io.decode_jpeg``: nvjpeg on CUDA,
libjpeg-turbo on the CPU) and the batch is resized on ``device``. The pixels follow
:func:`skinfuse.images._read_image` (PIL) closely, not to the bit:

- PIL's ``draft`` (a JPEG decoded at 1/2, 1/4 or 1/8 scale when the target is that much
  smaller) is mirrored by averaging blocks of that many pixels before the resize;
- the resize is bilinear and antialiased, like PIL's ``resize((S, S), BILINEAR)``;
- the EXIF orientation is applied (a flip or a quarter turn of the resized image).

Everything else goes through PIL itself, so that it decodes, and fails, exactly as
:func:`~skinfuse.images._read_image` does: image arrays, files that are not JPEG
(PNG, TIFF...), JPEGs in CMYK or whose bytes do not end with the end-of-image marker
(truncated files), JPEGs over Pillow's decompression-bomb limit, and any JPEG the device
decoder refuses (one by one, after the batch failed).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..images import _read_image
from .data import loader_settings, unwrap_worker_errors
from .views import apply_view

#: ``decode`` options of the encoders that have it.
DECODE_OPTIONS = ("auto", "pil", "device")

#: EXIF orientation -> the view (:mod:`skinfuse._nn.views`) that PIL's ``exif_transpose`` gives.
_ORIENTATION = {
    2: "hflip",
    3: "rot180",
    4: "vflip",
    5: "transpose",
    6: "rot270",
    7: "antitranspose",
    8: "rot90",
}
_EXIF_ORIENTATION = 0x0112
#: images resized at once (a float copy of full-size images is made for them)
_RESIZE_GROUP = 16


def decodes_on_device(decode: str, device) -> bool:
    """Whether ``decode`` (``"auto"``, ``"pil"``, ``"device"``) decodes on ``device``:
    ``"auto"`` does on CUDA only."""
    return decode == "device" or (decode == "auto" and str(device).startswith("cuda"))


@dataclass
class EncodedJPEG:
    """A JPEG file's bytes (a 1-D uint8 tensor) and its EXIF orientation (1: none)."""

    path: str
    data: torch.Tensor
    orientation: int = 1


def read_item(item, image_size):
    """What the device decoder needs of one image: an :class:`EncodedJPEG` for a JPEG file
    it can decode, else the image decoded by PIL, a uint8 ``(3, S, S)`` tensor (which
    raises :func:`~skinfuse.images._read_image`'s ``ValueError`` for an unreadable file)."""
    if isinstance(item, (str, os.PathLike)):
        encoded = _read_jpeg(os.fspath(item))
        if encoded is not None:
            return encoded
    return _pil(item, image_size)


def _pil(item, image_size):
    return torch.from_numpy(_read_image(item, size=image_size)).permute(2, 0, 1)


def _read_jpeg(path):
    """The file's bytes if it is a JPEG the device decoder should get, else None."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:  # PIL's path says what is wrong
        return None
    if not data.startswith(b"\xff\xd8\xff") or not data[-4096:].rstrip(b"\0").endswith(b"\xff\xd9"):
        return None  # not a JPEG, or truncated: PIL decides (and names the problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # the header only, nothing decoded
                if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                    return None
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # anything odd goes to PIL, which raises or decodes it
        return None
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return EncodedJPEG(path, tensor, orientation if orientation in _ORIENTATION else 1)


def decode_batch(items, image_size, device):
    """Images decoded and resized on ``device``: a uint8 tensor ``(n, 3, S, S)`` there.

    Parameters
    ----------
    items : list
        Paths or image arrays, or what :func:`read_item` made of them (from a reader).
    image_size : int
        The side ``S`` of the square output.
    device : str or torch.device
        Where JPEGs are decoded and resized (``"cuda"``: nvjpeg; ``"cpu"``: libjpeg-turbo).

    Returns
    -------
    pixels : torch.Tensor of shape (n, 3, S, S), dtype uint8, on ``device``
    """
    device = torch.device(device)
    size = int(image_size)
    records = [r if isinstance(r, (EncodedJPEG, torch.Tensor)) else read_item(r, size)
               for r in items]  # fmt: skip
    out = torch.empty((len(records), 3, size, size), dtype=torch.uint8, device=device)
    jpegs = []
    for i, record in enumerate(records):
        if isinstance(record, EncodedJPEG):
            jpegs.append(i)
        else:
            out[i] = record.to(device, non_blocking=True)
    decoded = _decode_jpegs([records[i].data for i in jpegs], device)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in zip(jpegs, decoded):
        if image is None:  # refused by the device decoder: PIL decodes it, or names the error
            out[i] = _pil(records[i].path, size).to(device)
        else:
            by_shape.setdefault(tuple(image.shape[-2:]), []).append(i)
    position = {i: k for k, i in enumerate(jpegs)}
    for members in by_shape.values():
        for start in range(0, len(members), _RESIZE_GROUP):
            group = members[start : start + _RESIZE_GROUP]
            batch = torch.stack([decoded[position[i]] for i in group])
            resized = resize_like_pil(batch, size)
            if all(records[i].orientation == 1 for i in group):  # one copy for the group
                first = group[0]
                if group == list(range(first, first + len(group))):  # the usual case
                    out[first : first + len(group)] = resized  # no index tensor to copy
                else:
                    out[torch.tensor(group, device=device)] = resized
                continue
            for i, image in zip(group, resized):
                view = _ORIENTATION.get(records[i].orientation)
                out[i] = image if view is None else apply_view(image, view)
    return out


def _decode_jpegs(datas, device):
    """Each JPEG decoded to a uint8 RGB ``(3, H, W)`` tensor on ``device``, or None where the
    decoder refused it. On CUDA the whole batch at once first (nvjpeg's batched decoder),
    then, if it failed, one by one."""
    if not datas:
        return []
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data):
        with warnings.catch_warnings():  # deprecated in torchvision 0.29 for TorchCodec
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    if device.type == "cuda" and len(datas) > 1:
        try:
            return list(decode(datas))
        except (RuntimeError, TypeError):  # TypeError: torchvision < 0.19 decodes no lists
            pass  # one image spoils the batch: find it
    out = []
    for data in datas:
        try:
            out.append(decode(data))
        except RuntimeError:
            out.append(None)
    return out


def resize_like_pil(images, size):
    """uint8 images ``(n, C, H, W)`` resized to ``(n, C, size, size)`` as
    :func:`~skinfuse.images._read_image` resizes a JPEG: blocks of ``s x s`` pixels averaged
    where PIL's ``draft`` would decode at ``1/s`` scale, then bilinear, antialiased."""
    h, w = images.shape[-2:]
    scale = min(w // size, h // size)  # PIL's JpegImageFile.draft
    s = next((s for s in (8, 4, 2) if scale >= s), 1)
    if s == 1 and (h, w) == (size, size):
        return images
    x = images.float()
    if s > 1:
        x = F.avg_pool2d(x, s, ceil_mode=True)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
    return x.round_().clamp_(0, 255).to(torch.uint8)


class _EncodedImages(Dataset):
    """:func:`read_item` of each image: what a reader hands to :func:`decode_batch`."""

    def __init__(self, items, image_size):
        self.items = items
        self.image_size = image_size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return read_item(self.items[i], self.image_size)


def _as_list(batch):
    return batch


class DeviceDecodedBatches:
    """Batches of images decoded on ``device`` (:func:`decode_batch`), uint8 ``(b, 3, S, S)``,
    in order; the files are read in DataLoader workers (as many as for PIL decoding).

    ``n_rows`` (the number of images) lets :func:`~skinfuse._nn.inference.run_batches`
    allocate its output at once.
    """

    def __init__(self, items, image_size, *, batch_size, device, num_workers=None):
        self.image_size = int(image_size)
        self.device = device
        self.n_rows = len(items)
        settings = loader_settings(len(items), batch_size, num_workers, device)
        self.loader = DataLoader(
            _EncodedImages(items, self.image_size),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=_as_list,
            **{**settings, "pin_memory": False},  # bytes: nvjpeg reads them from the host
        )

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for records in unwrap_worker_errors(self.loader):
            yield decode_batch(records, self.image_size, self.device)
