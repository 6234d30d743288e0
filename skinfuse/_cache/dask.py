"""embed_images on a Dask cluster: the encoder goes to every worker as a worker plugin, and
the chunks run as tasks. Imported only when a client is given (it imports distributed)."""

from __future__ import annotations

import threading
import uuid

from distributed import WorkerPlugin, as_completed, get_worker

from . import chunks


class EncoderPlugin(WorkerPlugin):
    """A fitted encoder on every worker of a cluster, those that join later included.

    The scheduler keeps it and hands it to each worker as it registers, so a worker
    restarted after dying has it too; nothing is lost with a worker (data scattered or
    computed on the cluster can be, or can be fetched anew for every chunk). Each worker
    prepares it once, on its own device (:func:`~skinfuse._cache.chunks.prepared`).
    """

    def __init__(self, encoder, name):
        self.encoder = encoder
        self.name = name
        self._ready = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"encoder": self.encoder, "name": self.name}

    def __setstate__(self, state):
        self.__init__(state["encoder"], state["name"])

    def prepared(self):
        with self._lock:
            if self._ready is None:
                self._ready = chunks.prepared(self.encoder)
            return self._ready


def embed_chunk_on_worker(items, plugin_name, cache_dir, torch_threads):
    """The task of one chunk, on a worker."""
    if torch_threads is not None:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    encoder = get_worker().plugins[plugin_name].prepared()
    return chunks.embed_chunk(items, encoder, cache_dir)


def run_on(client, encoder, chunks, cache_dir, torch_threads):
    """Counters of each chunk as it finishes on the cluster (in any order).

    Each finished chunk's future is released at once, so a worker that dies later costs no
    finished chunk; a chunk whose worker dies is retried by the scheduler
    (``distributed.scheduler.allowed-failures`` times). On an error or an interruption the
    chunks not finished are cancelled. The plugin is removed at the end.
    """
    name = f"skinfuse-encoder-{uuid.uuid4().hex}"
    client.register_plugin(EncoderPlugin(encoder, name), name=name)
    try:
        running = set(
            client.map(
                embed_chunk_on_worker,
                chunks,
                plugin_name=name,
                cache_dir=cache_dir,
                torch_threads=torch_threads,
                pure=False,
            )
        )
        try:
            for future in as_completed(list(running)):
                running.discard(future)
                result = future.result()  # a chunk's error is raised here
                del future  # released: its result is here, nothing to recompute
                yield result
        finally:
            if running:
                client.cancel(list(running))
    finally:
        client.unregister_worker_plugin(name)
