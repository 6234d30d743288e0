"""embed_images in this process: chunks straight to disk, nothing kept in memory, resumable,
read back by any encoder of the same configuration. (On a Dask cluster: test_distributed.py.)"""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skinfuse._cache import chunks
from skinfuse._cache import keys as image_keys
from skinfuse.encoders import (
    FineTunedCNNEncoder,
    FrozenCNNEncoder,
    cache_info,
    clear_cache,
    embed_images,
)

TINY = dict(backbone="tiny_cnn", weights=None, image_size=16, batch_size=4)


def _paths(folder, n=30, seed=0):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _shards(cache_dir):
    return sorted(cache_dir.rglob("*.v2.npz"))


def _expected(paths):
    return FrozenCNNEncoder(**TINY, cache=False).fit(paths).transform(paths)


def test_chunks_go_to_disk_and_any_encoder_of_the_configuration_reads_them(tmp_path):
    paths = _paths(tmp_path / "images")
    cache_dir = tmp_path / "cache"
    encoder = FrozenCNNEncoder(**TINY)
    done = embed_images(encoder, paths, cache_dir=cache_dir, chunk_size=8, verbose=0)
    assert (done.n_images, done.encoded, done.skipped, done.n_chunks) == (30, 30, 0, 4)
    assert 0 < done.worker_seconds <= done.seconds
    assert len(_shards(cache_dir)) == 4
    assert done.folders == [str(_shards(cache_dir)[0].parent)]
    assert not hasattr(encoder, "config_key_")  # a clone was fitted, not the caller's
    # nothing kept in this process: no embedding, no remembered file key
    assert cache_info()["images"] == 0 and not image_keys._FILE_KEYS
    clear_cache()
    out = encoder.set_params(cache_dir=str(cache_dir)).fit(paths).transform(paths)
    assert cache_info()["encoded"] == 0
    np.testing.assert_allclose(out, _expected(paths), rtol=0, atol=1e-5)


def test_a_rerun_skips_finished_chunks_and_encodes_the_rest(tmp_path, monkeypatch):
    paths = _paths(tmp_path / "images")
    cache_dir = tmp_path / "cache"
    import skinfuse._nn.inference as inference

    real, calls = inference.embed, []

    def interrupted(module, todo, *args, **kwargs):
        calls.append(len(todo))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(module, todo, *args, **kwargs)

    monkeypatch.setattr(inference, "embed", interrupted)
    encoder = FrozenCNNEncoder(**TINY).fit(paths)
    with pytest.raises(KeyboardInterrupt):
        embed_images(encoder, paths, cache_dir=cache_dir, chunk_size=8, verbose=0)
    assert len(_shards(cache_dir)) == 2
    monkeypatch.setattr(inference, "embed", real)
    again = embed_images(encoder, paths, cache_dir=cache_dir, chunk_size=8, verbose=0)
    assert (again.encoded, again.skipped) == (14, 16)
    assert len(_shards(cache_dir)) == 4
    third = embed_images(encoder, paths, cache_dir=cache_dir, chunk_size=8, verbose=0)
    assert (third.encoded, third.skipped) == (0, 30)
    clear_cache()
    out = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(paths).transform(paths)
    assert cache_info()["encoded"] == 0
    np.testing.assert_allclose(out, _expected(paths), rtol=0, atol=1e-5)


def test_a_corrupt_chunk_is_encoded_again(tmp_path):
    paths = _paths(tmp_path / "images", n=12)
    cache_dir = tmp_path / "cache"
    encoder = FrozenCNNEncoder(**TINY).fit(paths)
    embed_images(encoder, paths, cache_dir=cache_dir, chunk_size=8, verbose=0)
    shard = _shards(cache_dir)[0]
    with np.load(shard) as data:
        n_keys = len(data["keys"])
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"unreadable shard .*{shard.name}"):
        again = embed_images(encoder, paths, cache_dir=cache_dir, chunk_size=8, verbose=0)
    assert (again.encoded, again.skipped) == (n_keys, 12 - n_keys)
    assert (shard.parent / f"{shard.name}.corrupt").exists() and shard.exists()
    out = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(paths).transform(paths)
    np.testing.assert_allclose(out, _expected(paths), rtol=0, atol=1e-5)


def test_torch_threads_is_used_while_embedding_and_restored(tmp_path, monkeypatch):
    paths = _paths(tmp_path / "images", n=6)
    import skinfuse._nn.inference as inference

    real, seen = inference.embed, []
    monkeypatch.setattr(
        inference, "embed", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k)
    )
    before = torch.get_num_threads()
    embed_images(
        FrozenCNNEncoder(**TINY), paths, cache_dir=tmp_path / "c", torch_threads=2, verbose=0
    )
    assert seen == [2] and torch.get_num_threads() == before


def test_each_process_picks_its_own_device_where_device_is_auto():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    auto = FrozenCNNEncoder(**TINY).fit(images)
    auto.device_ = "cuda"  # as if fitted on a machine with a GPU, shipped to one without
    mine = chunks.prepared(auto)
    assert mine.device_ == "cpu" and auto.device_ == "cuda"
    assert mine.embedder_ is auto.embedder_  # the weights are shared, not copied
    fixed = FrozenCNNEncoder(**TINY, device="cpu").fit(images)
    assert chunks.prepared(fixed).device_ == "cpu"


def _hidden_module():
    namespace = {"__name__": "not_a_file"}
    exec(
        "from torch import nn\n"
        "class Hidden(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)\n",
        namespace,
    )
    return namespace["Hidden"]()


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    paths = _paths(tmp_path / "images", n=4)
    cache_dir = tmp_path / "cache"
    kw = dict(cache_dir=cache_dir, verbose=0)
    with pytest.raises(ValueError, match="needs a fitted FineTunedCNNEncoder"):
        embed_images(FineTunedCNNEncoder(backbone="tiny_cnn"), paths, **kw)
    with pytest.raises(ValueError, match=r"image file not found: .*gone\.png"):
        embed_images(FrozenCNNEncoder(**TINY), [*paths, str(tmp_path / "gone.png")], **kw)
    with pytest.raises(ValueError, match="got 0 images"):
        embed_images(FrozenCNNEncoder(**TINY), [], **kw)
    with pytest.raises(ValueError, match="no readable source code"):
        embed_images(FrozenCNNEncoder(_hidden_module(), weights=None, image_size=16), paths, **kw)
    with pytest.raises(InvalidParameterError, match="'chunk_size' parameter"):
        embed_images(FrozenCNNEncoder(**TINY), paths, chunk_size=0, **kw)
    with pytest.raises(InvalidParameterError, match="'encoder' parameter"):
        embed_images(StandardScaler(), paths, **kw)
    assert not _shards(cache_dir)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        embed_images(FrozenCNNEncoder(**TINY), paths, cache_dir=tmp_path / "file", verbose=0)


def test_a_refitted_encoder_is_not_served_stale(tmp_path):
    paths = _paths(tmp_path / "images", n=6)
    encoder = FrozenCNNEncoder(**TINY).fit(paths)
    first = embed_images(encoder, paths, cache_dir=tmp_path / "c", verbose=0)
    encoder.set_params(image_size=12).fit(paths)  # another configuration, same object
    second = embed_images(encoder, paths, cache_dir=tmp_path / "c", verbose=0)
    assert second.encoded == 6 and second.folders != first.folders


class _TwoCalls(FrozenCNNEncoder):
    """Encodes each chunk through two cache calls of two configurations, as an encoder with
    test-time views does (one configuration key per view)."""

    def _embed(self, items, *, pixels=None):
        out = super()._embed(items)
        key = self.config_key_
        self.config_key_ = f"{key}-flipped"
        try:
            return out + super()._embed(items)
        finally:
            self.config_key_ = key

    def _embed_to_shards(self, items, writer):  # embed_images: the same two cache calls
        super()._embed_to_shards(items, writer)
        key = self.config_key_
        self.config_key_ = f"{key}-flipped"
        try:
            super()._embed_to_shards(items, writer)
        finally:
            self.config_key_ = key


def test_an_encoder_with_several_cache_calls_counts_each_image_once(tmp_path, monkeypatch):
    paths = _paths(tmp_path / "images", n=10)
    reads = []
    real = image_keys._file_digest
    monkeypatch.setattr(image_keys, "_file_digest", lambda p: reads.append(p) or real(p))
    encoder = _TwoCalls(**TINY).fit(paths)
    reads.clear()
    done = embed_images(encoder, paths, cache_dir=tmp_path / "c", chunk_size=4, verbose=0)
    assert (done.encoded, done.skipped, len(done.folders)) == (10, 0, 2)
    assert len(_shards(tmp_path / "c")) == 6 and len(reads) == 10  # each file read once
    again = embed_images(encoder, paths, cache_dir=tmp_path / "c", chunk_size=4, verbose=0)
    assert (again.encoded, again.skipped) == (0, 10)


def test_device_decoding_goes_into_shards_of_its_own(tmp_path):
    folder = tmp_path / "images"
    paths = [path.replace(".png", ".jpg") for path in _paths(folder, n=10)]
    for path in paths:
        Image.open(path.replace(".jpg", ".png")).save(path, quality=90)
    expected = FrozenCNNEncoder(**TINY, decode="device", cache=False).fit(paths).transform(paths)
    cache_dir = tmp_path / "cache"
    device = FrozenCNNEncoder(**TINY, decode="device")
    clear_cache()
    done = embed_images(device, paths, cache_dir=cache_dir, chunk_size=4, verbose=0)
    assert done.encoded == 10 and len(done.folders) == 1
    assert done.folders[0].endswith("-devdecode")
    clear_cache()
    out = device.set_params(cache_dir=str(cache_dir)).fit(paths).transform(paths)
    assert cache_info()["encoded"] == 0
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    # Pillow's pixels are not in these shards
    FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(paths).transform(paths)
    assert cache_info()["encoded"] == 10


def test_a_partially_fine_tuned_encoder_embeds_in_bulk(tmp_path):
    # its trunk activations go through the embedding cache as usual; only the embeddings
    # themselves go to the shards (with a context variable, both did, and it failed)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    encoder = FineTunedCNNEncoder(
        **TINY, max_epochs=1, trainable_blocks=1, cached_views=1, validation_fraction=0,
        random_state=0, verbose=0,
    ).fit(images, np.array([0, 1] * 6))  # fmt: skip
    expected = encoder.transform(images)
    clear_cache()
    done = embed_images(encoder, images, cache_dir=tmp_path / "c", chunk_size=6, verbose=0)
    assert (done.encoded, done.n_chunks, len(_shards(tmp_path / "c"))) == (12, 2, 2)
    clear_cache()
    out = encoder.set_params(cache_dir=str(tmp_path / "c")).transform(images)
    assert cache_info()["encoded"] == 0
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)  # other batches (6, not 12)
