"""The decoded-image store: each training image decoded and resized once per fit.

Without it, DataLoader workers decode every JPEG again in every epoch, and on a GPU the
network waits for the CPU. With it (``image_store``), :func:`decoded_store` decodes the
images once into one ``uint8`` tensor ``(n, 3, S, S)`` (in memory, or in a memory-mapped
file past a budget), :class:`StoreDataset` serves rows of it and :class:`StoreLoader`
gathers whole batches by index (one indexing per batch, no collation, no workers). On
CUDA the store moves to the device when it fits, so batches never leave it; augmentation
then runs on the batch, on the device (:class:`.augment.BatchAugment`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import decode_images

#: ``image_store="auto"`` keeps a store up to this size in memory, a larger one on disk.
MEMORY_BUDGET = 8 * 2**30

STORE_MODES = ("auto", "memory", "disk")


def resolve_store(image_store, device, augment, n_images, image_size):
    """``"memory"``, ``"disk"`` or None (decode per epoch in loader workers) for a fit.

    ``"auto"``: a store on CUDA (in memory up to :data:`MEMORY_BUDGET`, else on disk), none
    elsewhere, where the per-epoch loader path is kept (nothing changes on the CPU), and none
    with a callable ``augment`` (a user's per-image transform belongs in the loader).
    """
    if image_store != "auto":
        return image_store
    if not str(device).startswith("cuda") or callable(augment):
        return None
    return "memory" if n_images * 3 * image_size**2 <= MEMORY_BUDGET else "disk"


@contextlib.contextmanager
def decoded_store(items, image_size, mode, *, batch_size, num_workers=None, verbose=0):
    """Decode ``items`` once into a ``uint8`` tensor ``(n, 3, S, S)``; yield it.

    ``mode="memory"``: one tensor in RAM. ``mode="disk"``: a memory-mapped file in the
    temporary directory (``TMPDIR``), filled batch by batch (:func:`.data.decode_images`)
    and removed when the block ends.
    """
    shape = (len(items), 3, image_size, image_size)
    if mode == "memory":
        path, pixels = None, torch.empty(shape, dtype=torch.uint8)
    else:
        fd, path = tempfile.mkstemp(prefix="skinfuse-store-", suffix=".u8")
        os.close(fd)
        pixels = torch.from_numpy(np.lib.format.open_memmap(path, "w+", np.uint8, shape))
    try:
        decode_images(
            items, image_size, batch_size=batch_size, num_workers=num_workers,
            verbose=verbose, out=pixels,
        )  # fmt: skip
        yield pixels
    finally:
        del pixels
        if path is not None:
            os.unlink(path)


def on_device_if_it_fits(pixels, device, *, share=0.5):
    """The store on ``device`` (CUDA) when it takes at most ``share`` of the free memory;
    else as it is, in host memory or memory-mapped (each batch is then copied to the device;
    pinning the whole store would copy a memory-mapped one into RAM)."""
    if not str(device).startswith("cuda"):
        return pixels
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return pixels.to(device) if pixels.numel() <= share * free else pixels


class StoreDataset(Dataset):
    """Rows ``rows`` of a decoded store, with their targets and metadata.

    A batch (``dataset[indices]``, indices into ``rows``) is ``(images, y)``, or
    ``({"x": images, "metadata": rows}, y)`` with metadata: what skorch's training loop
    takes from its iterator, on the store's device. Single items work too (skorch never
    asks for them here).
    """

    def __init__(self, pixels, rows, *, y, metadata=None):
        self.pixels = pixels
        self.device = pixels.device
        # rows, targets and metadata live where the pixels do: a batch is gathered there
        # without a host-to-device copy (a copy from pageable memory waits for the GPU)
        self.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64)).to(self.device)
        self.y = np.asarray(y)  # skorch reads the targets from here (classes, lengths)
        self._y = torch.as_tensor(self.y).to(self.device)
        self.metadata = None
        if metadata is not None:
            self.metadata = torch.from_numpy(np.asarray(metadata)).to(self.device)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        index = torch.as_tensor(index).to(self.device)
        images = self.pixels[self.rows[index]]
        if self.metadata is not None:
            images = {"x": images, "metadata": self.metadata[index]}
        return images, self._y[index]


class StoreLoader:
    """skorch's ``iterator_train`` / ``iterator_valid`` over a :class:`StoreDataset`.

    Draws its random numbers as a shuffling DataLoader does (a worker base seed, then
    ``RandomSampler``'s ``torch.randperm(n)`` and its empty remainder, each epoch), so with
    the same generator it yields the batches of a DataLoader over the same images, and the
    global random stream (dropout) advances the same: without augmentation, a network
    trained from the store equals one trained from the loader. DataLoader-only settings
    (workers, pinned memory) are accepted and ignored.
    """

    def __init__(self, dataset, *, batch_size, shuffle=False, generator=None, drop_last=False,
                 **ignored):  # fmt: skip
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # base seed
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            torch.randperm(n, generator=self.generator)  # RandomSampler's remainder draw
        else:
            order = torch.arange(n)
        order = order.to(getattr(self.dataset, "device", "cpu"))  # one copy an epoch
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.dataset[order[start : start + self.batch_size]]
