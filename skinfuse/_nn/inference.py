"""One batch-inference loop for every network: embeddings, logits, reconstructions."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import ImageDataset, make_loader, unwrap_worker_errors

#: Images per forward pass on CPU, whatever the loader's batch size.
CPU_CHUNK = 8


def autocast(device, precision="auto"):
    """bf16 autocast where ``precision`` resolves to bf16 on ``device``
    (:func:`.device.resolve_precision`: CUDA and CPUs with native bf16 units for ``"auto"``),
    a no-op elsewhere."""
    from .device import resolve_precision

    device_type = str(device).split(":")[0]
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def eval_mode(module):
    """``module`` in eval mode inside the block; every submodule gets its own mode back.

    (``module.train(was_training)`` would set every submodule to one mode: a wrapper built
    around a fitted network, in training mode by default, would leave the network training.)
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _chunks(batch, chunk, channels_last):
    """Split a batch (a tensor, or a dict of tensors with the images under "x") into chunks,
    each ``(input, other inputs)`` for the module."""
    if isinstance(batch, dict):
        images, extra = batch["x"], {k: v for k, v in batch.items() if k != "x"}
    else:
        images, extra = batch, {}
    chunk = chunk or len(images)  # None: the whole batch at once
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if channels_last:
            part = part.contiguous(memory_format=torch.channels_last)
        yield part, {k: v[start : start + chunk] for k, v in extra.items()}


def run_batches(module, loader, device, *, chunk=None, channels_last=True, verbose=0,
                desc="inference", read_back_late=None, precision="auto"):  # fmt: skip
    """Run ``module`` in eval mode over a loader's batches; return float32 ``(n, ...)``.

    Batches are input tensors or arrays (image batches), or dicts with the images under ``"x"``
    and the module's other inputs (``metadata``) under their names. On CPU, images go
    through in chunks of :data:`CPU_CHUNK` unless ``chunk`` says otherwise (small chunks
    keep activations in cache: 8 beat 64 by ~1.4x). With ``channels_last`` the module and
    the images run channels-last (oneDNN's fast path on CPU, tensor cores on GPU). On
    ``precision`` (:func:`.device.resolve_precision`): bf16 autocast or fp32; ``"auto"`` is
    bf16 on CUDA and on CPUs with native bf16 units. The module gets its format and mode back.

    Where the number of rows is known (a ``DataLoader``, a list of batches), the results
    are copied into one array allocated at the first forward pass, not kept pass by pass:
    with Dask's ``MALLOC_TRIM_THRESHOLD_`` and skinfuse's 32 MB mmap threshold
    (:mod:`skinfuse._utils._malloc`) the activations come from glibc's heap, and each small
    result kept between two passes split the holes they left, so the heap (and a Dask
    worker's peak memory) grew with the size of the chunk (docs/scaling.md).

    ``read_back_late`` (default: on a GPU) copies each pass's result to the host only after
    the next pass is queued: the copy waits for its own pass alone, so the GPU computes the
    next batch while the CPU fetches (or decodes) the one after; reading each result back
    at once would leave the GPU idle during that time. Same results either way.
    """
    device = torch.device(device)
    total = _n_rows(loader)
    chunk = chunk or (CPU_CHUNK if device.type == "cpu" else None)
    # converted outside inference mode, so the parameters stay ordinary tensors
    if channels_last:
        with torch.no_grad():
            module.to(memory_format=torch.channels_last)
    bar = _progress_of(loader, total, desc, verbose)
    if read_back_late is None:
        read_back_late = device.type != "cpu"
    parts, out, done, pending = [], None, 0, None

    def read_back(result):
        nonlocal out, done
        rows = result.float().cpu().numpy()
        if total is None:
            parts.append(rows)
            return
        if out is None:
            out = np.empty((total, *rows.shape[1:]), dtype=np.float32)
        out[done : done + len(rows)] = rows
        done += len(rows)

    try:
        with eval_mode(module):  # each submodule gets its own mode back
            for batch in _batches(loader, device):
                for images, extra in _chunks(batch, chunk, channels_last):
                    with torch.inference_mode(), autocast(device, precision):
                        result = module(images, **extra)
                    if not read_back_late:
                        read_back(result)
                        continue
                    if pending is not None:
                        read_back(pending)
                    pending = result
                bar.update(_len_of(batch) if total is not None else 1)
            if pending is not None:
                read_back(pending)
    finally:
        bar.close()
        if channels_last:
            with torch.no_grad():
                module.to(memory_format=torch.contiguous_format)
    if out is not None:
        return out[:done]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def _len_of(batch) -> int:
    return len(batch["x"] if isinstance(batch, dict) else batch)


def _progress_of(loader, total, desc, verbose):
    """The progress display of :func:`run_batches`: images where their number is known,
    else batches (counted as each batch arrives)."""
    from .._utils._progress import progress

    if total is not None:
        return progress(total=total, desc=desc, unit="img", disable=not verbose)
    try:
        n_batches = len(loader)
    except TypeError:
        n_batches = None
    return progress(total=n_batches, desc=desc, unit="batch", disable=not verbose)


def _n_rows(loader):
    """The number of rows ``loader``'s batches hold in all; None where it cannot tell."""
    if isinstance(loader, DataLoader):
        if loader.batch_size is None or loader.drop_last:
            return None
        try:
            return len(loader.sampler)
        except TypeError:  # an iterable dataset
            return None
    if getattr(loader, "n_rows", None) is not None:  # decode.DeviceDecodedBatches
        return loader.n_rows
    if isinstance(loader, (list, tuple)):  # batches: tensors, arrays or {"x": images, ...}
        return sum(len(batch["x"] if isinstance(batch, dict) else batch) for batch in loader)
    return None


def _batches(loader, device):
    """The loader's batches on ``device``: a tensor, or a dict with the images under "x"."""
    for batch in unwrap_worker_errors(loader):
        if isinstance(batch, dict):
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        else:
            yield torch.as_tensor(batch).to(device, non_blocking=True)


def embed(module, images, image_size, *, batch_size, device, num_workers=None, metadata=None,
          decode="pil", verbose=0, desc="encoding", precision="auto"):  # fmt: skip
    """Run ``module`` over images (paths, arrays or a decoded uint8 tensor) in batches.

    With ``metadata`` rows, the module is called as ``module(images, metadata=rows)``.
    ``decode="device"``: JPEG files are decoded and resized on ``device``, in batches
    (:mod:`skinfuse._nn.decode`), the rest with PIL; ``"pil"``: every image with PIL, in the
    loader's workers. ``precision``: as in :func:`run_batches`. Returns a float32 ndarray
    ``(n, d)``.
    """
    if decode == "device" and metadata is None and not torch.is_tensor(images):
        from .decode import DeviceDecodedBatches

        loader = DeviceDecodedBatches(
            images, image_size, batch_size=batch_size, device=device, num_workers=num_workers
        )
        return run_batches(module, loader, device, verbose=verbose, desc=desc, precision=precision)
    dataset = ImageDataset(images, image_size, metadata=metadata)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, device=device)
    return run_batches(module, loader, device, verbose=verbose, desc=desc, precision=precision)
