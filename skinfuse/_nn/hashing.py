"""The identity of a network configuration: a hash of its settings, its weights and, for a
module the user passed in, its code."""

from __future__ import annotations

import hashlib
import inspect
import marshal

import torch

from .names import NO_DISK

_LIBRARIES = frozenset({"torch", "torchvision", "timm"})


def hash_config(*parts, state_dict=None) -> str:
    """Hash settings (any repr-able values) and optionally a module's state dict."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(repr(part).encode())
    if state_dict is not None:
        for name, tensor in state_dict.items():
            h.update(name.encode())
            t = tensor.detach().cpu().contiguous()
            h.update(str(t.dtype).encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_code(module) -> tuple[str, list[str]]:
    """What a module computes, apart from its weights: ``repr(module)`` (layers, activations,
    settings) and the source of every class it is made of (and their bases) that is not
    defined in torch, torchvision or timm.

    Returns ``(text, unreadable)``: the names of the classes whose source cannot be read
    (defined in ``exec`` or an interactive session) are in ``unreadable``.
    """
    parts = [repr(module)]
    unreadable: list[str] = []
    seen: set[type] = set()
    for sub in module.modules():
        for cls in type(sub).__mro__:
            if cls in seen or cls is object:
                continue
            seen.add(cls)
            if cls.__module__.partition(".")[0] in _LIBRARIES:
                continue
            try:
                parts.append(f"{cls.__module__}.{cls.__qualname__}\n{inspect.getsource(cls)}")
            except (OSError, TypeError):
                unreadable.append(cls.__qualname__)
                parts.append(f"{cls.__module__}.{cls.__qualname__}\n{_bytecode(cls).hex()}")
    return "\n".join(parts), unreadable


def _bytecode(cls) -> bytes:
    """The compiled code of a class's methods: tells classes without source apart in memory."""
    h = hashlib.blake2b(digest_size=16)
    for name, value in vars(cls).items():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None:
            h.update(name.encode())
            h.update(marshal.dumps(code))
    return h.digest()


def hash_module(module, state_dict=None) -> str:
    """The key of a user's module: its class name, :func:`module_code` and its weights
    (``state_dict``, by default the module's own). Prefixed with :data:`NO_DISK` when the
    source of one of its classes cannot be read."""
    code, unreadable = module_code(module)
    if state_dict is None:
        state_dict = module.state_dict()
    key = hash_config(type(module).__name__, code, state_dict=state_dict)
    if unreadable:
        return f"{NO_DISK}{','.join(unreadable)}:{key}"
    return key


def with_disk_flag(parent_key: str, key: str) -> str:
    """``key``, carrying over the :data:`NO_DISK` prefix of the key it was derived from."""
    if parent_key and parent_key.startswith(NO_DISK):
        return f"{parent_key.rpartition(':')[0]}:{key}"
    return key
