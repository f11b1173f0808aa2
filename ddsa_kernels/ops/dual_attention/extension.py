"""The "cpu" and "cuda" backends: kernels of the compiled extension ``ddsa_kernels._C`` (csrc/)."""
from __future__ import annotations

from ..._extension import _C, cuda_availability


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
        return cuda_availability()

    @staticmethod
    def forward(q, k, v, temperature, weights, keep, eps):
        return _C.forward_cuda(q, k, v, temperature, weights, list(keep), float(eps))

    @staticmethod
    def backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
        return _C.backward_cuda(grad_out, q, k, v, temperature, weights, probs, gram, norms, list(keep), float(eps))
