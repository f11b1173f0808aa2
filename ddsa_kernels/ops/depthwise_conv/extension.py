"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu).

Signatures as :mod:`ddsa_kernels.ops.depthwise_conv.reference`. When the extension was not compiled
the import raises an ImportError that says how to build it; the backend registry reports that message
(``ddsa_kernels.build_info("depthwise_conv")``).
"""
from __future__ import annotations

from ..._extension import _C, kernel_availability


class CPU:
    """Parallel over (b, c) planes; each output row one vectorised loop with the K² taps in registers."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        return kernel_availability("depthwise_conv_forward_cpu")

    @staticmethod
    def forward(x, weight, bias, dilation=1):
        return _C.depthwise_conv_forward_cpu(x, weight, bias, dilation)

    @staticmethod
    def backward(grad_y, x, weight, dilation=1):
        return _C.depthwise_conv_backward_cpu(grad_y, x, weight, dilation)
