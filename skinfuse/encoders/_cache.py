"""The embedding cache: an image already encoded with the same encoder configuration is never
encoded again, in this process (memory) and, with ``cache_dir``, across processes (disk).

Keys: the image's content (a blake2b hash of a file's bytes, so a copy, a symlink or
another spelling of a path shares the file's embedding and a replaced file never serves
a stale one; of the pixels, shape and dtype for arrays) and the encoder's configuration
key (a hash of its weights, its code for a custom module, and every setting that changes
the output), so a changed image or a changed setting re-encodes.

On disk, ``cache_dir/<config_key>/`` holds shards ``<uuid>.v2.npz`` (keys, embeddings and a
checksum of both). A shard is written under a temporary name that readers never match,
flushed to disk, then renamed into place, so readers see whole shards or none; several
processes may read and write one ``cache_dir`` at once. A shard that cannot be read or
fails its checksum is skipped with a warning and renamed to ``*.corrupt``; its images are
encoded again. Long encodings save a shard after every chunk of images, so an interrupted
run keeps what it finished.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from .._nn.names import NO_DISK

_MEMORY: dict[str, dict[str, np.ndarray]] = {}
_SHARDS_SEEN: dict[tuple[str, str], set[str]] = {}  # (config_key, folder) -> shard names read
_USABLE_DIRS: set[str] = set()  # cache_dirs checked in this process
_REFUSED: set[str] = set()  # config keys warned about (no disk cache)
_FILE_KEYS: dict[tuple, str] = {}  # (realpath, size, mtime_ns, ctime_ns, inode) -> content key
_LOCK = threading.Lock()
_STATS: Counter = Counter()

#: images encoded between two shards on disk (rounded by the caller to whole batches)
CHUNK_IMAGES = 2048
_SHARD_GLOB = "*.v2.npz"
_TMP_PREFIX = ".tmp-"  # no .npz suffix: the shard glob never matches a file being written
_STALE_TMP_S = 3600.0
_READ_BLOCK = 1 << 20

__all__ = ["cache_info", "clear_cache"]


# -- image keys ----------------------------------------------------------------------------
def _file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def image_key(item) -> str:
    """A string that changes when the image changes: a hash of the file's bytes or the array.

    A file is read once per process while its path, size, times and inode stay the
    same; a missing file gets a key no real image has.
    """
    if isinstance(item, str):
        path = os.path.realpath(item)
        try:
            st = os.stat(path)
            memo = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            key = _FILE_KEYS.get(memo)
            if key is None:
                key = _FILE_KEYS[memo] = f"f|{_file_digest(path)}"
        except OSError:
            return f"missing|{path}"
        return key
    arr = np.ascontiguousarray(item)
    h = hashlib.blake2b(arr.tobytes(), digest_size=16)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    return f"a|{h.hexdigest()}"


# -- the cache folder ------------------------------------------------------------------------
def check_cache_dir(cache_dir) -> Path:
    """Create ``cache_dir`` if needed and check that files can be written there.

    Raises a ``ValueError`` saying what is wrong and how to fix it, before any encoding.
    """
    path = Path(os.fspath(cache_dir)).expanduser()
    fix = "Pass a writable folder (created if missing) or cache_dir=None."
    if path.exists() and not path.is_dir():
        raise ValueError(f"cache_dir={os.fspath(cache_dir)!r} is a file, not a folder. {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cache_dir={os.fspath(cache_dir)!r} cannot be created "
            f"({type(exc).__name__}: {exc}). {fix}"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=_TMP_PREFIX + "probe-") as probe:
            probe.write(b"0")
    except OSError as exc:
        raise ValueError(
            f"cache_dir={os.fspath(cache_dir)!r} is not writable ({type(exc).__name__}: "
            f"{exc}). Fix its permissions, or {fix[0].lower()}{fix[1:]}"
        ) from None
    return path


def _usable_folder(config_key: str, cache_dir) -> Path | None:
    """``cache_dir/config_key``, after checking ``cache_dir`` once per process; None: no disk."""
    if config_key.startswith(NO_DISK):
        if config_key not in _REFUSED:
            _REFUSED.add(config_key)
            classes = config_key[len(NO_DISK) :].rpartition(":")[0]
            warnings.warn(
                f"cache_dir={os.fspath(cache_dir)!r} is not used for this encoder: the source "
                f"code of its module class(es) {classes} cannot be read, so embeddings on disk "
                "could not tell a change of that code apart. Define the module in a .py file "
                "that Python imports (not in exec() or an interactive session without "
                "source) to cache on disk; the in-memory cache still works.",
                UserWarning,
                stacklevel=4,
            )
        return None
    path = os.path.abspath(os.fspath(cache_dir))
    if path not in _USABLE_DIRS:
        check_cache_dir(path)
        _USABLE_DIRS.add(path)
    return Path(path) / config_key


# -- shards ----------------------------------------------------------------------------------
def _checksum(keys: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    h = hashlib.blake2b(digest_size=16)
    for arr in (keys, embeddings):
        h.update(f"{arr.shape}{arr.dtype.str}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _read_shard(shard: Path):
    """``(keys, embeddings)`` of a shard; ValueError (or a read error) when it is not whole."""
    with np.load(shard, allow_pickle=False) as data:
        keys, embeddings, checksum = data["keys"], data["embeddings"], data["checksum"]
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise ValueError(f"keys are {keys.dtype} of shape {keys.shape}")
    if embeddings.ndim != 2 or embeddings.dtype != np.float32 or len(embeddings) != len(keys):
        raise ValueError(f"embeddings are {embeddings.dtype} of shape {embeddings.shape}")
    if not np.array_equal(checksum, _checksum(keys, embeddings)):
        raise ValueError("checksum mismatch")
    return keys, embeddings


def _set_aside(shard: Path, exc: BaseException) -> None:
    aside = shard.with_name(shard.name + ".corrupt")
    try:
        os.replace(shard, aside)
        where = f"moved aside to {aside.name}"
    except FileNotFoundError:  # another process moved it first
        where = "moved aside by another process"
    except OSError as err:
        where = f"could not move it aside ({type(err).__name__}: {err})"
    warnings.warn(
        f"skinfuse embedding cache: skipped unreadable shard {shard} "
        f"({type(exc).__name__}: {exc}); {where}; its images are encoded again.",
        UserWarning,
        stacklevel=5,
    )


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files left by killed writers (old ones only: others may be writing now)."""
    now = time.time()
    for tmp in folder.glob(_TMP_PREFIX + "*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass


def _load_disk(store: dict, folder: Path, config_key: str) -> None:
    """Read the shards of ``folder`` not read yet in this process into ``store``."""
    seen = _SHARDS_SEEN.setdefault((config_key, str(folder)), set())
    if not folder.is_dir():
        return
    if not seen:
        _remove_stale_tmp(folder)
    for shard in sorted(folder.glob(_SHARD_GLOB)):
        if shard.name in seen:
            continue
        try:
            keys, embeddings = _read_shard(shard)
        except FileNotFoundError:  # moved aside by another process after the glob
            continue
        except Exception as exc:  # zero bytes, truncated, bad zip, bit flip, wrong arrays
            _set_aside(shard, exc)
            continue
        seen.add(shard.name)
        for k, row in zip(keys.tolist(), embeddings):
            store.setdefault(k, row)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_disk(folder: Path, keys, embeddings) -> None:
    """Write one shard atomically: a temporary file, flushed and synced, then renamed."""
    keys = np.asarray(keys, dtype=str)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, embeddings=embeddings, checksum=_checksum(keys, embeddings))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"{uuid.uuid4().hex}.v2.npz")
        _fsync_folder(folder)
    except OSError as exc:  # e.g. the disk filled up: keep the embeddings, warn
        try:
            tmp.unlink()
        except OSError:
            pass
        warnings.warn(
            f"skinfuse embedding cache: could not save embeddings under {folder} "
            f"({type(exc).__name__}: {exc}); they are kept in memory only.",
            UserWarning,
            stacklevel=4,
        )


# -- the entry point -------------------------------------------------------------------------
def encode_cached(
    items, encode, *, config_key: str, cache=True, cache_dir=None, chunk_size=CHUNK_IMAGES
) -> np.ndarray:
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
        Also keep embeddings on disk under ``cache_dir/config_key/``. Checked (created,
        writable) before any encoding.
    chunk_size : int
        Images encoded per call of ``encode``; with ``cache_dir`` each chunk is saved as
        it finishes.
    """
    if not cache:
        out = encode(items)
        _STATS["encoded"] += len(items)
        return out
    folder = None if cache_dir is None else _usable_folder(config_key, cache_dir)
    keys = [image_key(it) for it in items]
    with _LOCK:
        store = _MEMORY.setdefault(config_key, {})
        todo = _missing(keys, store)
        if todo and folder is not None:  # shards written since (by any process) may hold them
            _load_disk(store, folder, config_key)
            todo = _missing(keys, store)
    _STATS["hits"] += len(keys) - sum(1 for k in keys if k in todo)
    _STATS["misses"] += len(todo)
    pending = list(todo.items())
    step = max(1, int(chunk_size))
    for start in range(0, len(pending), step):
        chunk = pending[start : start + step]
        new = np.asarray(encode([items[i] for _, i in chunk]), dtype=np.float32)
        _STATS["encoded"] += len(chunk)
        with _LOCK:
            for (k, _), row in zip(chunk, new):
                store[k] = row
        if folder is not None:
            _save_disk(folder, [k for k, _ in chunk], new)
    return np.stack([store[k] for k in keys]).astype(np.float32, copy=False)


def _missing(keys, store) -> dict[str, int]:
    """Keys not in ``store``, each with the index of its first item."""
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in store and k not in todo:
            todo[k] = i
    return todo


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
        _SHARDS_SEEN.clear()
        _USABLE_DIRS.clear()
        _REFUSED.clear()
        _FILE_KEYS.clear()
        _STATS.clear()
