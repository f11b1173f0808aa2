"""Whether the compiled CPU extension must be present, and the backend lists the op tests use.

A missing extension is a failure wherever it could have been built (a C++ compiler is on PATH and
DDSA_NO_EXTENSION=1 was not set): the tests of the "cpu" backend then run and fail with the reason,
instead of dropping out of the parametrization silently.
"""
from __future__ import annotations

import os
import shutil

from ddsa_kernels import build_info
from ddsa_kernels._registry import available_backends


def cpu_extension_expected() -> tuple[bool, str]:
    """(expected, why not): True when this machine could build ddsa_kernels._C."""
    if os.environ.get("DDSA_NO_EXTENSION") == "1":
        return False, "DDSA_NO_EXTENSION=1 was set deliberately"
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        return False, "no C++ compiler on PATH"
    return True, ""


def cpu_backend_required(op: str = "dual_attention") -> bool:
    """True when the "cpu" backend of ``op`` is available or must be (its tests then run and fail)."""
    return build_info(op).get("cpu") == "available" or cpu_extension_expected()[0]


def cpu_backends(op: str, candidates: tuple[str, ...] = ("cpu", "reference")) -> list[str]:
    """The candidates available on CPU, with "cpu" kept when it is missing but buildable."""
    available = available_backends("cpu", op=op)
    return [n for n in candidates if n in available or (n == "cpu" and cpu_backend_required(op))]
