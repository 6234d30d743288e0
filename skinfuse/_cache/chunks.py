"""Bulk embedding, one chunk: its images' embeddings straight to one shard on disk, nothing
kept in memory. The same code runs in this process and on a Dask worker (:mod:`.dask`)."""

from __future__ import annotations

import hashlib
import time

from .._nn.device import resolve_device
from .._utils._malloc import restore_mmap_threshold
from ..images import check_image_files
from .disk import is_whole, save_disk, usable_folder
from .embeddings import count_encoded
from .keys import image_key


class ShardWriter:
    """Where an encoder's bulk embedding (``encoder._embed_to_shards(items, writer)``) sends
    its work: :meth:`write` per configuration key.

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

    def write(self, items, encode, config_key: str) -> None:
        """Embed ``items`` with ``encode`` (``encode(list_of_items) -> ndarray (n, d)``) into
        one shard under ``cache_dir/config_key``, unless that shard is on disk and whole."""
        restore_mmap_threshold()  # in a Dask worker, encoding ~1.6x faster (_utils/_malloc.py)
        folder = usable_folder(config_key, self.cache_dir)
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
        if not is_whole(shard):
            new = encode([items[i] for i in first.values()])
            count_encoded(len(first))
            save_disk(folder, list(first), new, name=shard.name, strict=True)
            self.encoded += len(first)


def prepared(encoder):
    """A copy of the fitted ``encoder`` (sharing its modules) that shows no progress bar and,
    where its ``device`` is ``"auto"``, runs on this process's device (a Dask worker's GPU)."""
    mine = object.__new__(type(encoder))
    mine.__dict__.update(encoder.__dict__)
    mine.__dict__.pop("_device_copies", None)  # its own copies on its own device
    if hasattr(mine, "verbose"):
        mine.verbose = 0
    if getattr(encoder, "device", None) in (None, "auto"):
        mine.device_ = resolve_device("auto")
    return mine


def embed_chunk(items, encoder, cache_dir) -> dict:
    """Embed one chunk with a :func:`prepared` encoder into one shard per configuration key
    (or find its shards on disk); return the counters."""
    start = time.perf_counter()
    check_image_files(items, on_error="raise")
    writer = ShardWriter(cache_dir)
    encoder._embed_to_shards(items, writer)
    return {  # per image of the chunk, whatever the number of shards it needs (views)
        "images": len(items),
        "encoded": writer.unique if writer.encoded else 0,
        "skipped": 0 if writer.encoded else len(items),
        "folders": sorted(writer.folders),
        "seconds": time.perf_counter() - start,
    }


def run_here(encoder, chunks, cache_dir, torch_threads):
    """Counters of each chunk, embedded one after another in this process."""
    import torch

    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    mine = prepared(encoder)  # afresh for each call: the encoder may have been refitted
    try:
        for chunk in chunks:
            yield embed_chunk(chunk, mine, cache_dir)
    finally:
        torch.set_num_threads(threads)
