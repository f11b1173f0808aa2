"""The "cpu" and "cuda" backends: kernels of the compiled extension ``ddsa_kernels._C`` (csrc/).

When the extension was not compiled the import raises an ImportError that says how to build it;
the backend registry reports that message (``ddsa_kernels.build_info()``).
"""
from __future__ import annotations

import torch

try:
    from ... import _C
except ImportError as exc:  # not compiled, or compiled against another torch
    raise ImportError(
        "compiled extension ddsa_kernels._C not built or not loadable "
        f"({exc}); reinstall with `pip install --no-build-isolation -e .` "
        "(torch must be installed first; see README)"
    ) from exc


def has_cuda_kernels() -> bool:
    """True when ``_C`` was compiled with its CUDA kernels."""
    return bool(_C.has_cuda())


class CPU:
    """C++ kernels parallel over (b, h) and N-tiles; fp16/bf16 through fp32 tiles."""

    @staticmethod
    def forward(q, k, v, temperature, weights, keep, eps):
        return _C.forward_cpu(q, k, v, temperature, weights, list(keep), float(eps))

    @staticmethod
    def backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
        return _C.backward_cpu(grad_out, q, k, v, temperature, weights, probs, gram, norms, list(keep), float(eps))


class CUDA:
    """CUDA kernels; they keep C×C tiles in shared memory, hence the registry's C ≤ 128 limit."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        if not has_cuda_kernels():
            return False, (
                "extension built without CUDA kernels (torch was a CPU build, no CUDA toolkit or no GPU at build "
                "time); rebuild with a CUDA torch and nvcc, or DDSA_FORCE_CUDA=1 pip install --no-build-isolation -e ."
            )
        if not torch.cuda.is_available():
            return False, "extension has CUDA kernels but no CUDA device is visible"
        return True, ""

    @staticmethod
    def forward(q, k, v, temperature, weights, keep, eps):
        return _C.forward_cuda(q, k, v, temperature, weights, list(keep), float(eps))

    @staticmethod
    def backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
        return _C.backward_cuda(grad_out, q, k, v, temperature, weights, probs, gram, norms, list(keep), float(eps))
