"""The dataset over a column of images, its loaders, and training-time augmentation.

Decoding runs in the DataLoader's workers (or in the main process for a single
batch); normalisation happens on the batch, on the device, inside the network.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..images import _read_image, load_images


class ImageDataset(Dataset):
    """Images as ``uint8`` ``(3, H, W)`` tensors, with optional metadata rows and targets.

    Parameters
    ----------
    images : list of (str or ndarray), or uint8 tensor of shape (n, 3, S, S)
        Paths or arrays, decoded and resized to ``image_size`` on access; or images
        decoded already (:func:`decode_images`), served as they are.
    image_size : int
    y : ndarray of shape (n,), default=None
        Targets; items are then ``(input, y[i])``.
    metadata : ndarray of shape (n, d), default=None
        Metadata rows; the input is then ``{"x": image, "metadata": row}``.
    transform : callable, default=None
        Applied to each ``uint8`` image tensor (training-time augmentation).
    """

    def __init__(self, images, image_size, *, y=None, metadata=None, transform=None):
        self.images = images
        self.image_size = image_size
        self.y = y
        self.metadata = metadata
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if torch.is_tensor(self.images):
            img = self.images[i]
        else:
            img = torch.from_numpy(_read_image(self.images[i], size=self.image_size))
            img = img.permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        if self.metadata is not None:
            img = {"x": img, "metadata": torch.from_numpy(self.metadata[i])}
        if self.y is None:
            return img
        return img, self.y[i]


def default_num_workers(n_items: int, batch_size: int, num_workers=None) -> int:
    """``None`` -> no workers for a single batch, else up to 4, leaving a core to the model.

    Also none inside a daemonic process (a Dask worker, a ``multiprocessing.Pool`` worker),
    which may not start loader processes of its own.
    """
    if num_workers is not None:
        return int(num_workers)
    if n_items <= batch_size or multiprocessing.current_process().daemon:
        return 0
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def loader_settings(n_items, batch_size, num_workers, device) -> dict:
    """DataLoader keyword arguments: workers, pinned memory on CUDA, prefetching."""
    workers = 0 if n_items == 0 else default_num_workers(n_items, batch_size, num_workers)
    return {
        "num_workers": workers,
        "pin_memory": str(device).startswith("cuda"),
        "persistent_workers": False,
        "prefetch_factor": 4 if workers else None,
    }


def make_loader(dataset, *, batch_size, num_workers=None, device="cpu"):
    """An inference DataLoader over ``dataset``, in order."""
    if torch.is_tensor(dataset.images):
        num_workers = 0  # decoded already: workers would only copy
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        **loader_settings(len(dataset), batch_size, num_workers, device),
    )


@contextmanager
def plain_worker_errors():
    """A ValueError raised in a DataLoader worker comes back as its own one-line message.

    torch re-raises a worker's exception in the main process with the worker's whole
    traceback as its message ("Caught ValueError in DataLoader worker process 0. Original
    Traceback ..."); the file it names (an unreadable image) is then buried at the end.
    Inside this block such an error is raised again as the plain ``ValueError`` the worker
    raised. Other errors pass through unchanged. Used around training (skorch's loops) and
    inference (:func:`unwrap_worker_errors`).
    """
    try:
        yield
    except ValueError as exc:
        message = _worker_message(exc)
        if message is None:
            raise
        # The traceback's frames hold the DataLoader iterator in a reference cycle: free them
        # now, so its workers shut down at once (not at the next garbage collection, which
        # waits 5 s per worker).
        traceback.clear_frames(exc.__traceback__)
        raise ValueError(message) from None


def _worker_message(exc):
    """The message of the ValueError a worker raised, or None if ``exc`` is not one."""
    text = str(exc)
    if "Original Traceback (most recent call last)" not in text:
        return None
    lines = [line for line in text.strip().splitlines() if line.startswith("ValueError: ")]
    return lines[-1].removeprefix("ValueError: ") if lines else None


def unwrap_worker_errors(loader):
    """Iterate a DataLoader inside :func:`plain_worker_errors`."""
    with plain_worker_errors():
        yield from loader


def decode_images(items, image_size, *, batch_size, num_workers=None, verbose=0, out=None):
    """All images as one ``uint8`` tensor ``(n, 3, image_size, image_size)``.

    ``out``: a tensor of that shape to fill (e.g. a memory-mapped one: the decoded-image
    store), written batch by batch (never the whole array in memory at once, workers or
    not); by default one is allocated.
    """
    workers = default_num_workers(len(items), batch_size, num_workers)
    if workers == 0 and out is None:
        pixels, _ = load_images(items, size=image_size, verbose=verbose)
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    if out is None:
        out = torch.empty((len(items), 3, image_size, image_size), dtype=torch.uint8)
    loader = make_loader(
        ImageDataset(items, image_size), batch_size=batch_size, num_workers=workers
    )
    if verbose:
        from .._utils._progress import progress

        loader = progress(loader, desc="decoding images", unit="batch")
    start = 0
    for batch in unwrap_worker_errors(loader):  # no list of batches: one copy of the pixels
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def mean_colour(pixels):
    """The mean RGB colour, in [0, 1], of decoded uint8 images ``(n, 3, H, W)`` (float64)."""
    total = sum(part.sum(dim=(0, 2, 3), dtype=torch.float64) for part in pixels.split(512))
    return total / (pixels.numel() / 3 * 255.0)


# -- augmentation -----------------------------------------------------------------------------
class RandomRot90(nn.Module):
    """Rotate a ``(C, H, W)`` image by a random multiple of 90 degrees."""

    def forward(self, img):
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


class RandomFlipRot90(nn.Module):
    """A random horizontal flip, then a random multiple of 90 degrees of rotation."""

    def forward(self, img):
        flip, k = torch.randint(0, 2, ()).item(), torch.randint(0, 4, ()).item()
        if flip:
            img = img.flip(-1)
        return torch.rot90(img, k, dims=(-2, -1))


def default_augmentation(image_size):
    """Random resized crop, flips, 90-degree rotations, brightness/contrast/saturation jitter."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            RandomRot90(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    )


def augmentation(augment, image_size):
    """The training-time transform for ``augment`` (True, False or a callable)."""
    if augment is True:
        return default_augmentation(image_size)
    if callable(augment):
        return augment
    return None
