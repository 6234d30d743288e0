"""Image keys: a string that changes when the image changes.

A file's key is a blake2b hash of its bytes, so a copy, a symlink or another spelling of a
path shares the file's embedding and a replaced file never serves a stale one; an array's
is a hash of its pixels, shape and dtype. The encoder configuration is the other half of
a cache entry (its ``config_key``: weights, code, settings), chosen by the encoder.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

_FILE_KEYS: dict[tuple, str] = {}  # (realpath, size, mtime_ns, ctime_ns, inode) -> content key
_READ_BLOCK = 1 << 20


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
