"""glibc's allocator in Dask workers: large blocks come from the heap again, as by default.

A Dask nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that (or any
of glibc's ``M_TRIM_THRESHOLD``, ``M_TOP_PAD``, ``M_MMAP_THRESHOLD``, ``M_MMAP_MAX``) stops
glibc from raising its mmap threshold as programs free large blocks: every block over
128 kB (each activation of a CNN) is then mapped and unmapped afresh, page faults included,
and encoding with EfficientNet-Lite0 on a CPU ran ~1.6x slower in such a worker
(benchmarks/scale_out.py; docs/scaling.md). :func:`restore_mmap_threshold` sets the
threshold to 32 MB, glibc's own ceiling for it, keeping Dask's trim threshold.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

#: glibc's ``mallopt`` parameter number and the ceiling of its dynamic threshold (64-bit)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024
_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_done = False


def _glibc_mallopt():
    """glibc's ``mallopt(int, int) -> int``, or None where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def restore_mmap_threshold() -> bool:
    """Once per process: where glibc's dynamic mmap threshold was turned off by an
    environment setting (a Dask worker), set the threshold to 32 MB. True when set.

    Nothing happens without such a setting, where ``MALLOC_MMAP_THRESHOLD_`` is set (the
    user's choice), or outside Linux with glibc.
    """
    global _done
    if _done:
        return False
    _done = True
    if not any(name in os.environ for name in _SETTINGS):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    mallopt = _glibc_mallopt()
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1


#: glibc's ``mallopt`` numbers of the trim threshold and the top pad
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2
_kept = False


def keep_freed_heap(trim=256 * 2**20, top_pad=64 * 2**20) -> bool:
    """Once per process: glibc keeps up to ``trim`` bytes of freed heap (and grows it by
    ``top_pad``) instead of returning it to the kernel after each free, with blocks up to
    32 MB from the heap. True when set.

    Training on cached activations allocates and frees the same batch-sized blocks every
    step; by default glibc maps and unmaps them, each page faulting afresh. One epoch of the
    top of EfficientNet-Lite0 (last 2 stages, 384 synthetic activations, batch 64): 168,646
    minor faults and 0.9 s system time by default, 76,330 and 0.1 s with this (issue 25).
    Nothing happens where the user set any ``MALLOC_*`` variable, or outside Linux/glibc.
    """
    global _kept
    if _kept:
        return False
    _kept = True
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    mallopt = _glibc_mallopt() if sys.platform.startswith("linux") else None
    if mallopt is None:
        return False
    settings = (
        (_M_TRIM_THRESHOLD, trim),
        (_M_TOP_PAD, top_pad),
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
