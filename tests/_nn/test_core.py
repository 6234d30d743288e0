"""The private torch core: what the estimators build on behaves as they rely on."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from skinfuse._nn.backbones import build_backbone, frozen_names
from skinfuse._nn.data import ImageDataset, decode_images, make_loader
from skinfuse._nn.device import TorchEstimatorMixin
from skinfuse._nn.inference import embed, run_batches
from skinfuse._nn.training import TrainingConfig, train_network
from skinfuse.encoders import FineTunedCNNEncoder


def test_importing_the_estimators_does_not_import_torch():
    code = (
        "import sys, skinfuse, skinfuse.encoders, skinfuse.fusion, skinfuse.pipeline, "
        "skinfuse.explain; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_config_reads_its_fields_from_estimator_parameters():
    encoder = FineTunedCNNEncoder(lr=0.01, max_epochs=3, patience=None)
    config = TrainingConfig.from_estimator(encoder, device="cpu", num_workers=0)
    assert (config.lr, config.max_epochs, config.patience, config.num_workers) == (0.01, 3, None, 0)
    assert config.optimizer == "adamw" and config.lr_schedule == "cosine"
    assert not hasattr(config, "cross_fit")  # only what training reads


def test_network_spec_is_built_once_from_the_estimator():
    from dataclasses import FrozenInstanceError

    from skinfuse._nn.fitting import data_path
    from skinfuse._nn.spec import NetworkSpec

    encoder = FineTunedCNNEncoder("tiny_cnn", image_size=16.0, trainable_blocks=2, lr=0.01)
    spec = NetworkSpec.from_estimator(encoder, device="cpu")
    assert spec.image_size == 16 and isinstance(spec.image_size, int)
    assert (spec.trainable_blocks, spec.training.lr, spec.training.device) == (2, 0.01, "cpu")
    # the activations' budget in bytes; spilled under cache_dir when the estimator caches
    assert (spec.activation_memory, spec.activation_dir) == (2 * 2**30, None)
    mapped = encoder.set_params(activation_memory="1.5MB", cache_dir="/c")
    assert NetworkSpec.from_estimator(mapped, device="cpu").activation_memory == 1_500_000
    assert NetworkSpec.from_estimator(mapped, device="cpu").activation_dir == "/c"
    no_cache = NetworkSpec.from_estimator(mapped.set_params(cache=False), device="cpu")
    assert no_cache.activation_dir is None
    encoder.set_params(activation_memory="2GiB", cache_dir=None, cache=True)
    with pytest.raises(FrozenInstanceError):
        spec.lr = 1  # typed and frozen: nothing reads settings by key after this
    # the one choice of data path
    assert data_path(spec, "cpu", 10) == "activations"
    from_images = NetworkSpec.from_estimator(
        encoder.set_params(trainable_blocks=None), device="cpu"
    )
    assert data_path(from_images, "cpu", 10) == "images"  # "auto": no store on a CPU
    assert data_path(from_images, "cuda", 10) == "memory"
    stored = NetworkSpec.from_estimator(encoder.set_params(image_store="disk"), device="cpu")
    assert data_path(stored, "cpu", 10) == "disk"
    assert spec.module_kwargs(3, n_metadata=2)["n_metadata"] == 2


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(10)]


def test_dataset_serves_paths_arrays_and_decoded_tensors_alike(images):
    decoded = decode_images(images, 16, batch_size=4, num_workers=0)
    assert decoded.dtype == torch.uint8 and decoded.shape == (10, 3, 16, 16)
    from_arrays, from_tensor = ImageDataset(images, 16), ImageDataset(decoded, 16)
    for i in range(10):
        assert torch.equal(from_arrays[i], from_tensor[i])
    meta = np.arange(20, dtype=np.float32).reshape(10, 2)
    item, label = ImageDataset(decoded, 16, y=np.arange(10), metadata=meta)[3]
    assert torch.equal(item["x"], decoded[3]) and item["metadata"].tolist() == [6.0, 7.0]
    assert label == 3


def test_one_inference_loop_for_images_and_images_with_metadata(images):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    class WithMetadata(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x, metadata):
            return torch.cat([self.conv(x.float()), metadata], dim=1)

    module = WithMetadata().train()
    meta = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = embed(module, images, 16, batch_size=4, device="cpu", metadata=meta)
    assert out.shape == (10, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 4:], meta)  # rows stay with their images
    expected = conv(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
    np.testing.assert_allclose(out[:, :4], expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    # the module gets its mode and memory format back
    assert module.training
    assert conv[0].weight.is_contiguous()
    # chunking does not change what comes out
    loader = make_loader(ImageDataset(images, 16, metadata=meta), batch_size=10)
    whole = run_batches(module, loader, "cpu", chunk=10)
    np.testing.assert_allclose(whole, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batches", ["loader", "list"])
def test_run_batches_keeps_no_result_of_a_forward_pass(images, batches):
    # Results kept pass by pass fragmented glibc's heap between the activations (a Dask
    # worker's peak memory grew with its chunk size): each is copied into one array.
    import weakref

    outputs, kept = [], []

    class Recording(nn.Module):
        def forward(self, x):
            # the previous pass's result may still be in run_batches' variables
            kept.append(sum(ref() is not None for ref in outputs[:-1]))
            out = x.float().mean(dim=(2, 3)).numpy().copy()
            outputs.append(weakref.ref(out))  # alive while a tensor shares its memory
            return torch.from_numpy(out)

    data = ImageDataset(images, 16)
    source = make_loader(data, batch_size=4)
    if batches == "list":
        source = [torch.stack([data[i] for i in range(s, min(s + 4, 10))]) for s in (0, 4, 8)]
    out = run_batches(Recording(), source, "cpu", chunk=2)
    expected = np.stack(images).astype(np.float32).mean(axis=(1, 2))
    assert out.shape == (10, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert kept == [0] * 5  # 5 passes (batches of 4, 4, 2 in chunks of 2)


@pytest.mark.parametrize("batches", ["loader", "list", "generator"])
def test_reading_results_back_one_pass_late_changes_nothing(images, batches):
    """On a GPU each result is read back after the next pass is queued (the GPU keeps
    working while the CPU fetches the next batch): same rows, same order, none lost."""
    order = []

    class Recording(nn.Module):
        def forward(self, x):
            order.append(len(x))
            return x.float().mean(dim=(2, 3))

    data = ImageDataset(images, 16)
    source = make_loader(data, batch_size=4)
    if batches != "loader":  # a generator: rows unknown, results collected pass by pass
        source = [torch.stack([data[i] for i in range(s, min(s + 4, 10))]) for s in (0, 4, 8)]
        source = source if batches == "list" else (b for b in source)
    late = run_batches(Recording(), source, "cpu", chunk=3, read_back_late=True)
    expected = np.stack(images).astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_allclose(late, expected, rtol=1e-6)
    assert sum(order) == 10
    single = [torch.stack([data[i] for i in range(10)])]
    np.testing.assert_allclose(
        run_batches(Recording(), single, "cpu", chunk=None, read_back_late=True), expected,
        rtol=1e-6,
    )  # fmt: skip


def test_train_network_is_seeded_and_leaves_the_global_stream_alone(images):
    data = ImageDataset(images, 16, y=np.arange(10) % 2)
    config = TrainingConfig(device="cpu", max_epochs=2, lr=1e-2, batch_size=4, num_workers=0)
    kwargs = dict(backbone="tiny_cnn", weights=None, n_classes=2, image_size=16)
    from skinfuse._nn.modules import ClassifierNetwork

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_network(ClassifierNetwork, kwargs, data, config=config, seed=7, n_classes=2)
    assert torch.equal(torch.rand(1), before)  # the caller's random stream is untouched
    b = train_network(ClassifierNetwork, kwargs, data, config=config, seed=7, n_classes=2)
    for p, q in zip(a.module_.parameters(), b.module_.parameters()):
        assert torch.equal(p, q)
    assert len(a.history) == 2


def test_freeze_counts_backbone_stages():
    features = build_backbone("tiny_cnn", None).features
    assert frozen_names(features, None, "f.") == []
    assert frozen_names(features, "backbone", "f.") == ["f"]
    assert frozen_names(features, 2, "f.") == ["f.0", "f.1"]
    with pytest.raises(ValueError, match="has 3 stages"):
        frozen_names(features, 4, "f.")


class _Holder(TorchEstimatorMixin):
    device_ = "cpu"


def test_device_copies_are_never_pickled():
    holder = _Holder()
    module = nn.Linear(2, 2)
    assert holder._module_on(module, "cpu", "m") is module  # no copy on the CPU
    holder._device_copies = {"m": nn.Linear(2, 2)}  # as a GPU copy would be
    holder.net = module
    state = pickle.loads(pickle.dumps(holder)).__dict__
    assert "_device_copies" not in state and isinstance(state["net"], nn.Linear)


def _workers_in_child(queue):
    from skinfuse._nn.data import default_num_workers

    queue.put(default_num_workers(1000, 8))


def test_no_loader_workers_inside_a_daemonic_process():
    """A Dask worker (or a Pool worker) is daemonic and may not start DataLoader workers:
    the default there is 0 (else: 'daemonic processes are not allowed to have children')."""
    import multiprocessing

    from skinfuse._nn.data import default_num_workers

    assert default_num_workers(1000, 8) >= 1  # here, in the main process
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_workers_in_child, args=(queue,), daemon=True)
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == 0
    assert default_num_workers(1000, 8, num_workers=2) == 2  # an explicit choice is kept


@pytest.mark.parametrize("name", ["FineTunedCNNEncoder", "FusionNetClassifier"])
def test_shared_parameter_docs_are_filled_in_for_every_parameter(name):
    import inspect

    import skinfuse.encoders
    import skinfuse.fusion

    cls = getattr(skinfuse.encoders, name, None) or getattr(skinfuse.fusion, name)
    doc = cls.__doc__
    assert "_parameters}" not in doc
    documented = [line.split(" : ")[0].strip() for line in doc.splitlines() if " : " in line]
    for param in inspect.signature(cls).parameters:
        assert documented.count(param) == 1, f"{name}.{param} documented {documented.count(param)}x"
