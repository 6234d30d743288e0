"""The embedding cache (private): an image already encoded with the same encoder
configuration is never encoded again, in this process (memory) and, with ``cache_dir``,
across processes (disk).

- :mod:`.keys`: image keys (a hash of a file's bytes, or of an array's pixels).
- :mod:`.disk`: the cache folder (:func:`check_cache_dir`, the one check of ``cache_dir``),
  its shards, their index and the lock around encoding.
- :mod:`.embeddings`: :func:`encode_cached` (memory, then disk, then the encoder),
  :func:`activation_cache`, :func:`cache_info`, :func:`clear_cache`.
- :mod:`.chunks`: bulk embedding of one chunk straight to a shard (:class:`ShardWriter`),
  wherever it runs; :mod:`.bulk`: the chunks in this process or on Dask (:mod:`.dask`,
  imported only with a client). Public face: :func:`skinfuse.encoders.embed_images`.

The package imports nothing of ``skinfuse.encoders``: what it needs of an encoder comes
as an argument (its ``config_key``, its ``encode`` function, ``_embed_to_shards``).
"""

from .disk import check_cache_dir
from .embeddings import (
    activation_cache,
    cache_info,
    chunk_images,
    clear_cache,
    encode_cached,
)

__all__ = [
    "activation_cache",
    "cache_info",
    "check_cache_dir",
    "chunk_images",
    "clear_cache",
    "encode_cached",
]
