"""The embedding cache on disk: the cache folder, its shards, their index and the lock.

``cache_dir/<config_key>/`` holds shards ``<name>.v2.npz`` (keys, embeddings and a checksum
of both). A shard is written under a temporary name that readers never match, flushed to
disk, then renamed into place, so readers see whole shards or none; several processes may
read and write one ``cache_dir`` at once. A shard that cannot be read or fails its checksum
is skipped with a warning and renamed to ``*.corrupt``; its images are encoded again.

Each process indexes the shards' keys (not their embeddings) and reads only the shards
holding images it is asked for. Processes encode a configuration one at a time (a lock
file in its folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from .._nn.names import NO_DISK

try:  # cross-process lock around encoding (POSIX); elsewhere each process encodes on its own
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

_INDEX: dict[tuple[str, str], _ShardIndex] = {}  # (config_key, folder) -> what its shards hold
_FOLDER_LOCKS: dict[str, threading.Lock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()
_USABLE_DIRS: set[str] = set()  # cache_dirs checked in this process
_REFUSED: set[str] = set()  # config keys warned about (no disk cache)

_LOCK_NAME = ".lock"
_SHARD_GLOB = "*.v2.npz"
_TMP_PREFIX = ".tmp-"  # no .npz suffix: the shard glob never matches a file being written
_STALE_TMP_S = 3600.0


# -- the cache folder ------------------------------------------------------------------------
def check_cache_dir(cache_dir, *, cache=True) -> Path | None:
    """Create ``cache_dir`` if needed and check that files can be written there.

    The one check of ``cache_dir``. Each entry point calls it once, before any training or
    encoding: an encoder's ``fit``, ``FusionNetClassifier.fit``, ``embed_images`` (on every
    Dask worker with a client) and the command line. :func:`encode_cached` checks on first
    use only a folder not checked yet in this process (a model fitted elsewhere, a Dask
    worker); a folder that passed is remembered until :func:`clear_cache`.

    Parameters
    ----------
    cache_dir : str, path-like or None
        The folder. ``None``: no disk cache, nothing to check.
    cache : bool, default=True
        The estimator's ``cache``: ``False`` (no cache at all) checks nothing.

    Returns
    -------
    path : Path or None
        The folder, or ``None`` when nothing was checked.

    Raises
    ------
    ValueError
        Saying what is wrong and how to fix it: a file, a folder that cannot be created,
        one that is not writable.
    """
    if not cache or cache_dir is None:
        return None
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
    _USABLE_DIRS.add(os.path.abspath(path))
    return path


def usable_folder(config_key: str, cache_dir) -> Path | None:
    """``cache_dir/config_key``, ``cache_dir`` checked if not yet in this process; None: no
    disk cache for this configuration (its module's code cannot be read: warned once)."""
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
    # float16: cached activations of partial fine-tuning (their config keys say so, "-f16")
    floats = embeddings.dtype in (np.float32, np.float16)
    if embeddings.ndim != 2 or not floats or len(embeddings) != len(keys):
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


def is_whole(shard: Path) -> bool:
    """``shard`` exists and reads back whole (one that does not is set aside)."""
    try:
        _read_shard(shard)
    except FileNotFoundError:
        return False
    except Exception as exc:
        _set_aside(shard, exc)
        return False
    return True


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files left by killed writers (old ones only: others may be writing now)."""
    now = time.time()
    for tmp in folder.glob(_TMP_PREFIX + "*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass


# -- the index of a folder's shards ----------------------------------------------------------
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


def load_disk(store, folder: Path, config_key: str, wanted) -> int:
    """Copy into ``store`` the embeddings of the ``wanted`` keys it lacks that ``folder``
    holds: shard by shard, keeping only those rows (not every image of the configuration).
    ``store``: a dict, or anything with ``in`` and ``store[key] = row``. Returns the bytes
    added to ``store``."""
    index = _index(folder, config_key)
    by_shard: dict[str, list[str]] = {}
    for k in wanted:
        name = index.where.get(k)
        if name is not None and k not in store:
            by_shard.setdefault(name, []).append(k)
    added = 0
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
        added += rows.nbytes
    return added


# -- writing ---------------------------------------------------------------------------------
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


def save_disk(folder: Path, keys, embeddings, *, name=None, strict=False) -> bool:
    """Write one shard atomically: a temporary file, flushed and synced, then renamed.

    ``name`` defaults to a new random one. True when saved; when the disk refuses, a
    warning (the caller keeps the embeddings in memory), or the error itself with ``strict``.
    """
    keys = np.asarray(keys, dtype=str)
    dtype = np.float16 if np.asarray(embeddings).dtype == np.float16 else np.float32
    embeddings = np.ascontiguousarray(embeddings, dtype=dtype)
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


# -- the lock --------------------------------------------------------------------------------
@contextlib.contextmanager
def encoding_lock(folder: Path | None):
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
    with _FOLDER_LOCKS_GUARD:
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


def forget_disk() -> None:
    """Forget the folders checked, the shards indexed and the warnings given (a new process)."""
    _INDEX.clear()
    _USABLE_DIRS.clear()
    _REFUSED.clear()
