"""The "cpu" and "cuda" backends: kernels of the compiled extension ``ddsa_kernels._C`` (csrc/).

Importing this module registers "cpu" always and "cuda" with an availability check that says
why it cannot run (extension built without CUDA, no GPU visible). When the extension was not
compiled, the import raises an ImportError whose message tells how to build it; the backend
registry records that message for :func:`ddsa_kernels.build_info`.
"""
from __future__ import annotations

import torch

from .backends import Backend, register_backend

try:
    from . import _C
except ImportError as exc:  # not compiled, or compiled against another torch
    raise ImportError(
        "compiled extension ddsa_kernels._C not built or not loadable "
        f"({exc}); reinstall with `pip install --no-build-isolation -e .` "
        "(torch must be installed first; see README)"
    ) from exc

_ALL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The CUDA kernels keep C×C tiles and C-row tiles in shared memory; larger C uses the
# reference backend's matmuls (the same math) instead.
CUDA_MAX_CHANNELS = 128


def has_cuda_kernels() -> bool:
    """True when ``_C`` was compiled with its CUDA kernels."""
    return bool(_C.has_cuda())


def cpu_forward(q, k, v, temperature, weights, keep, eps):
    return _C.forward_cpu(q, k, v, temperature, weights, list(keep), float(eps))


def cpu_backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
    return _C.backward_cpu(grad_out, q, k, v, temperature, weights, probs, gram, norms, list(keep), float(eps))


def _cuda_fits(q: torch.Tensor) -> bool:
    return q.shape[2] <= CUDA_MAX_CHANNELS


def cuda_forward(q, k, v, temperature, weights, keep, eps):
    if not _cuda_fits(q):
        from . import reference_backend

        return reference_backend.forward(q, k, v, temperature, weights, keep, eps)
    return _C.forward_cuda(q, k, v, temperature, weights, list(keep), float(eps))


def cuda_backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
    if not _cuda_fits(q):
        from . import reference_backend

        return reference_backend.backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps)
    return _C.backward_cuda(grad_out, q, k, v, temperature, weights, probs, gram, norms, list(keep), float(eps))


def _cuda_status() -> tuple[bool, str]:
    if not has_cuda_kernels():
        return False, (
            "extension built without CUDA kernels (torch was a CPU build, no CUDA toolkit or no GPU at build "
            "time); rebuild with a CUDA torch and nvcc, or DDSA_FORCE_CUDA=1 pip install --no-build-isolation -e ."
        )
    if not torch.cuda.is_available():
        return False, "extension has CUDA kernels but no CUDA device is visible"
    return True, ""


register_backend(
    Backend(
        name="cpu",
        forward=cpu_forward,
        backward=cpu_backward,
        device_types=("cpu",),
        dtypes=_ALL_FLOATS,
    )
)

register_backend(
    Backend(
        name="cuda",
        forward=cuda_forward,
        backward=cuda_backward,
        device_types=("cuda",),
        dtypes=(torch.float16, torch.bfloat16, torch.float32),
        is_available=_cuda_status,
    )
)
