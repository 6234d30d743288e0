"""``precision``: bf16 autocast where the hardware has native bf16 units, fp32 elsewhere."""

import numpy as np
import pytest

from skinfuse._nn import device as device_module
from skinfuse._nn.device import resolve_precision
from skinfuse.encoders import FrozenCNNEncoder, cache_info
from skinfuse.recipes import make_recipe

TINY = dict(backbone="tiny_cnn", weights=None, image_size=16, batch_size=4, pooling="avg")


def _images(n=6, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx512f", "avx512_vnni"}, "fp32"),  # Ice Lake: bf16 only emulated, slower
        ({"avx512f", "avx512_bf16"}, "bf16"),  # Cooper Lake, Zen 4
        ({"avx512f", "amx_tile", "amx_bf16"}, "bf16"),  # Sapphire Rapids
        ({"fp", "asimd", "bf16"}, "bf16"),  # Arm v8.6 (Graviton 3, Apple M2)
        (set(), "fp32"),  # no /proc/cpuinfo (macOS, Windows)
    ],
)
def test_auto_is_bf16_on_a_cpu_with_native_bf16_units_only(flags, expected, monkeypatch):
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32"  # forced either way
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "mps") == "fp32"


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16\n\nprocessor\t: 1\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **kw: real_open(fake if path == "/proc/cpuinfo" else path, *a, **kw),
    )
    assert device_module._cpu_flags() == {"fpu", "sse", "avx512f", "amx_bf16"}


def test_a_bad_precision_says_which_values_are_allowed():
    with pytest.raises(ValueError, match=r"precision must be one of .*'bf16'.*got 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        FrozenCNNEncoder(**TINY, precision="half").fit(_images())


def test_bf16_embeddings_are_close_to_fp32_and_cached_apart():
    images = _images()
    fp32 = FrozenCNNEncoder(**TINY, precision="fp32").fit(images)
    bf16 = FrozenCNNEncoder(**TINY, precision="bf16").fit(images)
    a, b = fp32.transform(images), bf16.transform(images)
    assert cache_info()["encoded"] == 2 * len(images)  # two cache keys: none reused
    assert not np.array_equal(a, b)  # bf16 really ran
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999
    assert fp32._view_encoding(images, "identity")[1].endswith("-fp32")
    assert bf16._view_encoding(images, "identity")[1].endswith("-bf16")
    # the default resolves to one of the two here, and shares its cache key
    auto = FrozenCNNEncoder(**TINY).fit(images)
    expected = {"fp32": a, "bf16": b}[resolve_precision("auto", "cpu")]
    np.testing.assert_array_equal(auto.transform(images), expected)
    assert cache_info()["encoded"] == 2 * len(images)


def test_make_recipe_sets_the_precision_of_every_estimator_that_takes_one():
    vote = make_recipe("partial-ensemble", precision="fp32").estimator
    assert [member.precision for _, member in vote.estimators] == ["fp32", "fp32"]
    encoder = make_recipe("tiny", calibrate=False).named_steps["features"]
    assert encoder.transformers[0][1].precision == "auto"
