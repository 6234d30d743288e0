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


def available_device(device: str) -> str:
    """``device`` where it exists in this process, else ``"cpu"`` (a GPU-fitted model on a CPU)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "cpu"
    return device


def optimizer_class(optimizer):
    """The optimizer class for ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or a class,
    and its extra keyword arguments."""
    import torch

    if optimizer == "adam":
        return torch.optim.Adam, {}
    if optimizer == "adamw":
        return torch.optim.AdamW, {}
    if optimizer == "sgd":
        return torch.optim.SGD, {"momentum": 0.9}
    return optimizer, {}


def autocast(device):
    """bf16 autocast on CUDA, a no-op elsewhere."""
    import torch

    device_type = str(device).split(":")[0]
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda")


def net_to_cpu(net):
    """Move a trained skorch net (module, criterion, optimizer state if any) to the CPU."""
    import torch

    if str(net.device) == "cpu":
        return
    net.module_.to("cpu", memory_format=torch.contiguous_format)
    if getattr(net, "criterion_", None) is not None:
        net.criterion_.to("cpu")
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is not None:
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.cpu()
    net.device = "cpu"
