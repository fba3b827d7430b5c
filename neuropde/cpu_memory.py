"""Keep large freed CPU buffers in the process instead of returning them to the OS.

glibc serves allocations above its mmap threshold (128 KiB to 32 MiB, adapting) with fresh
``mmap`` pages and unmaps them on free, so every training step of a model on a large grid faults
in its activation memory again. Measured on the 2-core development machine: one forward + backward
of FNO (width 20) on 20 fields of 170² took 5.83 s with 15 s of system time, and 2.23 s after
raising the mmap and trim thresholds (1.84 s with the same settings through the environment).
The price: the process keeps its peak memory until it exits. ``NEUROPDE_MALLOC_TUNING=0`` turns
this off; on other C libraries it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done = False


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True if they were set."""
    global _done
    if _done or os.environ.get("NEUROPDE_MALLOC_TUNING", "1") == "0":
        return _done
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
    return _done
