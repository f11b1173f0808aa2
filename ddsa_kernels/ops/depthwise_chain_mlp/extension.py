"""The "cpu" backend: the C++ inference kernel of the compiled extension ``ddsa_kernels._C`` (csrc/cpu).

When the extension was not compiled the import raises an ImportError that says how to build it; the
backend registry reports that message (``ddsa_kernels.build_info("depthwise_chain_mlp")``).
"""
from __future__ import annotations

from ..._extension import _C, kernel_availability


class CPU:
    """Bands of rows: one GEMM to the hidden channels, the chain in a per-thread buffer, one GEMM out."""

    @staticmethod
    def availability() -> tuple[bool, str]:
        return kernel_availability("depthwise_chain_mlp_forward_cpu")

    @staticmethod
    def forward(x, w_in, b_in, w_dw, b_dw, w_out, b_out, band: int):
        return _C.depthwise_chain_mlp_forward_cpu(x, w_in, b_in, w_dw, b_dw, w_out, b_out, band)
