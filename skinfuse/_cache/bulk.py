"""Bulk embedding: a large collection of images into the on-disk cache, chunk by chunk, in
this process or on the workers of a Dask cluster (:mod:`.dask`, imported only with a
client). The public function is :func:`skinfuse.encoders.embed_images`."""

from __future__ import annotations

import time

from sklearn.utils import Bunch

from .chunks import run_here
from .disk import check_cache_dir


def embed_in_chunks(encoder, items, *, cache_dir, client, chunk_size, torch_threads, verbose):
    """Embed ``items`` (a list of images) with the fitted ``encoder`` into shards under
    ``cache_dir`` (a str), ``chunk_size`` images per shard; return the summary of
    :func:`skinfuse.encoders.embed_images`."""
    step = int(chunk_size)
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    start = time.perf_counter()
    if client is None:
        check_cache_dir(cache_dir)
        results = run_here(encoder, chunks, cache_dir, torch_threads)
        where = "this process"
    else:
        from .dask import run_on

        client.run(check_cache_dir, cache_dir)  # the workers' view of it
        results = run_on(client, encoder, chunks, cache_dir, torch_threads)
        where = f"{len(client.nthreads())} workers"
    summary = Bunch(
        n_images=len(items), encoded=0, skipped=0, n_chunks=len(chunks), worker_seconds=0.0
    )
    folders = set()
    from .._utils._progress import progress

    with progress(
        total=len(items), unit="img", desc=f"embedding ({where})", disable=not verbose
    ) as bar:
        for done in results:
            summary.encoded += done["encoded"]
            summary.skipped += done["skipped"]
            summary.worker_seconds += done["seconds"]
            folders.update(done["folders"])
            bar.update(done["images"])
            bar.set_postfix(encoded=summary.encoded, skipped=summary.skipped, refresh=False)
    summary.folders = sorted(folders)
    summary.seconds = time.perf_counter() - start
    summary.images_per_second = len(items) / summary.seconds
    return summary
