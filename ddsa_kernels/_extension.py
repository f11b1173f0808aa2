"""The compiled extension ``ddsa_kernels._C`` (csrc/), shared by the ops' "cpu" and "cuda" backends.

Importing this module raises an ImportError that says how to build the extension when it was not
compiled; the backend registry reports that message (``ddsa_kernels.build_info()``).
"""
from __future__ import annotations

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


def kernel_availability(function: str) -> tuple[bool, str]:
    """(True, "") when ``_C`` has ``function``, else why not (an extension built from older sources)."""
    if not hasattr(_C, function):
        return False, (f"ddsa_kernels._C has no {function} (compiled from older sources); rebuild with "
                       "`pip install --no-build-isolation -e .`")
    return True, ""


def cuda_availability() -> tuple[bool, str]:
    """(True, "") when the CUDA kernels were compiled and a CUDA device is visible, else why not."""
    if not has_cuda_kernels():
        return False, (
            "extension built without CUDA kernels (torch was a CPU build, no CUDA toolkit or no GPU at build "
            "time); rebuild with a CUDA torch and nvcc, or DDSA_FORCE_CUDA=1 pip install --no-build-isolation -e ."
        )
    if not torch.cuda.is_available():
        return False, "extension has CUDA kernels but no CUDA device is visible"
    return True, ""
