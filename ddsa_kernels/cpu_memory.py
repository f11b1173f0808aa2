"""Stop large CPU tensors from page-faulting afresh on every allocation (Linux).

A CPU forward pass allocates and frees feature maps of several to hundreds of MiB per layer. By
default each of them costs fresh page faults and zero-filling by the kernel, one per 4 KiB page:

* glibc's ``malloc`` hands blocks above a threshold (dynamic, at most 32 MiB) straight to the kernel
  with ``mmap`` and returns them with ``munmap`` on free, and trims the top of its heap when more
  than a threshold is free;
* torch's CPU allocator only asks for 2 MiB transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1``.

:func:`tune_cpu_memory` raises glibc's mmap threshold to its maximum and the trim threshold far above
it (freed blocks of up to 32 MiB at least are reused, not faulted in again), and sets ``THP_MEM_ALLOC_ENABLE=1``
(larger blocks fault once per 2 MiB instead of once per 4 KiB, where the system's transparent huge
page mode is ``madvise`` or ``always``). ``python -m benchmarks.bench_cpu_memory`` measures the
effect on the shipped model, with and without.
The cost: the process keeps its peak heap until it exits, and huge pages may round large blocks up
to 2 MiB.

Call it at the start of a script, before the first large CPU tensor: torch reads
``THP_MEM_ALLOC_ENABLE`` once. The ddsa CLIs call it. ``DDSA_SYSTEM_MALLOC=1`` turns it into a no-op;
so do other platforms and C libraries without ``mallopt``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more than half of its 64 MiB heap size on 64-bit
TRIM_THRESHOLD = 2 ** 31 - 1  # the largest value an int argument takes
TOP_PAD = 256 * 1024 * 1024
OPT_OUT_ENV = "DDSA_SYSTEM_MALLOC"
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


@dataclass(frozen=True)
class CpuMemorySettings:
    """What :func:`tune_cpu_memory` changed."""

    malloc_retains_freed: bool  # glibc accepted the mmap, trim and top-pad settings
    huge_pages_requested: bool  # THP_MEM_ALLOC_ENABLE is "1" for torch's CPU allocator


def _mallopt_all() -> bool:
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


def tune_cpu_memory() -> CpuMemorySettings:
    """Keep freed memory in the process and ask for huge pages for large CPU tensors (see the module
    docstring). An explicit ``THP_MEM_ALLOC_ENABLE`` in the environment is left as it is."""
    if os.environ.get(OPT_OUT_ENV) == "1" or not sys.platform.startswith("linux"):
        return CpuMemorySettings(False, False)
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return CpuMemorySettings(_mallopt_all(), os.environ[HUGE_PAGES_ENV] == "1")


__all__ = ["CpuMemorySettings", "tune_cpu_memory"]
