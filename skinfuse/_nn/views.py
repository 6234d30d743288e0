"""Fixed views of an image (flips and 90-degree rotations), for test-time augmentation and for
the cached training views of partial fine-tuning.

Dermoscopic images have no up or left: the eight symmetries of the square (the dihedral
group D4) give eight views of the same lesion. ``tta=n`` uses the first ``n`` of
:data:`VIEWS`, an order in which each prefix of length 1, 2, 4 and 8 is a useful set:
the image, its mirror, then the flips and the half turn, then the quarter turns.
"""

from __future__ import annotations

import torch
from torch import nn

#: The eight views, in the order ``tta=n`` takes them.
VIEWS = ("identity", "hflip", "vflip", "rot180", "rot90", "rot270", "transpose", "antitranspose")


def check_views(n, name="tta") -> int:
    """``n`` (None -> 1) as an int in 1..8, or a clear ValueError."""
    n = 1 if n is None else n
    if isinstance(n, bool) or int(n) != n or not 1 <= int(n) <= len(VIEWS):
        raise ValueError(
            f"{name}={n!r}: pass the number of views, an int from 1 (no augmentation) to "
            f"{len(VIEWS)}, taken in this order: {', '.join(VIEWS)}"
        )
    return int(n)


def views_for(n):
    """The first ``n`` views of :data:`VIEWS`."""
    return VIEWS[: int(n)]


def apply_view(x, view: str):
    """The view ``view`` of images ``x`` (a tensor ``(..., H, W)``: the last two axes)."""
    if view == "identity":
        return x
    if view == "hflip":
        return x.flip(-1)
    if view == "vflip":
        return x.flip(-2)
    if view == "rot180":
        return x.flip(-1).flip(-2)
    if view == "rot90":
        return torch.rot90(x, 1, dims=(-2, -1))
    if view == "rot270":
        return torch.rot90(x, -1, dims=(-2, -1))
    if view == "transpose":
        return x.transpose(-2, -1)
    if view == "antitranspose":
        return x.flip(-1).flip(-2).transpose(-2, -1)
    raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")


#: The suffix of a view name whose images are also changed in colour, light and scale.
JITTER = "+jitter"


def jittered(views):
    """``views`` with each but the first changed by :func:`jitter` (its name ends in
    :data:`JITTER`): the cached training views of ``view_jitter=True``."""
    return tuple(views[:1]) + tuple(v + JITTER for v in views[1:])


def _image_seeds(x):
    """One integer per image of ``x`` (B, 3, H, W), from its pixels: the same image gets the
    same jitter wherever and whenever it is computed (the cache keeps it), on any device."""
    step = max(1, x[0].numel() // 4096)
    pixels = (x.flatten(1)[:, ::step] * (255 if x.is_floating_point() else 1)).round().long()
    weights = torch.arange(1, pixels.shape[1] + 1, device=x.device, dtype=torch.long)
    return ((pixels * weights).sum(1) % (2**31 - 1)).tolist()


def jitter(x):
    """Each image of ``x`` (uint8 or float in [0, 1], ``(B, 3, H, W)``) changed as another
    dermatoscope, light or camera would change it, by amounts drawn per image: white balance
    (a gain per channel, +-10 %), brightness and contrast (+-20 %), saturation (+-30 %),
    gamma (0.82-1.22); in half of the images a zoom into the central 75-100 %, and in half a
    loss of resolution (down to 40-100 % of the side and back). Returns float in [0, 1].
    """
    from torch.nn import functional as F

    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    b, _, h, w = x.shape
    draws = []
    for seed in _image_seeds(x):
        gen = torch.Generator().manual_seed(int(seed))
        draws.append(torch.rand(10, generator=gen))
    u = torch.stack(draws).to(x.device)  # (B, 10) uniforms in [0, 1)

    def factor(col, spread):  # exp(U(-spread, spread)), shaped to broadcast over images
        return torch.exp((2 * u[:, col] - 1) * spread).view(b, 1, 1, 1)

    gains = torch.exp((2 * u[:, 0:3] - 1) * 0.1).view(b, 3, 1, 1)
    x = x * gains * factor(3, 0.2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(4, 0.2) + mean
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = (x - gray) * factor(5, 0.3) + gray
    x = x.clamp(0, 1) ** factor(6, 0.2)
    out = []
    for i in range(b):
        img = x[i : i + 1]
        if u[i, 7] < 0.5:  # zoom into the centre
            keep = 0.75 + 0.25 * float(u[i, 8])
            ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
            top, left = (h - ch) // 2, (w - cw) // 2
            img = img[:, :, top : top + ch, left : left + cw]
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
        if u[i, 9] < 0.5:  # lower resolution
            side = 0.4 + 1.2 * float(u[i, 9])  # 0.4-1.0 of the side
            small = (max(1, round(h * side)), max(1, round(w * side)))
            img = F.interpolate(img, size=small, mode="bilinear", antialias=True)
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
        out.append(img)
    return torch.cat(out).clamp_(0, 1)


class ViewOf(nn.Module):
    """``module`` applied to one fixed view of its input images (a view name ending in
    :data:`JITTER`: the view, then :func:`jitter`)."""

    def __init__(self, module, view):
        super().__init__()
        self.module = module
        self.view = view

    def forward(self, x, **kwargs):
        view, jittered_view = self.view, self.view.endswith(JITTER)
        if jittered_view:
            view = view[: -len(JITTER)]
        if view == "identity" and not jittered_view:
            return self.module(x, **kwargs)
        # keep the input's memory format (channels-last: oneDNN's fast path on CPU)
        channels_last = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = apply_view(x, view)
        if jittered_view:
            x = jitter(x)
        return self.module(x.contiguous(memory_format=fmt), **kwargs)
