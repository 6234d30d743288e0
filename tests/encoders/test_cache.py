"""Reliability of the embedding cache: content keys, code-aware configuration keys, shards
that survive killed writers, concurrent processes and corruption, and a checked cache_dir."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from skinfuse._cache import disk, embeddings
from skinfuse._cache import keys as image_keys
from skinfuse.encoders import FrozenCNNEncoder, cache_info, clear_cache

TINY = dict(backbone="tiny_cnn", weights=None, image_size=16, batch_size=4, pooling="avg")
#: seconds the concurrency test runs; SKINFUSE_CACHE_STRESS_S=20 for a longer run
STRESS_S = float(os.environ.get("SKINFUSE_CACHE_STRESS_S", "3"))


def _images(n=6, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _shards(cache_dir):
    return sorted(cache_dir.rglob("*.v2.npz"))


def _run_python(code, *args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


# -- image keys by content -------------------------------------------------------------------
def test_same_size_replacement_with_restored_mtime_is_re_encoded(tmp_path):
    path = tmp_path / "a.bmp"  # BMP: the same size for any pixels
    Image.fromarray(_images(1)[0]).save(path)
    st = os.stat(path)
    enc = FrozenCNNEncoder(**TINY).fit([str(path)])
    first = enc.transform([str(path)])
    time.sleep(0.02)  # past the file system's clock tick
    Image.fromarray(_images(1, seed=1)[0]).save(tmp_path / "b.bmp")
    path.write_bytes((tmp_path / "b.bmp").read_bytes())  # in place, like cp -p
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    second = enc.transform([str(path)])
    assert cache_info()["encoded"] == 2
    assert np.abs(first - second).max() > 1e-3
    np.testing.assert_array_equal(second, enc.transform([str(tmp_path / "b.bmp")]))


def test_copies_share_one_embedding_and_disk_keys_survive_a_move(tmp_path):
    image = _images(1)[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    cache_dir = tmp_path / "cache"
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit([str(tmp_path / "a.png")])
    first = enc.transform([str(tmp_path / "a.png"), str(tmp_path / "copy.png")])
    assert cache_info()["encoded"] == 1
    np.testing.assert_array_equal(first[0], first[1])
    os.replace(tmp_path / "a.png", tmp_path / "moved.png")  # another machine, another folder
    clear_cache()
    again = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit([str(tmp_path / "moved.png")])
    np.testing.assert_array_equal(again.transform([str(tmp_path / "moved.png")]), first[:1])
    assert cache_info()["encoded"] == 0


def test_a_missing_file_has_a_key_no_image_has(tmp_path):
    key = image_keys.image_key(str(tmp_path / "gone.png"))
    Image.fromarray(_images(1)[0]).save(tmp_path / "there.png")
    assert key != image_keys.image_key(str(tmp_path / "there.png"))
    assert key.startswith("missing|") and "gone.png" in key


def test_an_unchanged_file_is_read_once(tmp_path, monkeypatch):
    Image.fromarray(_images(1)[0]).save(tmp_path / "a.png")
    reads = []
    real = image_keys._file_digest
    monkeypatch.setattr(image_keys, "_file_digest", lambda p: reads.append(p) or real(p))
    keys = {image_keys.image_key(str(tmp_path / "a.png")) for _ in range(3)}
    assert len(keys) == 1 and len(reads) == 1


# -- configuration keys of custom modules ------------------------------------------------------
class _Net(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = act

    def forward(self, x):
        return self.act(self.conv(x) - 0.5)


def _same_weights(*modules):
    for m in modules[1:]:
        m.load_state_dict(modules[0].state_dict())
    return modules


def test_custom_modules_with_equal_weights_and_other_activations_differ(tmp_path):
    torch.manual_seed(0)
    relu, tanh = _same_weights(_Net(nn.ReLU()), _Net(nn.Tanh()))
    images = _images(3)
    kw = dict(weights=None, image_size=16, cache_dir=str(tmp_path / "cache"))
    a = FrozenCNNEncoder(relu, **kw).fit(images)
    b = FrozenCNNEncoder(tanh, **kw).fit(images)
    assert a.config_key_ != b.config_key_
    za, zb = a.transform(images), b.transform(images)
    assert np.abs(za - zb).max() > 1e-3
    np.testing.assert_array_equal(
        zb, FrozenCNNEncoder(tanh, **kw, cache=False).fit(images).transform(images)
    )


def _module_file(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(3, 4, 3)

                def forward(self, x):
                    return {body}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)  # removed again after the test
    return __import__(name).Net


def test_an_edited_forward_changes_the_key(tmp_path, monkeypatch):
    old = _module_file(tmp_path, monkeypatch, "net_v1", "self.conv(x)")
    new = _module_file(tmp_path, monkeypatch, "net_v2", "self.conv(x).abs()")
    a, b = _same_weights(old(), new())
    images = _images(3)
    kw = dict(weights=None, image_size=16, cache_dir=str(tmp_path / "cache"))
    za = FrozenCNNEncoder(a, **kw).fit(images).transform(images)
    zb = FrozenCNNEncoder(b, **kw).fit(images).transform(images)
    assert np.abs(za - zb).max() > 1e-3
    assert cache_info()["encoded"] == 6 and len(_shards(tmp_path / "cache")) == 2


def _hidden_class(forward):
    namespace = {"__name__": "not_a_file"}
    exec(  # a class whose source cannot be read, as in exec() or some notebooks
        "from torch import nn\n"
        "class Hidden(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "    def forward(self, x):\n"
        f"        return {forward}\n",
        namespace,
    )
    return namespace["Hidden"]


def test_a_module_without_source_uses_memory_only_with_one_warning(tmp_path):
    images = _images(3)
    cache_dir = tmp_path / "cache"
    module, edited = _same_weights(
        _hidden_class("self.conv(x)")(), _hidden_class("-self.conv(x)")()
    )
    enc = FrozenCNNEncoder(module, weights=None, image_size=16, cache_dir=str(cache_dir))
    enc.fit(images)
    with pytest.warns(UserWarning, match=r"Hidden.*Define the module in a \.py file") as record:
        first = enc.transform(images)
        enc.transform(images)
    assert len([w for w in record if "cache_dir" in str(w.message)]) == 1
    assert cache_info()["encoded"] == 3  # the memory cache works
    assert not _shards(cache_dir)
    np.testing.assert_array_equal(enc.transform(images), first)
    # another class without source, equal weights and repr: not confused in memory either
    other = FrozenCNNEncoder(edited, weights=None, image_size=16).fit(images).transform(images)
    np.testing.assert_allclose(other, -first, atol=1e-6)


# -- shards ------------------------------------------------------------------------------------
def test_temporary_files_are_never_read(tmp_path):
    images = _images(4)
    cache_dir = tmp_path / "cache"
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images)
    first = enc.transform(images)
    (folder,) = {p.parent for p in _shards(cache_dir)}
    for name in (".0123.tmp.npz", ".tmp-0123", ".tmp-0123.npz"):  # killed writers, old and new
        (folder / name).write_bytes(b"PK\x03\x04 cut short")
    clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    np.testing.assert_array_equal(again, first)
    assert cache_info()["encoded"] == 0


def _corrupt(shard, how):
    raw = bytearray(shard.read_bytes())
    if how == "zero-byte":
        raw = b""
    elif how == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # one bit of one stored embedding flipped
        with np.load(shard) as data:
            at = bytes(raw).find(data["embeddings"].tobytes())
        assert at > 0
        raw[at + 3] ^= 0x10
    shard.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["zero-byte", "truncated", "bit-flip"])
def test_a_corrupt_shard_is_skipped_with_a_warning_and_moved_aside(tmp_path, how):
    images = _images(4)
    cache_dir = tmp_path / "cache"
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images)
    first = enc.transform(images)
    (shard,) = _shards(cache_dir)
    _corrupt(shard, how)
    clear_cache()
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images)
    with pytest.warns(UserWarning, match=rf"unreadable shard .*{shard.name}"):
        again = enc.transform(images)
    np.testing.assert_array_equal(again, first)
    assert cache_info()["encoded"] == 4
    assert (shard.parent / f"{shard.name}.corrupt").exists()
    clear_cache()  # the next run reads the new shard, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    np.testing.assert_array_equal(third, first)
    assert cache_info()["encoded"] == 0


def test_a_shard_with_wrong_arrays_is_skipped(tmp_path):
    images = _images(2)
    cache_dir = tmp_path / "cache"
    first = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    (shard,) = _shards(cache_dir)
    with np.load(shard) as data:
        keys = data["keys"]
    np.savez(shard, keys=keys, embeddings=np.zeros((2, 64)))  # no checksum, float64
    clear_cache()
    with pytest.warns(UserWarning, match=shard.name):
        again = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    np.testing.assert_array_equal(again, first)


def test_long_encodings_save_each_chunk_and_a_rerun_encodes_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "CHUNK_IMAGES", 8)
    images = _images(20)
    expected = FrozenCNNEncoder(**TINY, cache=False).fit(images).transform(images)
    import skinfuse._nn.inference as inference

    real, calls = inference.embed, []

    def interrupted(module, todo, *args, **kwargs):
        calls.append(len(todo))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(module, todo, *args, **kwargs)

    monkeypatch.setattr(inference, "embed", interrupted)
    cache_dir = tmp_path / "cache"
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images)
    with pytest.raises(KeyboardInterrupt):
        enc.transform(images)
    assert len(_shards(cache_dir)) == 1  # the first chunk is on disk
    monkeypatch.setattr(inference, "embed", real)
    clear_cache()
    out = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    assert cache_info()["encoded"] == 12
    np.testing.assert_array_equal(out, expected)  # the same batches: bit-identical


_KILLED_WRITER = """
import io, os, sys, time
import numpy as np
from skinfuse._cache import embeddings
from skinfuse.encoders import FrozenCNNEncoder

embeddings.CHUNK_IMAGES = 8
real, calls = np.savez, []

def slow_savez(file, *args, **kwargs):  # the third shard: half written, then killed
    calls.append(1)
    if len(calls) < 3:
        return real(file, *args, **kwargs)
    buf = io.BytesIO()
    real(buf, *args, **kwargs)
    f = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

np.savez = slow_savez
images = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
FrozenCNNEncoder(backbone="tiny_cnn", weights=None, image_size=16, batch_size=4, pooling="avg",
                 cache_dir=sys.argv[1]).fit(images).transform(images)
"""


def test_a_writer_killed_mid_write_leaves_a_usable_cache(tmp_path):
    cache_dir = tmp_path / "cache"
    proc = _run_python(_KILLED_WRITER, cache_dir)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(_shards(cache_dir)) == 2  # two whole chunks; the third one was cut short
    assert list(cache_dir.rglob(".tmp-*"))
    images = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    assert cache_info()["encoded"] == 40 - 16
    fresh = FrozenCNNEncoder(**TINY, cache=False).fit(images).transform(images)
    np.testing.assert_array_equal(out, fresh)


_WORKER = """
import json, sys, time, warnings
import numpy as np
from skinfuse import _cache

role, cache_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

def encode(items):  # deterministic, so any process computes the same rows
    return np.stack([it.reshape(-1)[:16].astype(np.float32) * 0.5 for it in items])

def batch(seed):
    return list(np.random.default_rng(seed).integers(0, 256, (32, 4, 4, 3), dtype=np.uint8))

counts = {"role": role, "calls": 0, "failures": 0, "warnings": 0, "hits": 0, "encoded": 0}
end, seed = time.monotonic() + seconds, 0
while time.monotonic() < end:
    seed += 1
    items = batch(seed if role == "writer" else seed % 200)
    if role == "reader":
        _cache.clear_cache()  # read every shard again, as a new process would
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = _cache.encode_cached(items, encode, config_key="stress", cache_dir=cache_dir)
            if not np.array_equal(out, encode(items)):
                raise AssertionError("wrong embeddings")
        except Exception as exc:
            counts["failures"] += 1
            print(repr(exc), file=sys.stderr)
    counts["warnings"] += len(caught)
    counts["calls"] += 1
    counts["hits"] += _cache.cache_info()["hits"] if role == "reader" else 0
counts["encoded"] = _cache.cache_info()["encoded"] if role == "writer" else counts["encoded"]
print(json.dumps(counts))
"""


def test_a_reader_and_a_writer_share_a_cache_dir_without_failures(tmp_path):
    cache_dir = tmp_path / "cache"
    procs = [_run_python(_WORKER, role, cache_dir, STRESS_S) for role in ("writer", "reader")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=STRESS_S + 120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    writer, reader = results
    print(json.dumps(results))  # pytest -s shows the counts
    assert writer["failures"] == reader["failures"] == 0
    assert writer["warnings"] == reader["warnings"] == 0
    assert writer["calls"] > 5 and reader["calls"] > 5 and reader["hits"] > 0


# -- the cache folder ----------------------------------------------------------------------------
def _spy_on_encoding(monkeypatch):
    import skinfuse._nn.inference as inference

    calls = []
    real = inference.embed
    monkeypatch.setattr(inference, "embed", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("problem", ["a file", "under a file"])
def test_an_unusable_cache_dir_fails_before_encoding(tmp_path, monkeypatch, problem):
    (tmp_path / "file").write_text("not a folder")
    bad = tmp_path / "file" if problem == "a file" else tmp_path / "file" / "cache"
    calls = _spy_on_encoding(monkeypatch)
    images = _images(2)
    with pytest.raises(ValueError, match=r"cache_dir=.*(is a file|cannot be created)"):
        FrozenCNNEncoder(**TINY, cache_dir=str(bad)).fit(images)
    enc = FrozenCNNEncoder(**TINY).fit(images).set_params(cache_dir=str(bad))
    with pytest.raises(ValueError, match=r"cache_dir=.*or cache_dir=None"):
        enc.transform(images)
    assert calls == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_a_read_only_cache_dir_fails_before_encoding(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(0o500)
    calls = _spy_on_encoding(monkeypatch)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(_images(2))
    finally:
        cache_dir.chmod(0o700)
    assert calls == []


def test_an_unusable_cache_dir_is_ignored_when_cache_is_false(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    enc = FrozenCNNEncoder(**TINY, cache=False, cache_dir=str(tmp_path / "file"))
    assert enc.fit(_images(2)).transform(_images(2)).shape == (2, 64)


# -- reading back only what is asked for; memory across configurations ---------------------------
def test_only_the_shards_holding_the_images_asked_for_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "CHUNK_IMAGES", 8)
    images = _images(24)
    cache_dir = tmp_path / "cache"
    full = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images).transform(images)
    assert len(_shards(cache_dir)) == 3
    clear_cache()
    reads = []
    real = disk._read_shard
    monkeypatch.setattr(disk, "_read_shard", lambda s: reads.append(s.name) or real(s))
    enc = FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)).fit(images)
    np.testing.assert_array_equal(enc.transform(images[[1, 5]]), full[[1, 5]])
    assert cache_info()["images"] == 2 and cache_info()["encoded"] == 0
    assert len(reads) == 1  # the first chunk's shard; the others' keys only
    np.testing.assert_array_equal(enc.transform(images[[1, 20]]), full[[1, 20]])
    assert cache_info()["images"] == 3 and len(reads) == 2


def test_configurations_on_disk_leave_memory_beyond_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "MEMORY_LIMIT_BYTES", 0)
    images = _images(4)
    on_disk = dict(TINY, cache_dir=str(tmp_path / "cache"))
    a = FrozenCNNEncoder(**on_disk).fit(images)
    b = FrozenCNNEncoder(**{**on_disk, "image_size": 12}).fit(images)
    first = a.transform(images)
    b.transform(images)
    assert cache_info()["configs"] == 1 and cache_info()["images"] == 4  # a's were dropped
    np.testing.assert_array_equal(a.transform(images), first)  # read back, not encoded
    assert cache_info()["encoded"] == 8 and cache_info()["configs"] == 1
    memory_only = FrozenCNNEncoder(**{**TINY, "image_size": 20}).fit(images)
    memory_only.transform(images)
    b.transform(images)
    assert cache_info()["configs"] == 2  # memory-only embeddings are never dropped
    memory_only.transform(images)
    assert cache_info()["encoded"] == 12


_ENCODER_PROCESS = """
import sys, time
import numpy as np
from skinfuse import _cache

cache_dir, start = sys.argv[1], float(sys.argv[2])

def encode(items):  # slow, so that both processes want the same chunk at once
    time.sleep(0.2)
    return np.stack([it.reshape(-1)[:8].astype(np.float32) for it in items])

items = list(np.random.default_rng(0).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8))
time.sleep(max(0.0, start - time.time()))
out = _cache.encode_cached(items, encode, config_key="shared", cache_dir=cache_dir, chunk_size=8)
assert np.array_equal(out, np.stack([it.reshape(-1)[:8].astype(np.float32) for it in items]))
print(_cache.cache_info()["encoded"])
"""


def test_processes_sharing_a_cache_dir_encode_each_image_once(tmp_path):
    start = time.time() + 3  # both started (imports done) before either encodes
    procs = [_run_python(_ENCODER_PROCESS, tmp_path / "cache", start) for _ in range(2)]
    encoded = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        encoded.append(int(out.strip().splitlines()[-1]))
    assert sum(encoded) == 40, encoded
