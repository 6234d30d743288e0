"""The embedding cache: an image already encoded with the same encoder configuration is never
encoded again, in this process (memory) and, with ``cache_dir``, across processes (disk).

Keys: the image (real path + size + mtime for files, so a symlink or another spelling of a
path shares the file's embedding; a content hash for arrays) and the
encoder's configuration key (a hash of its weights and every setting that changes the
output), so a changed file or a changed setting re-encodes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

_MEMORY: dict[str, dict[str, np.ndarray]] = {}
_LOADED_DIRS: set[tuple[str, str]] = set()
_LOCK = threading.Lock()
_STATS: Counter = Counter()

__all__ = ["cache_info", "clear_cache"]


def image_key(item) -> str:
    """A string that changes when the image changes: real path+size+mtime, or a content hash."""
    if isinstance(item, str):
        path = os.path.realpath(item)
        try:
            st = os.stat(path)
        except OSError:
            return f"p|{path}|missing"
        return f"p|{path}|{st.st_size}|{st.st_mtime_ns}"
    arr = np.ascontiguousarray(item)
    h = hashlib.blake2b(arr.tobytes(), digest_size=16)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    return f"a|{h.hexdigest()}"


def _load_disk(config_key: str, cache_dir) -> None:
    folder = Path(cache_dir) / config_key
    tag = (config_key, str(Path(cache_dir).resolve()))
    if tag in _LOADED_DIRS:
        return
    store = _MEMORY.setdefault(config_key, {})
    if folder.is_dir():
        for shard in sorted(folder.glob("*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    for k, row in zip(data["keys"].tolist(), data["embeddings"]):
                        store.setdefault(k, row)
            except (OSError, ValueError, KeyError):  # a shard cut short by a crash: ignore it
                continue
    _LOADED_DIRS.add(tag)


def _save_disk(config_key: str, cache_dir, keys, embeddings) -> None:
    folder = Path(cache_dir) / config_key
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp.npz"
    np.savez(tmp, keys=np.asarray(keys, dtype=str), embeddings=embeddings)
    os.replace(tmp, folder / f"{uuid.uuid4().hex}.npz")


def encode_cached(items, encode, *, config_key: str, cache=True, cache_dir=None) -> np.ndarray:
    """Return ``encode(items)``, computing only the rows that are not cached yet.

    Parameters
    ----------
    items : list of str or ndarray
        Images (paths or arrays).
    encode : callable
        ``encode(list_of_items) -> ndarray (n, d) float32``.
    config_key : str
        Identifies the encoder configuration (weights + settings).
    cache : bool
        False bypasses the cache entirely.
    cache_dir : str or path-like, optional
        Also keep embeddings on disk under ``cache_dir/config_key/``.
    """
    if not cache:
        out = encode(items)
        _STATS["encoded"] += len(items)
        return out
    keys = [image_key(it) for it in items]
    with _LOCK:
        if cache_dir is not None:
            _load_disk(config_key, cache_dir)
        store = _MEMORY.setdefault(config_key, {})
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in store and k not in todo:
                todo[k] = i
    _STATS["hits"] += len(keys) - sum(1 for k in keys if k in todo)
    _STATS["misses"] += len(todo)
    if todo:
        new = np.asarray(encode([items[i] for i in todo.values()]), dtype=np.float32)
        _STATS["encoded"] += len(todo)
        with _LOCK:
            for k, row in zip(todo, new):
                store[k] = row
        if cache_dir is not None:
            _save_disk(config_key, cache_dir, list(todo), new)
    return np.stack([store[k] for k in keys]).astype(np.float32, copy=False)


def cache_info() -> dict:
    """Counters of the embedding cache in this process.

    Returns
    -------
    info : dict
        ``hits`` and ``misses`` (images looked up), ``encoded`` (images that went
        through a network, cached or not), ``configs`` (encoder configurations held)
        and ``images`` (embeddings held in memory).
    """
    return {
        "hits": _STATS["hits"],
        "misses": _STATS["misses"],
        "encoded": _STATS["encoded"],
        "configs": len(_MEMORY),
        "images": sum(len(v) for v in _MEMORY.values()),
    }


def clear_cache() -> None:
    """Empty the in-memory embedding cache and reset its counters (disk caches stay)."""
    with _LOCK:
        _MEMORY.clear()
        _LOADED_DIRS.clear()
        _STATS.clear()
