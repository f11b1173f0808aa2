"""The compiled extension ``ddsa_kernels._C`` (csrc/), shared by the ops' "cpu" and "cuda" backends.

Importing this module (and so any op's ``extension`` module) raises an ImportError that says how to
build the extension when it was not compiled; the backend registry reports that message
(``ddsa_kernels.build_info()``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

try:
    from . import _C
except ImportError as exc:  # not compiled, or compiled against another torch
    raise ImportError(
        "compiled extension ddsa_kernels._C not built or not loadable "
        f"({exc}); reinstall with `pip install --no-build-isolation -e .` "
        "(torch must be installed first; see README)"
    ) from exc


def has_cuda_kernels() -> bool:
    """True when ``_C`` was compiled with its CUDA kernels."""
    return bool(_C.has_cuda())


def kernel_availability(*functions: str) -> tuple[bool, str]:
    """(True, "") when ``_C`` has every one of ``functions``, else why not (an extension built from older
    sources)."""
    for function in functions:
        if not hasattr(_C, function):
            return False, (f"ddsa_kernels._C has no {function} (compiled from older sources); rebuild with "
                           "`pip install --no-build-isolation -e .`")
    return True, ""


def cuda_availability(*functions: str) -> tuple[bool, str]:
    """(True, "") when the CUDA kernels were compiled, a CUDA device is visible and ``_C`` has every one of
    ``functions``, else why not."""
    if not has_cuda_kernels():
        return False, (
            "extension built without CUDA kernels (torch was a CPU build, no CUDA toolkit or no GPU at build "
            "time); rebuild with a CUDA torch and nvcc, or DDSA_FORCE_CUDA=1 pip install --no-build-isolation -e ."
        )
    if not torch.cuda.is_available():
        return False, "extension has CUDA kernels but no CUDA device is visible"
    return kernel_availability(*functions)


class kernel:
    """An entry point of an :class:`ExtensionKernels` backend that is the ``_C`` function ``name`` itself,
    called with the backend's arguments as they are (looked up on use)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: Optional[type] = None) -> Callable:
        return getattr(_C, self.name)


class ExtensionKernels:
    """Base of an op's "cpu" or "cuda" backend: entry points that call functions of ``_C``.

    An entry point is a :class:`kernel`, or a method that converts arguments and calls the ``_C`` functions
    named in ``functions``. The backend is available when ``_C`` has all of them; ``device = "cuda"`` marks
    CUDA kernels, which need a CUDA build and device too.
    """

    functions: tuple[str, ...] = ()
    device: str = "cpu"

    @classmethod
    def required_functions(cls) -> tuple[str, ...]:
        """Every ``_C`` function the backend calls: ``functions`` and its :class:`kernel` entry points."""
        bound = (attr.name for klass in cls.__mro__ for attr in vars(klass).values() if isinstance(attr, kernel))
        return (*cls.functions, *bound)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if cls.device == "cuda":
            return cuda_availability(*cls.required_functions())
        return kernel_availability(*cls.required_functions())
