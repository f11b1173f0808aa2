"""The "cpu" and "cuda" backends: kernels of the compiled extension ``ddsa_kernels._C`` (csrc/).

Signatures as :mod:`ddsa_kernels.ops.channel_norm.reference`: x (B, C, H, W) any strides →
(y contiguous, mean (B, H, W), rstd (B, H, W)); backward → (dx, dw (C,), db (C,)).
When the extension was not compiled the import raises an ImportError that says how to build it;
the backend registry reports that message (``ddsa_kernels.build_info("channel_norm")``).
"""
from __future__ import annotations

from ..._extension import _C, cuda_availability, kernel_availability


class CPU:
    """C++ kernels parallel over (batch, pixel chunk); fp16/bf16 through fp32 tiles."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        return kernel_availability("channel_norm_forward_cpu")

    @staticmethod
    def forward(x, weight, bias, eps, subtract_mean):
        return _C.channel_norm_forward_cpu(x, weight, bias, float(eps), bool(subtract_mean))

    @staticmethod
    def backward(grad_y, x, weight, mean, rstd, subtract_mean):
        return _C.channel_norm_backward_cpu(grad_y, x, weight, mean, rstd, bool(subtract_mean))


class CUDA:
    """CUDA kernels: a block per tile of pixels, a thread per pixel looping over channels."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        ok, why = cuda_availability()
        if not ok:
            return ok, why
        return kernel_availability("channel_norm_forward_cuda")

    @staticmethod
    def forward(x, weight, bias, eps, subtract_mean):
        return _C.channel_norm_forward_cuda(x, weight, bias, float(eps), bool(subtract_mean))

    @staticmethod
    def backward(grad_y, x, weight, mean, rstd, subtract_mean):
        return _C.channel_norm_backward_cuda(grad_y, x, weight, mean, rstd, bool(subtract_mean))
