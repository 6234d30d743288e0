"""Tiny synthetic fixtures shared by the test suite (no network, no real data)."""

import pytest

from skinfuse.datasets import make_synthetic_lesions


@pytest.fixture(scope="session")
def lesions(tmp_path_factory):
    """120 synthetic 32-px lesions of 4 classes, written once per session."""
    folder = tmp_path_factory.mktemp("lesions")
    return make_synthetic_lesions(
        n_samples=120, image_size=32, n_classes=4, data_dir=folder, random_state=0
    )


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny convolutions run several times faster on one thread than on two busy cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_embedding_cache():
    """Every test starts with an empty in-memory embedding cache and zeroed counters."""
    from skinfuse.encoders import clear_cache

    clear_cache()
    yield
