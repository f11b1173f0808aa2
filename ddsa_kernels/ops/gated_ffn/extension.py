"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu/gated_ffn_cpu.cpp)."""
from __future__ import annotations

from ..._extension import ExtensionKernels, kernel


class CPU(ExtensionKernels):
    """Inference in bands of rows (one GEMM in, depth-wise + gate in a per-thread buffer, one GEMM out), and the
    gated depth-wise middle's forward and backward for training."""

    forward = kernel("gated_ffn_forward_cpu")  # (x, w_in, b_in, w_dw, b_dw, w_out, b_out, band)
    gated_forward = kernel("gated_depthwise_forward_cpu")  # (u, w_dw, b_dw)
    gated_backward = kernel("gated_depthwise_backward_cpu")  # (grad_y, u, w_dw, b_dw)
