"""Device choice, scoped seeding, and what every torch-backed estimator inherits.

Imports torch only inside its functions: the estimator classes inherit
:class:`TorchEstimatorMixin` at import time, before torch is needed.
"""

from __future__ import annotations

import contextlib
import copy
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
        if _mps_available():
            return "mps"
        return "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'"
        )
    if device == "mps" and not _mps_available():
        raise ValueError("device='mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}"
        ) from exc
    return device


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_device(device: str) -> str:
    """``device`` where it exists in this process, else ``"cpu"`` (a GPU-fitted model on a CPU)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    if device == "mps" and not _mps_available():
        return "cpu"
    return device


#: The ``precision`` settings: ``"auto"`` (bf16 where the hardware computes it natively),
#: or forced.
PRECISIONS = ("auto", "fp32", "bf16")

#: /proc/cpuinfo flags of native bf16 matrix units: Intel AMX and AVX512-BF16, Arm's BF16.
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})


def _cpu_flags() -> frozenset:
    """The CPU feature flags of /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm);
    empty where there is no such file (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in native matrix units (AMX, AVX512-BF16, Arm BF16)
    and PyTorch's oneDNN backend can use them. Detected from the CPU's flags, never guessed:
    on a CPU without them bf16 is emulated and slower than fp32."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    return bool(_cpu_flags() & _BF16_FLAGS)


def resolve_precision(precision="auto", device="cpu") -> str:
    """``"fp32"`` or ``"bf16"``: the numeric precision networks run in on ``device``.

    ``"auto"`` gives bf16 autocast on CUDA and on CPUs with native bf16 units
    (:func:`cpu_has_bf16`), fp32 elsewhere (MPS, other CPUs); ``"fp32"`` and ``"bf16"``
    force it. Embeddings differ in their last bits between the two, so cache keys include it.
    """
    if precision is None:
        precision = "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    device = str(device)
    if device.startswith("cuda"):
        return "bf16"
    if device == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def precision(device: str, requested="auto") -> str:
    """``requested`` (``"auto"``, ``"fp32"``, ``"bf16"``) resolved on ``device``
    (:func:`resolve_precision`); the precision part of the cache keys."""
    return resolve_precision(requested, device)


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


def _is_module(value) -> bool:
    try:
        from torch import nn
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, nn.Module)


def _cpu_copy(module):
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device.type == "cpu" for t in tensors):
        return module
    return copy.deepcopy(module).cpu()


class TorchEstimatorMixin:
    """Device handling shared by every torch-backed estimator (mixin, not for direct use).

    The estimator resolves ``device_`` in ``fit`` and keeps its fitted modules on the
    CPU. At inference, :meth:`_inference_device` is ``device_`` where it exists in this
    process (else the CPU) and :meth:`_module_on` gives a per-process copy of a module
    on it. Pickles carry no device copy and only CPU modules, so a model fitted on a GPU
    loads and predicts on a machine without one.
    """

    def _precision(self, device) -> str:
        """``"fp32"`` or ``"bf16"``: this estimator's ``precision`` (``"auto"`` when it has
        none, e.g. a model file written before the parameter) resolved on ``device``."""
        return resolve_precision(getattr(self, "precision", "auto"), device)

    def _inference_device(self) -> str:
        """``device_`` where it exists in this process, else the CPU."""
        return available_device(self.device_)

    def _module_on(self, module, device, name: str):
        """``module`` itself on the CPU; elsewhere a copy on ``device``, made once per fit and
        process under ``name`` and never pickled (``fit`` drops them: :meth:`_forget_device_copies`)."""
        if device == "cpu":
            return module
        copies = self.__dict__.setdefault("_device_copies", {})
        if name not in copies:
            copies[name] = copy.deepcopy(module).to(device).eval()
        return copies[name]

    def _forget_device_copies(self):
        self.__dict__.pop("_device_copies", None)

    def __getstate__(self):
        state = dict(super().__getstate__())  # scikit-learn's, where it adds its version
        state.pop("_device_copies", None)
        for key, value in list(state.items()):
            if _is_module(value):
                state[key] = _cpu_copy(value)
        return state

    def __setstate__(self, state):
        parent = getattr(super(), "__setstate__", None)  # scikit-learn's checks its version
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
        device = state.get("device_")
        if device is not None and device != "cpu":
            try:
                resolve_device(device)
            except ValueError:  # fitted on a GPU, loaded where there is none
                self.device_ = "cpu"


class TrainedNetworkMixin:
    """``module_``: the trained network of an estimator fitted through skorch (``net_``)."""

    @property
    def module_(self):
        """The trained network, on the CPU (``net_.module_``)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "net_")
        return self.net_.module_
