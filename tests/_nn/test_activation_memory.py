"""The cached activations of partial fine-tuning in memory: float16 storage under its own cache
keys, training batches gathered by index, and ``activation_memory``, past which they are
memory-mapped (issue 25)."""

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from skinfuse._cache import embeddings
from skinfuse._cache.keys import image_key
from skinfuse._nn import partial
from skinfuse._nn.params import parse_memory
from skinfuse._nn.partial import ActivationDataset, view_activations
from skinfuse.encoders import cache_info, clear_cache
from skinfuse.fusion import FusionNetClassifier

PARTIAL = dict(backbone="tiny_cnn", weights=None, image_size=32, random_state=0, max_epochs=2,
               trainable_blocks=1, cached_views=2, validation_fraction=0.2)  # fmt: skip


def _items(n=6):
    return list(np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))


def _encode(todo):  # a row per image, from its pixels, some beyond float16's precision
    return np.stack([it.reshape(-1)[:10].astype(np.float32) / 7 for it in todo])


def test_float16_rows_round_trip_through_memory_and_disk(tmp_path):
    items = _items()
    expected = _encode(items).astype(np.float16)
    out = np.empty((6, 10), np.float16)
    embeddings.encode_cached(
        items, _encode, config_key="trunk-f16", cache_dir=tmp_path, dtype=np.float16, out=out
    )
    np.testing.assert_array_equal(out, expected)
    # the cache holds rows of ``out`` itself (views), not a copy of them
    assert np.shares_memory(embeddings._MEMORY["trunk-f16"][image_key(items[0])], out)
    (shard,) = tmp_path.rglob("*.v2.npz")
    assert np.load(shard)["embeddings"].dtype == np.float16

    def never(todo):
        raise AssertionError("encoded again")

    clear_cache()  # a new process: from disk, not kept in memory with keep=False
    again = np.zeros((6, 10), np.float16)
    embeddings.encode_cached(items, never, config_key="trunk-f16", cache_dir=tmp_path,
                             dtype=np.float16, out=again, keep=False)  # fmt: skip
    np.testing.assert_array_equal(again, expected)
    assert cache_info()["images"] == 0


def test_fitted_activations_are_cached_as_float16_under_their_own_keys(lesions, tmp_path):
    FusionNetClassifier(**PARTIAL, cache_dir=tmp_path).fit(lesions.data, lesions.target)
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2 and all(name.endswith("-f16") for name in folders)  # two views
    for shard in tmp_path.rglob("*.v2.npz"):
        assert np.load(shard)["embeddings"].dtype == np.float16


def test_the_dataset_gives_float32_batches_of_the_stored_values():
    acts = np.random.default_rng(0).normal(0, 9, (3, 10, 8)).astype(np.float16)
    meta = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = ActivationDataset(acts, (2, 2, 2), rows=[7, 2, 5], y=np.array([0, 1, 2]),
                             metadata=meta, random_view=True)  # fmt: skip
    torch.manual_seed(0)
    x, y = data[torch.tensor([2, 0])]
    torch.manual_seed(0)
    views = torch.randint(0, 3, (2,)).numpy()
    assert x["x"].dtype == torch.float32 and x["x"].shape == (2, 2, 2, 2)
    expected = acts[views, [5, 7]].astype(np.float32).reshape(2, 2, 2, 2)
    np.testing.assert_array_equal(x["x"].numpy(), expected)
    np.testing.assert_array_equal(x["metadata"].numpy(), meta[[2, 0]])
    assert y.tolist() == [2, 0]
    torch.manual_seed(0)  # item by item: the same draws, the same values
    for i, row in zip([2, 0], expected):
        item, target = data[i]
        np.testing.assert_array_equal(item["x"].numpy(), row)
        assert int(target) == i


@contextlib.contextmanager
def _spy_on_activations(monkeypatch):
    """The arrays the fits' activations were stored in."""
    seen, filled = [], partial._filled

    @contextlib.contextmanager
    def spy(*args, **kwargs):
        with filled(*args, **kwargs) as acts:
            seen.append((type(acts), acts.dtype, getattr(acts, "filename", None)))
            yield acts

    monkeypatch.setattr(partial, "_filled", spy)
    yield seen


def test_past_the_budget_activations_are_memory_mapped_and_predict_the_same(
    lesions, tmp_path, monkeypatch
):
    X, y = lesions.data, lesions.target
    with _spy_on_activations(monkeypatch) as seen:
        in_memory = FusionNetClassifier(**PARTIAL).fit(X, y)
        clear_cache()  # the mapped fit encodes again, into the file
        mapped = FusionNetClassifier(**PARTIAL, activation_memory="1kB", cache_dir=tmp_path)
        mapped.fit(X, y)
    assert seen[0][:2] == (np.ndarray, np.float16)
    kind, dtype, filename = seen[1]
    assert kind is np.memmap and dtype == np.float16 and filename.startswith(str(tmp_path))
    assert not list(tmp_path.glob("skinfuse-activations-*"))  # removed after the fit
    assert cache_info()["images"] == 0  # not kept in memory: on disk under cache_dir
    np.testing.assert_array_equal(mapped.predict_proba(X), in_memory.predict_proba(X))


def test_mapped_without_cache_dir_goes_to_tmpdir_and_warns(lesions, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    net = FusionNetClassifier(**{**PARTIAL, "max_epochs": 1}, activation_memory=0)
    with _spy_on_activations(monkeypatch) as seen:
        with pytest.warns(UserWarning, match="computes them again. Pass cache_dir="):
            net.fit(lesions.data, lesions.target)
    assert seen[0][0] is np.memmap and seen[0][2].startswith(str(tmp_path))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", ["2 parsecs", "GB", -1, 1.5])
def test_a_bad_activation_memory_is_refused_clearly(lesions, bad):
    net = FusionNetClassifier(**PARTIAL, activation_memory=bad)
    with pytest.raises(ValueError, match="activation_memory.*'512MB' or '2GiB'"):
        net.fit(lesions.data, lesions.target)


def test_memory_sizes_parse_as_bytes():
    assert parse_memory("2GiB") == 2 * 2**30 and parse_memory("512 MB") == 512 * 10**6
    assert parse_memory("1.5kb") == 1500 and parse_memory(7) == 7 and parse_memory(None) is None
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory("1.5 parsecs")


class _Loud(nn.Module):
    """A trunk whose activations exceed float16's range (pixels x 1000)."""

    def forward(self, x):
        return x.float().flatten(1)[:, :8] * 1000


def test_activations_beyond_float16_are_stored_as_float32(lesions):
    def fill(items, encode, view, *, out, keep):
        out[:] = encode(items)

    items = list(lesions.data["image_path"][:4])
    with pytest.warns(UserWarning, match="beyond float16's range"):
        with view_activations(items, _Loud(), ["identity"], cached=fill, image_size=16,
                              batch_size=4, device="cpu", num_workers=0) as acts:  # fmt: skip
            assert acts.dtype == np.float32 and acts.max() > 65504
