"""embed_images: a large collection of images into the on-disk embedding cache, chunk by
chunk, in this process or on the workers of a Dask cluster (the machinery:
:mod:`skinfuse._cache.bulk`)."""

from __future__ import annotations

import os
from numbers import Integral

from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .._cache.bulk import embed_in_chunks
from .._nn.names import NO_DISK
from .._utils._sklearn import HasMethods, Interval, validate_params
from ..images import as_image_list
from ._base import BaseImageEncoder

#: images per chunk (one task, one shard) by default
CHUNK_SIZE = 1024


@validate_params(
    {
        "encoder": [BaseImageEncoder],
        "images": ["array-like"],
        "cache_dir": [str, os.PathLike],
        "client": [None, HasMethods(["submit", "map"])],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "torch_threads": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def embed_images(
    encoder,
    images,
    *,
    cache_dir,
    client=None,
    chunk_size=CHUNK_SIZE,
    torch_threads=None,
    verbose=1,
):
    """Embed a large collection of images into the on-disk embedding cache, chunk by chunk.

    The images are split into chunks of ``chunk_size``. Each chunk is embedded (on a
    worker of ``client``'s Dask cluster, or in this process without a client) and saved
    at once as one shard under ``cache_dir``, named by the content of its images; nothing
    is kept in memory, so a worker's memory does not grow with the number of images. Any
    encoder with the same configuration and ``cache_dir`` then reads these embeddings
    instead of computing them (``transform``, ``fit`` of a pipeline, ``GridSearchCV``),
    loading only the images it is asked for.

    Faults: a chunk whose worker dies is run again elsewhere (Dask retries it); finished
    chunks are on disk. Run the same call again after an interruption or an error: chunks
    whose shard is on disk are skipped (their images are read and hashed, not encoded).

    Parameters
    ----------
    encoder : FrozenCNNEncoder, FineTunedCNNEncoder or ConvAutoencoderEncoder
        A fitted encoder, or an unfitted :class:`FrozenCNNEncoder` (whose ``fit`` learns
        nothing: a clone is fitted here and ``encoder`` is left as it is). With a client,
        it goes to each worker once (a worker plugin), not with every chunk. Where its
        ``device`` is ``"auto"``, each worker uses its own device (a GPU where it sees
        one: one worker per GPU, with ``CUDA_VISIBLE_DEVICES`` set per worker).
        Embeddings made on a GPU are kept apart from CPU ones (bf16), as the encoder
        itself does.
    images : column of images
        File paths (list, array, Series or one-column DataFrame) or image arrays. Paths
        must be readable by the workers; they are checked there, chunk by chunk.
    cache_dir : str or path-like
        The embedding cache's folder (created if missing), shared by the workers and by
        whoever fits afterwards: ``FrozenCNNEncoder(..., cache_dir=cache_dir)``.
    client : distributed.Client or None, default=None
        Run the chunks on this client's cluster. ``None``: in this process, one chunk
        after another.
    chunk_size : int, default=1024
        Images per chunk: per task, per shard, and what a dying worker loses at most.
        A worker holds one chunk's embeddings at a time (1,024 x 1,280 float32 = 5 MB
        for EfficientNet-Lite0).
    torch_threads : int or None, default=None
        Threads torch uses while embedding (set with ``torch.set_num_threads``, per
        worker process). ``None`` leaves torch's setting: one thread in a Dask worker
        started by a nanny (Dask sets ``OMP_NUM_THREADS=1``), all cores in this process.
    verbose : int, default=1
        Show a progress bar of images done (> 0), or nothing (0).

    Returns
    -------
    summary : Bunch
        ``n_images`` (images given), ``encoded`` (images that went through the network),
        ``skipped`` (images of chunks found on disk), ``n_chunks``, ``folders`` (the
        shards' folders: ``cache_dir/<configuration>``), ``seconds`` and
        ``images_per_second`` (images given per second of this call), and
        ``worker_seconds`` (time spent in the chunks, all workers together: ``encoded /
        worker_seconds`` is the rate of one worker, scheduling and transfers left out).

    Notes
    -----
    On a cluster (``pip install "skinfuse[distributed]"``), see docs/scaling.md::

        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
            embed_images(encoder, paths, cache_dir="cache", client=client)

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skinfuse.encoders import FrozenCNNEncoder, embed_images
    >>> images = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    >>> encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32, pooling="avg")
    >>> cache_dir = tempfile.mkdtemp()
    >>> done = embed_images(encoder, images, cache_dir=cache_dir, chunk_size=4, verbose=0)
    >>> done.n_chunks, done.encoded
    (3, 10)
    >>> embed_images(encoder, images, cache_dir=cache_dir, chunk_size=4, verbose=0).skipped
    10
    >>> encoder.set_params(cache_dir=cache_dir).fit(images).transform(images).shape
    (10, 64)
    """
    encoder = _fitted(encoder)
    if encoder.config_key_.startswith(NO_DISK):
        raise ValueError(
            f"embed_images needs embeddings that can be cached on disk, and this "
            f"{type(encoder).__name__}'s module has no readable source code. Define the "
            "module in a .py file that Python imports (not in exec() or an interactive "
            "session without source)."
        )
    items = as_image_list(images)
    if not items:
        raise ValueError("embed_images got 0 images; pass at least one.")
    return embed_in_chunks(
        encoder, items, cache_dir=os.fspath(cache_dir), client=client, chunk_size=chunk_size,
        torch_threads=torch_threads, verbose=verbose,
    )  # fmt: skip


def _fitted(encoder):
    """``encoder`` if fitted; a fitted clone of an unfitted FrozenCNNEncoder; else an error."""
    try:
        check_is_fitted(encoder, "config_key_")
        return encoder
    except NotFittedError:
        pass
    from ._frozen import FrozenCNNEncoder

    if not isinstance(encoder, FrozenCNNEncoder):
        raise ValueError(
            f"embed_images needs a fitted {type(encoder).__name__} (it learns from data): "
            "call fit first, or pass a FrozenCNNEncoder, which is fitted here."
        )
    import numpy as np

    # fit only builds the network: a blank image stands in for the data (which the
    # workers, not this process, may be the ones to see)
    return clone(encoder).fit(np.zeros((1, 8, 8, 3), dtype=np.uint8))
