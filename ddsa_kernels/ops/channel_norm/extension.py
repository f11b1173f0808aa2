"""The "cpu" and "cuda" backends: kernels of the compiled extension ``ddsa_kernels._C`` (csrc/).

Signatures as :mod:`ddsa_kernels.ops.channel_norm.reference`: x (B, C, H, W) any strides →
(y contiguous, mean (B, H, W), rstd (B, H, W)); backward → (dx, dw (C,), db (C,)).
"""
from __future__ import annotations

from ..._extension import _C, ExtensionKernels


class _Kernels(ExtensionKernels):
    """``_C.channel_norm_forward_<device>`` and ``_C.channel_norm_backward_<device>``."""

    @classmethod
    def forward(cls, x, weight, bias, eps, subtract_mean):
        return getattr(_C, f"channel_norm_forward_{cls.device}")(x, weight, bias, float(eps), bool(subtract_mean))

    @classmethod
    def backward(cls, grad_y, x, weight, mean, rstd, subtract_mean):
        return getattr(_C, f"channel_norm_backward_{cls.device}")(grad_y, x, weight, mean, rstd,
                                                                  bool(subtract_mean))


class CPU(_Kernels):
    """C++ kernels parallel over (batch, pixel chunk); fp16/bf16 through fp32 tiles."""

    functions = ("channel_norm_forward_cpu", "channel_norm_backward_cpu")


class CUDA(_Kernels):
    """CUDA kernels: a block per tile of pixels, a thread per pixel looping over channels."""

    functions = ("channel_norm_forward_cuda", "channel_norm_backward_cuda")
    device = "cuda"
