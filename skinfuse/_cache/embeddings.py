"""The cache's entry point: :func:`encode_cached` looks in memory, then on disk, and encodes
only the images found in neither; counters, :func:`cache_info` and :func:`clear_cache`.

In memory, configurations whose embeddings are all on disk too are dropped, least recently
used first, beyond :data:`MEMORY_LIMIT_BYTES` (they are read back when asked for again).
Long encodings save a shard after every chunk of images, so an interrupted run keeps what
it finished; processes sharing a ``cache_dir`` look on disk again once they hold the
configuration's lock, so each image is encoded once.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np

from .._utils._malloc import restore_mmap_threshold
from .disk import encoding_lock, forget_disk, load_disk, save_disk, usable_folder
from .keys import _FILE_KEYS, image_key

_MEMORY: dict[str, dict[str, np.ndarray]] = {}  # config_key -> image key -> embedding; LRU order
_BYTES: Counter = Counter()  # config_key -> bytes of its embeddings in _MEMORY
_PINNED: set[str] = set()  # config keys with embeddings held in memory only (never dropped)
_LOCK = threading.Lock()
_STATS: Counter = Counter()

#: images encoded between two shards on disk (rounded by the caller to whole batches)
CHUNK_IMAGES = 2048
#: embeddings of configurations also on disk kept in memory beyond the one in use (bytes);
#: the least recently used of them are dropped first, and read back from disk when asked for
MEMORY_LIMIT_BYTES = 2 * 1024**3

__all__ = ["cache_info", "clear_cache"]


def chunk_images(batch_size) -> int:
    """Images per chunk for an estimator of this ``batch_size``: :data:`CHUNK_IMAGES` rounded
    to whole batches, so the chunks run the same batches as one call would."""
    batch = int(batch_size)
    return max(1, CHUNK_IMAGES // batch) * batch


def encode_cached(
    items,
    encode,
    *,
    config_key: str,
    cache=True,
    cache_dir=None,
    chunk_size=CHUNK_IMAGES,
    dtype=np.float32,
    out=None,
    keep=True,
) -> np.ndarray:
    """Return ``encode(items)``, computing only the rows that are not cached yet.

    Parameters
    ----------
    items : list of str or ndarray
        Images (paths or arrays).
    encode : callable
        ``encode(list_of_items) -> ndarray (n, d)`` (float32, or ``dtype``).
    config_key : str
        Identifies the encoder configuration (weights + settings, and ``dtype`` where it is
        not float32).
    cache : bool
        False bypasses the cache entirely.
    cache_dir : str or path-like, optional
        Also keep embeddings on disk under ``cache_dir/config_key/``. Checked (created,
        writable) before any encoding if not checked yet in this process. Only the shards
        holding images asked for are read, and only those images are kept.
    chunk_size : int
        Images encoded per call of ``encode``; with ``cache_dir`` each chunk is saved as
        it finishes, and encoded under the folder's lock after looking on disk once more.
    dtype : numpy dtype, default=float32
        What the rows are stored as, in memory and on disk (float16: cached activations).
    out : ndarray of shape (n, d), optional
        Write the rows into ``out`` (in memory or memory-mapped) and return it, instead of
        a new float32 array. With ``keep``, the in-memory cache then holds rows of ``out``
        (views, not copies): the caller must not write into it afterwards.
    keep : bool, default=True
        False (with ``out``): rows that are not in memory yet are not kept there; they go
        to ``out`` (and to disk with ``cache_dir``), one chunk at a time, so memory does not
        grow with the number of images.
    """
    restore_mmap_threshold()  # in a Dask worker, encoding ~1.6x faster (see _utils/_malloc.py)
    if not cache:
        if out is None:
            out = encode(items)
        else:  # chunk by chunk: never the whole float32 result at once
            for start in range(0, len(items), max(1, int(chunk_size))):
                part = encode(items[start : start + max(1, int(chunk_size))])
                out[start : start + len(part)] = part
        _STATS["encoded"] += len(items)
        return out
    if out is None:
        keep = True
    folder = None if cache_dir is None else usable_folder(config_key, cache_dir)
    keys = [image_key(it) for it in items]
    with _LOCK:
        memory = _store(config_key) if keep else _MEMORY.get(config_key, {})
        store = memory  # rows are kept here, or written into ``out`` as they come (+ kept)
        if out is not None:
            store = _RowsOf(out, keys, memory if keep else None)
            for k in [k for k in store.rows if k in memory]:  # rows already in memory
                store[k] = memory[k]
        todo = _missing(keys, store)
        if todo and folder is not None:  # shards written since (by any process) may hold them
            added = load_disk(store, folder, config_key, todo)
            _BYTES[config_key] += added if keep else 0
            todo = _missing(keys, store)
    _STATS["hits"] += len(keys) - sum(1 for k in keys if k in todo)
    _STATS["misses"] += len(todo)
    pending = list(todo.items())
    step = max(1, int(chunk_size))
    for start in range(0, len(pending), step):
        chunk = pending[start : start + step]
        with encoding_lock(folder):
            if folder is not None:  # encoded by another process while this one waited?
                wanted = [k for k, _ in chunk]
                with _LOCK:
                    added = load_disk(store, folder, config_key, wanted)
                    _BYTES[config_key] += added if keep else 0
                chunk = [(k, i) for k, i in chunk if k not in store]
                if not chunk:
                    continue
            new = np.asarray(encode([items[i] for _, i in chunk]), dtype=dtype)
            _STATS["encoded"] += len(chunk)
            saved = folder is not None and save_disk(folder, [k for k, _ in chunk], new)
        with _LOCK:
            for (k, _), row in zip(chunk, new):
                store[k] = row
            if keep:
                _BYTES[config_key] += new.nbytes
                if not saved:
                    _PINNED.add(config_key)
    if out is None:
        with _LOCK:
            out = np.stack([store[k] for k in keys]).astype(np.float32, copy=False)
            _trim_memory(config_key)
        return out
    if keep:
        with _LOCK:
            _trim_memory(config_key)
    return out


class _RowsOf:
    """``out`` by image key: ``rows[key] = row`` writes every row of ``out`` of that key
    (an image may come twice), and with ``memory`` (the in-memory cache of the
    configuration) keeps there a view of the row written, not a copy; ``key in rows`` once
    written."""

    def __init__(self, out, keys, memory=None):
        self.out = out
        self.memory = memory
        self.rows: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            self.rows.setdefault(k, []).append(i)
        self.written: set[str] = set()

    def __contains__(self, key):
        return key in self.written

    def __setitem__(self, key, row):
        rows = self.rows[key]
        self.out[rows] = row
        if self.memory is not None:
            self.memory[key] = self.out[rows[0]]
        self.written.add(key)


def activation_cache(estimator, trunk_key, device):
    """``cached(items, encode, view, *, out, keep)`` for
    :func:`skinfuse._nn.partial.view_activations`: the trunk activations of each view written
    into ``out`` (stored as its dtype), in the embedding cache of ``estimator`` (``cache``,
    ``cache_dir``, default: memory only). Float16 activations have their own configuration
    keys (``-f16``): float32 ones (the keys of earlier versions) are never mixed in."""
    chunk_size = chunk_images(estimator.batch_size)
    cache, cache_dir = getattr(estimator, "cache", True), getattr(estimator, "cache_dir", None)

    warned = []

    def cached(items, encode, view, *, out, keep=True):
        suffix = "-f16" if out.dtype == np.float16 else ""
        if not keep and cache and cache_dir is None and not warned:
            warned.append(_warn_not_kept(estimator))  # once for all views
        return encode_cached(
            items, encode, config_key=f"{trunk_key}-{estimator._precision(device)}-{view}{suffix}",
            cache=cache, cache_dir=cache_dir, chunk_size=chunk_size, dtype=out.dtype, out=out,
            keep=keep,
        )  # fmt: skip

    return cached


def _warn_not_kept(estimator):
    import warnings

    from .._utils._validation import user_stacklevel

    budget = getattr(estimator, "activation_memory", None)
    warnings.warn(
        f"{type(estimator).__name__}: the activations are larger than activation_memory="
        f"{budget!r}, so they are memory-mapped and not kept in memory; without cache_dir, "
        "the next fit or prediction (another fold, a grid-search candidate, calibration) "
        "computes them again. Pass cache_dir= to keep them on disk, or a larger "
        "activation_memory.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def _store(config_key: str) -> dict:
    """The in-memory embeddings of ``config_key``, marked as the most recently used."""
    store = _MEMORY.pop(config_key, None)
    _MEMORY[config_key] = store = {} if store is None else store
    return store


def _trim_memory(current: str) -> None:
    """Drop configurations whose embeddings are all on disk too, least recently used first,
    while the others than ``current`` hold more than :data:`MEMORY_LIMIT_BYTES`."""
    excess = sum(n for k, n in _BYTES.items() if k != current) - MEMORY_LIMIT_BYTES
    for key in list(_MEMORY):
        if excess <= 0:
            break
        if key != current and key not in _PINNED:
            excess -= _BYTES.pop(key, 0)
            del _MEMORY[key]


def _missing(keys, store) -> dict[str, int]:
    """Keys not in ``store``, each with the index of its first item."""
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in store and k not in todo:
            todo[k] = i
    return todo


def count_encoded(n: int) -> None:
    """Count ``n`` images encoded outside :func:`encode_cached` (bulk embedding)."""
    _STATS["encoded"] += n


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
        _BYTES.clear()
        _PINNED.clear()
        forget_disk()
        _FILE_KEYS.clear()
        _STATS.clear()
