"""The identity of a network configuration: a hash of its settings and its weights."""

from __future__ import annotations

import hashlib

import torch


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
