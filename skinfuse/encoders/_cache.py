"""The embedding cache: an image already encoded with the same encoder configuration is never
encoded again, in this process (memory) and, with ``cache_dir``, across processes (disk).

Keys: the image's content (a blake2b hash of a file's bytes, so a copy, a symlink or
another spelling of a path shares the file's embedding and a replaced file never serves
a stale one; of the pixels, shape and dtype for arrays) and the encoder's configuration
key (a hash of its weights, its code for a custom module, and every setting that changes
the output), so a changed image or a changed setting re-encodes.

On disk, ``cache_dir/<config_key>/`` holds shards ``<name>.v2.npz`` (keys, embeddings and a
checksum of both). A shard is written under a temporary name that readers never match,
flushed to disk, then renamed into place, so readers see whole shards or none; several
processes may read and write one ``cache_dir`` at once. A shard that cannot be read or
fails its checksum is skipped with a warning and renamed to ``*.corrupt``; its images are
encoded again. Long encodings save a shard after every chunk of images, so an interrupted
run keeps what it finished.

Reading: each process indexes the shards' keys (not their embeddings) and reads, shard by
shard, only the shards holding images it is asked for, keeping only those images. In
memory, configurations whose embeddings are all on disk too are dropped, least recently
used first, beyond :data:`MEMORY_LIMIT_BYTES` (they are read back when asked for again).

Writing: processes encode a configuration one at a time (a lock file in its folder) and
look on disk again once they hold the lock, so processes sharing a ``cache_dir`` encode
each image once. Bulk embedding (:func:`writing_shards`, used by
:func:`skinfuse.encoders.embed_images`) writes each chunk of images to a shard named by the
chunk's content and keeps nothing in memory.
"""

from __future__ import annotations

import contextlib
import contextvars
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
from .._utils._malloc import restore_mmap_threshold

try:  # cross-process lock around encoding (POSIX); elsewhere each process encodes on its own
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

_MEMORY: dict[str, dict[str, np.ndarray]] = {}  # config_key -> image key -> embedding; LRU order
_BYTES: Counter = Counter()  # config_key -> bytes of its embeddings in _MEMORY
_PINNED: set[str] = set()  # config keys with embeddings held in memory only (never dropped)
_INDEX: dict[tuple[str, str], _ShardIndex] = {}  # (config_key, folder) -> what its shards hold
_FOLDER_LOCKS: dict[str, threading.Lock] = {}
_USABLE_DIRS: set[str] = set()  # cache_dirs checked in this process
_REFUSED: set[str] = set()  # config keys warned about (no disk cache)
_FILE_KEYS: dict[tuple, str] = {}  # (realpath, size, mtime_ns, ctime_ns, inode) -> content key
_LOCK = threading.Lock()
_STATS: Counter = Counter()

#: images encoded between two shards on disk (rounded by the caller to whole batches)
CHUNK_IMAGES = 2048
#: embeddings of configurations also on disk kept in memory beyond the one in use (bytes);
#: the least recently used of them are dropped first, and read back from disk when asked for
MEMORY_LIMIT_BYTES = 2 * 1024**3
_LOCK_NAME = ".lock"
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


def image_key(item, *, memo: bool = True) -> str:
    """A string that changes when the image changes: a hash of the file's bytes or the array.

    With ``memo``, a file is read once per process while its path, size, times and inode
    stay the same; without, it is read again and nothing is remembered (bulk embedding,
    whose memory must not grow with the number of images). A missing file gets a key no
    real image has.
    """
    if isinstance(item, str):
        path = os.path.realpath(item)
        try:
            st = os.stat(path)
            stamp = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            key = _FILE_KEYS.get(stamp) if memo else None
            if key is None:
                key = f"f|{_file_digest(path)}"
                if memo:
                    _FILE_KEYS[stamp] = key
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
    _check_keys(keys)
    if embeddings.ndim != 2 or embeddings.dtype != np.float32 or len(embeddings) != len(keys):
        raise ValueError(f"embeddings are {embeddings.dtype} of shape {embeddings.shape}")
    if not np.array_equal(checksum, _checksum(keys, embeddings)):
        raise ValueError("checksum mismatch")
    return keys, embeddings


def _read_keys(shard: Path) -> np.ndarray:
    """The keys of a shard alone (its embeddings are not read; the checksum is checked when
    they are)."""
    with np.load(shard, allow_pickle=False) as data:
        keys = data["keys"]
    _check_keys(keys)
    return keys


def _check_keys(keys) -> None:
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise ValueError(f"keys are {keys.dtype} of shape {keys.shape}")


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


class _ShardIndex:
    """Which shard of a folder holds which image key, read from the shards' keys alone."""

    __slots__ = ("seen", "where")

    def __init__(self):
        self.seen: set[str] = set()  # names of the shards indexed
        self.where: dict[str, str] = {}  # image key -> shard name

    def forget(self, name: str) -> None:
        """Drop a shard that is gone or unreadable (its images are then encoded again)."""
        self.seen.discard(name)
        self.where = {k: v for k, v in self.where.items() if v != name}


def _index(folder: Path, config_key: str) -> _ShardIndex:
    """The index of ``folder``, brought up to date with shards written since, by any process."""
    index = _INDEX.get((config_key, str(folder)))
    if index is None:
        index = _INDEX[(config_key, str(folder))] = _ShardIndex()
        if folder.is_dir():
            _remove_stale_tmp(folder)
    if not folder.is_dir():
        return index
    for shard in sorted(folder.glob(_SHARD_GLOB)):
        if shard.name in index.seen:
            continue
        try:
            keys = _read_keys(shard)
        except FileNotFoundError:  # moved aside by another process after the glob
            continue
        except Exception as exc:  # zero bytes, truncated, bad zip, wrong arrays
            _set_aside(shard, exc)
            continue
        index.seen.add(shard.name)
        for k in keys.tolist():
            index.where.setdefault(k, shard.name)
    return index


def _load_disk(store: dict, folder: Path, config_key: str, wanted) -> None:
    """Copy into ``store`` the embeddings of the ``wanted`` keys it lacks that ``folder``
    holds: shard by shard, keeping only those rows (not every image of the configuration)."""
    index = _index(folder, config_key)
    by_shard: dict[str, list[str]] = {}
    for k in wanted:
        name = index.where.get(k)
        if name is not None and k not in store:
            by_shard.setdefault(name, []).append(k)
    for name, keys in by_shard.items():
        shard = folder / name
        try:
            shard_keys, embeddings = _read_shard(shard)
        except FileNotFoundError:  # moved aside by another process
            index.forget(name)
            continue
        except Exception as exc:  # bit flip, cut short, wrong arrays
            _set_aside(shard, exc)
            index.forget(name)
            continue
        row_of = {k: i for i, k in enumerate(shard_keys.tolist())}
        keys = [k for k in keys if k in row_of]
        rows = embeddings[[row_of[k] for k in keys]]  # a copy: the rest of the shard is freed
        for k, row in zip(keys, rows):
            store[k] = row
        _BYTES[config_key] += rows.nbytes


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


def _save_disk(folder: Path, keys, embeddings, *, name=None, strict=False) -> bool:
    """Write one shard atomically: a temporary file, flushed and synced, then renamed.

    ``name`` defaults to a new random one. True when saved; when the disk refuses, a
    warning (the caller keeps the embeddings in memory), or the error itself with ``strict``.
    """
    keys = np.asarray(keys, dtype=str)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, embeddings=embeddings, checksum=_checksum(keys, embeddings))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / (name or f"{uuid.uuid4().hex}.v2.npz"))
        _fsync_folder(folder)
        return True
    except OSError as exc:  # e.g. the disk filled up: keep the embeddings, warn
        try:
            tmp.unlink()
        except OSError:
            pass
        if strict:
            raise
        warnings.warn(
            f"skinfuse embedding cache: could not save embeddings under {folder} "
            f"({type(exc).__name__}: {exc}); they are kept in memory only.",
            UserWarning,
            stacklevel=4,
        )
        return False


@contextlib.contextmanager
def _encoding_lock(folder: Path | None):
    """One encoding at a time per configuration folder, across threads and processes.

    Whoever waited then finds on disk what the other one encoded, so processes sharing a
    ``cache_dir`` (a grid search on a cluster) encode each image once. The lock is a POSIX
    record lock on ``folder/.lock`` (NFS included), released by the system if its holder
    dies; where there is none (Windows, a file system without locks), processes do not wait
    for each other and may encode an image twice.
    """
    if folder is None:
        yield
        return
    with _LOCK:
        lock = _FOLDER_LOCKS.setdefault(str(folder), threading.Lock())
    with lock:  # threads of this process; the record lock below is per process
        handle = _lock_file(folder)
        try:
            yield
        finally:
            if handle is not None:
                handle.close()  # releases the record lock


def _lock_file(folder: Path):
    """``folder/.lock`` open and locked; None where that is not possible."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / _LOCK_NAME, "a+b")
    except OSError:
        return None
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX)
    except OSError:
        handle.close()
        return None
    return handle


# -- bulk embedding: straight to disk --------------------------------------------------------
_SINK: contextvars.ContextVar = contextvars.ContextVar("skinfuse_shard_sink", default=None)


class ShardWriter:
    """Where :func:`encode_cached` sends its work inside :func:`writing_shards`.

    Each call becomes one shard named by the content of its images (a hash of their keys),
    so a call whose shard is on disk and whole is skipped (a rerun resumes; a call redone
    after a worker died writes the same file again) and nothing is kept in memory. An
    encoder may call several times for one chunk (one call per configuration key, e.g.
    per test-time view); each file is read once per writer. Counters: ``calls``,
    ``encoded`` (images through the network, all calls together), ``unique`` (distinct
    images of the last call); ``folders``: where shards went.
    """

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir
        self.calls = self.encoded = self.unique = 0
        self.folders: set[str] = set()
        self._file_keys: dict[str, str] = {}  # this writer's files only: bounded by a chunk

    def _key(self, item) -> str:
        if not isinstance(item, str):
            return image_key(item, memo=False)
        key = self._file_keys.get(item)
        if key is None:
            key = self._file_keys[item] = image_key(item, memo=False)
        return key

    def write(self, items, encode, config_key: str) -> np.ndarray:
        folder = _usable_folder(config_key, self.cache_dir)
        if folder is None:
            raise ValueError(
                f"this encoder's embeddings cannot be cached on disk (configuration "
                f"{config_key!r}): define its module in a .py file that Python imports"
            )
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            first.setdefault(self._key(item), i)
        digest = hashlib.blake2b("\n".join(sorted(first)).encode(), digest_size=16)
        shard = folder / f"{digest.hexdigest()}.v2.npz"
        self.calls += 1
        self.unique = len(first)
        self.folders.add(str(folder))
        if not _whole(shard):
            new = encode([items[i] for i in first.values()])
            _STATS["encoded"] += len(first)
            _save_disk(folder, list(first), new, name=shard.name, strict=True)
            self.encoded += len(first)
        return np.zeros((len(items), 0), dtype=np.float32)


def _whole(shard: Path) -> bool:
    """``shard`` exists and reads back whole (one that does not is set aside)."""
    try:
        _read_shard(shard)
    except FileNotFoundError:
        return False
    except Exception as exc:
        _set_aside(shard, exc)
        return False
    return True


@contextlib.contextmanager
def writing_shards(cache_dir):
    """In this block (this thread), the encoders' embeddings go to shards under ``cache_dir``
    and are not kept in memory: ``encoder._embed(items)`` writes one shard (or finds it on
    disk) and returns an empty ``(n, 0)`` array. Yields the :class:`ShardWriter`."""
    writer = ShardWriter(cache_dir)
    token = _SINK.set(writer)
    try:
        yield writer
    finally:
        _SINK.reset(token)


# -- the entry point -------------------------------------------------------------------------
def encode_cached(
    items, encode, *, config_key: str, cache=True, cache_dir=None, chunk_size=CHUNK_IMAGES
) -> np.ndarray:
    """Return ``encode(items)``, computing only the rows that are not cached yet.

    Inside :func:`writing_shards`, write the embeddings to a shard instead (and return an
    empty array).

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
        writable) before any encoding. Only the shards holding images asked for are read,
        and only those images are kept.
    chunk_size : int
        Images encoded per call of ``encode``; with ``cache_dir`` each chunk is saved as
        it finishes, and encoded under the folder's lock after looking on disk once more.
    """
    restore_mmap_threshold()  # in a Dask worker, encoding ~1.6x faster (see _utils/_malloc.py)
    sink = _SINK.get()
    if sink is not None:
        return sink.write(items, encode, config_key)
    if not cache:
        out = encode(items)
        _STATS["encoded"] += len(items)
        return out
    folder = None if cache_dir is None else _usable_folder(config_key, cache_dir)
    keys = [image_key(it) for it in items]
    with _LOCK:
        store = _store(config_key)
        todo = _missing(keys, store)
        if todo and folder is not None:  # shards written since (by any process) may hold them
            _load_disk(store, folder, config_key, todo)
            todo = _missing(keys, store)
    _STATS["hits"] += len(keys) - sum(1 for k in keys if k in todo)
    _STATS["misses"] += len(todo)
    pending = list(todo.items())
    step = max(1, int(chunk_size))
    for start in range(0, len(pending), step):
        chunk = pending[start : start + step]
        with _encoding_lock(folder):
            if folder is not None:  # encoded by another process while this one waited?
                with _LOCK:
                    _load_disk(store, folder, config_key, [k for k, _ in chunk])
                chunk = [(k, i) for k, i in chunk if k not in store]
                if not chunk:
                    continue
            new = np.asarray(encode([items[i] for _, i in chunk]), dtype=np.float32)
            _STATS["encoded"] += len(chunk)
            saved = folder is not None and _save_disk(folder, [k for k, _ in chunk], new)
        with _LOCK:
            for (k, _), row in zip(chunk, new):
                store[k] = row
            _BYTES[config_key] += new.nbytes
            if not saved:
                _PINNED.add(config_key)
    with _LOCK:
        out = np.stack([store[k] for k in keys]).astype(np.float32, copy=False)
        _trim_memory(config_key)
    return out


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
        _INDEX.clear()
        _USABLE_DIRS.clear()
        _REFUSED.clear()
        _FILE_KEYS.clear()
        _STATS.clear()
