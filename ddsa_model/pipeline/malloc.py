"""Keep freed memory in the process on Linux (glibc), so that large CPU tensors do not page-fault afresh.

glibc's ``malloc`` hands blocks above a size threshold (dynamic, up to 32 MiB) straight to the kernel
with ``mmap`` and gives them back with ``munmap`` on free, and trims the top of the heap when more than
a threshold is free. A CPU forward pass allocates and frees feature maps of several MiB per layer, so
each one costs fresh page faults and zero-filling by the kernel: on a 2-core machine about half of
``ddsa-eval``'s CPU time was system time. Raising the mmap threshold to its maximum and the trim
threshold far above it keeps those pages mapped for reuse (measured: system time halved, wall time
−18 % on Rain100L images). The cost is that the process keeps its peak heap until it exits, which is
what the CLIs want. Set ``DDSA_SYSTEM_MALLOC=1`` to leave malloc as it is; it is also left alone on
other platforms and C libraries.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more than half of its 64 MiB heap size on 64-bit
TRIM_THRESHOLD = 2 ** 31 - 1  # the largest value an int argument takes
TOP_PAD = 256 * 1024 * 1024


def retain_freed_memory() -> bool:
    """Tune glibc's malloc as described above; True when every setting was accepted."""
    if os.environ.get("DDSA_SYSTEM_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    results = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
               mallopt(M_TOP_PAD, TOP_PAD)]
    return all(r == 1 for r in results)
