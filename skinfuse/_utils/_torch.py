"""Device resolution and scoped seeding for torch code."""

from __future__ import annotations

import contextlib
import random

import numpy as np
from sklearn.utils import check_random_state


def resolve_device(device="auto") -> str:
    """Return the torch device string for ``device``.

    ``"auto"`` picks ``"cuda"``, then ``"mps"``, then ``"cpu"``. An explicit
    device that is not available raises a ``ValueError`` saying so.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'"
        )
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device='mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}"
        ) from exc
    return device


def seed_from_random_state(random_state) -> int:
    """Draw a 31-bit integer seed from ``random_state`` (int, RandomState or None)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


@contextlib.contextmanager
def torch_seed(seed: int, device: str = "cpu"):
    """Seed torch (and Python's/NumPy's RNG) inside a block, restoring the global state after.

    Uses ``torch.random.fork_rng`` so that user code outside the block keeps its
    own random stream.
    """
    import torch

    devices = [torch.cuda.current_device()] if str(device).startswith("cuda") else []
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
