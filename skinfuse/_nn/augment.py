"""Training-time augmentation of whole batches, on the device the batch is on.

:class:`BatchAugment` draws its own random parameters for every image of a batch (unlike a
torchvision transform called on a batch, which applies one draw to all of them) and applies
them with a handful of batched operations: one ``affine_grid`` + ``grid_sample`` for the
random resized crop, the flips and the quarter turns together, then three colour blends.
It is the store path's counterpart of :func:`.data.default_augmentation` (same ranges).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .modules import as_unit_float

#: ITU-R 601 luma weights, as torchvision's ``rgb_to_grayscale``.
_LUMA = (0.299, 0.587, 0.114)


class BatchAugment:
    """Random resized crop, flips, quarter turns and colour jitter, per image, batched.

    Parameters
    ----------
    scale : (float, float), default=(0.6, 1.0)
        Area of the crop, as a share of the image (torchvision's ``RandomResizedCrop``).
    ratio : (float, float), default=(3/4, 4/3)
        Aspect ratio of the crop, drawn log-uniformly. A crop that would not fit is clipped
        to the image (torchvision retries instead; the distributions differ only there).
    jitter : float, default=0.2
        Brightness, contrast and saturation factors are drawn from ``[1 - jitter, 1 +
        jitter]`` and applied in that order (torchvision: in a random order).

    Called on ``uint8`` or ``[0, 1]`` float images ``(B, 3, S, S)`` (square: the
    quarter turns keep the size) and returns float32 images in ``[0, 1]``.
    """

    def __init__(self, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), jitter=0.2):
        self.scale = scale
        self.ratio = ratio
        self.jitter = jitter
        self._lumas = {}

    def _luma(self, device):
        """The luma weights ``(1, 3, 1, 1)`` on ``device``, copied there once."""
        if device not in self._lumas:
            self._lumas[device] = torch.tensor(_LUMA, device=device).view(1, 3, 1, 1)
        return self._lumas[device]

    def __call__(self, x):
        x = as_unit_float(x)
        b, device = x.shape[0], x.device

        def uniform(low, high, *shape):
            return torch.rand(b, *shape, device=device) * (high - low) + low

        # crop: area share s, aspect r (log-uniform); sides as shares of the image
        area = uniform(*self.scale)
        aspect = torch.exp(uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = torch.sqrt(area * aspect).clamp(max=1.0)
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = uniform(0, 1) * (1 - w) * 2 - (1 - w)  # centre, normalised: the crop stays inside
        cy = uniform(0, 1) * (1 - h) * 2 - (1 - h)
        # flips (sign of each output axis) and quarter turns (k), composed on output coords
        flip_x = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
        flip_y = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
        k = torch.randint(0, 4, (b,), device=device)
        # cos and sin of k quarter turns, computed on the device (a small tensor made from a
        # Python list would be a host-to-device copy, which waits for the GPU)
        cos = (k == 0).float() - (k == 2).float()
        sin = (k == 1).float() - (k == 3).float()
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = w * flip_x * cos
        theta[:, 0, 1] = -w * flip_x * sin
        theta[:, 1, 0] = h * flip_y * sin
        theta[:, 1, 1] = h * flip_y * cos
        theta[:, 0, 2] = cx
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # colour: brightness, contrast (towards the mean grey), saturation (towards grey)
        j = self.jitter
        if j:
            luma = self._luma(device)
            x = (x * uniform(1 - j, 1 + j, 1, 1, 1)).clamp_(0, 1)
            mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            x = torch.lerp(mean, x, uniform(1 - j, 1 + j, 1, 1, 1)).clamp_(0, 1)
            grey = (x * luma).sum(1, keepdim=True)
            x = torch.lerp(grey, x, uniform(1 - j, 1 + j, 1, 1, 1)).clamp_(0, 1)
        return x


class PerImage:
    """A user's per-image transform (``augment=callable``) applied to each image of a batch."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x):
        return torch.stack([self.transform(img) for img in x])
