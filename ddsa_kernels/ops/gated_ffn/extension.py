"""The "cpu" backend: the C++ kernels of the compiled extension ``ddsa_kernels._C`` (csrc/cpu/gated_ffn_cpu.cpp).

When the extension was not compiled the import raises an ImportError that says how to build it; the
backend registry reports that message (``ddsa_kernels.build_info("gated_ffn")``).
"""
from __future__ import annotations

from ..._extension import _C, kernel_availability


class CPU:
    """Inference in bands of rows (one GEMM in, depth-wise + gate in a per-thread buffer, one GEMM out), and the
    gated depth-wise middle's forward and backward for training."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        for name in ("gated_ffn_forward_cpu", "gated_depthwise_forward_cpu", "gated_depthwise_backward_cpu"):
            ok, why = kernel_availability(name)
            if not ok:
                return ok, why
        return True, ""

    @staticmethod
    def forward(x, w_in, b_in, w_dw, b_dw, w_out, b_out, band: int):
        return _C.gated_ffn_forward_cpu(x, w_in, b_in, w_dw, b_dw, w_out, b_out, band)

    @staticmethod
    def gated_forward(u, w_dw, b_dw):
        return _C.gated_depthwise_forward_cpu(u, w_dw, b_dw)

    @staticmethod
    def gated_backward(grad_y, u, w_dw, b_dw):
        return _C.gated_depthwise_backward_cpu(grad_y, u, w_dw, b_dw)
