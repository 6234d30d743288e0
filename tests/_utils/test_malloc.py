"""glibc's mmap threshold is set back to its ceiling where a Dask-style setting froze it."""

import platform
import sys

import pytest

from skinfuse._utils import _malloc

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc only",
)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(_malloc, "_done", False)
    for name in (*_malloc._SETTINGS, "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@glibc
def test_set_once_in_a_process_started_as_a_dask_worker(fresh):
    fresh.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Dask nanny sets
    assert _malloc.restore_mmap_threshold() is True
    assert _malloc.restore_mmap_threshold() is False  # once per process


def test_left_alone_without_such_a_setting_or_with_the_users_own(fresh):
    assert _malloc.restore_mmap_threshold() is False
    fresh.setattr(_malloc, "_done", False)
    fresh.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    fresh.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert _malloc.restore_mmap_threshold() is False
