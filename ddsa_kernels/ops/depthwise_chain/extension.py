"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu).

Signatures as :mod:`ddsa_kernels.ops.depthwise_chain.reference`. When the extension was not compiled
the import raises an ImportError that says how to build it; the backend registry reports that message
(``ddsa_kernels.build_info("depthwise_chain")``).
"""
from __future__ import annotations

from ..._extension import _C, kernel_availability


class CPU:
    """One task per (b, c) plane runs the whole chain with one scratch plane; the backward one task per channel."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        return kernel_availability("depthwise_chain_forward_cpu")

    @staticmethod
    def forward(x, weight, bias):
        return _C.depthwise_chain_forward_cpu(x, weight, bias)

    @staticmethod
    def backward(grad_y, x, y, weight):
        return _C.depthwise_chain_backward_cpu(grad_y, x, y, weight)
