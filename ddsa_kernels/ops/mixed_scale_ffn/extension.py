"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu)."""
from __future__ import annotations

from ..._extension import ExtensionKernels, kernel


class CPU(ExtensionKernels):
    """Inference: bands of rows, one GEMM in, both depth-wise stages in per-thread buffers, one GEMM out.
    Training: the depth-wise middle (u → cat(p, q)) forward and backward, one task per plane."""

    # (x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out, band)
    forward = kernel("mixed_scale_ffn_forward_cpu")
    middle_forward = kernel("mixed_scale_ffn_mid_forward_cpu")  # (u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)
    # (grad_m, u, m, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1) → a list of the nine gradients
    middle_backward = kernel("mixed_scale_ffn_mid_backward_cpu")
