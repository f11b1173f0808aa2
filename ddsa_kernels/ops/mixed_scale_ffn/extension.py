"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu).

When the extension was not compiled the import raises an ImportError that says how to build it; the
backend registry reports that message (``ddsa_kernels.build_info("mixed_scale_ffn")``).
"""
from __future__ import annotations

from ..._extension import _C, kernel_availability


class CPU:
    """Inference: bands of rows, one GEMM in, both depth-wise stages in per-thread buffers, one GEMM out.
    Training: the depth-wise middle (u → cat(p, q)) forward and backward, one task per plane."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        return kernel_availability("mixed_scale_ffn_forward_cpu")

    @staticmethod
    def forward(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out, band: int):
        return _C.mixed_scale_ffn_forward_cpu(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out,
                                              band)

    @staticmethod
    def middle_forward(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1):
        return _C.mixed_scale_ffn_mid_forward_cpu(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)

    @staticmethod
    def middle_backward(grad_m, u, m, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1):
        return tuple(_C.mixed_scale_ffn_mid_backward_cpu(grad_m, u, m, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1))
