"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu), directly on
NCHW planes. Signatures as :mod:`ddsa_kernels.ops.depthwise_conv.reference`."""
from __future__ import annotations

from ..._extension import ExtensionKernels, kernel


class CPU(ExtensionKernels):
    """Parallel over (b, c) planes; each output row one vectorised loop with the K² taps in registers."""

    forward = kernel("depthwise_conv_forward_cpu")  # (x, weight, bias, dilation)
    backward = kernel("depthwise_conv_backward_cpu")  # (grad_y, x, weight, dilation)
