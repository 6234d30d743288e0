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
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
