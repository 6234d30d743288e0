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


class ViewOf(nn.Module):
    """``module`` applied to one fixed view of its input images."""

    def __init__(self, module, view):
        super().__init__()
        self.module = module
        self.view = view

    def forward(self, x, **kwargs):
        if self.view == "identity":
            return self.module(x, **kwargs)
        # keep the input's memory format (channels-last: oneDNN's fast path on CPU)
        channels_last = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return self.module(apply_view(x, self.view).contiguous(memory_format=fmt), **kwargs)
