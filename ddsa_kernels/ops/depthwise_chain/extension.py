"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu).

Signatures as :mod:`ddsa_kernels.ops.depthwise_chain.reference`.
"""
from __future__ import annotations

from ..._extension import ExtensionKernels, kernel


class CPU(ExtensionKernels):
    """One task per (b, c) plane runs the whole chain with one scratch plane; the backward one task per channel."""

    forward = kernel("depthwise_chain_forward_cpu")  # (x, weight, bias)
    backward = kernel("depthwise_chain_backward_cpu")  # (grad_y, x, y, weight)
