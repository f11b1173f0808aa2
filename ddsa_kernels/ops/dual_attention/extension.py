"""The "cpu" and "cuda" backends: kernels of the compiled extension ``ddsa_kernels._C`` (csrc/).

Signatures as :mod:`ddsa_kernels.ops.dual_attention.reference`.
"""
from __future__ import annotations

from ..._extension import _C, ExtensionKernels


class _Kernels(ExtensionKernels):
    """The fused op's ``_C.forward_<device>`` and ``_C.backward_<device>``."""

    @classmethod
    def forward(cls, q, k, v, temperature, weights, keep, eps):
        return getattr(_C, f"forward_{cls.device}")(q, k, v, temperature, weights, list(keep), float(eps))

    @classmethod
    def backward(cls, grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
        return getattr(_C, f"backward_{cls.device}")(grad_out, q, k, v, temperature, weights, probs, gram, norms,
                                                     list(keep), float(eps))


class CPU(_Kernels):
    """C++ kernels parallel over (b, h) and N-tiles; fp16/bf16 through fp32 tiles."""

    functions = ("forward_cpu", "backward_cpu")


class CUDA(_Kernels):
    """CUDA kernels; they keep C×C tiles in shared memory, hence the registry's C ≤ 128 limit."""

    functions = ("forward_cuda", "backward_cuda")
    device = "cuda"
