"""The "cpu" backend: the C++ inference kernel of the compiled extension ``ddsa_kernels._C`` (csrc/cpu)."""
from __future__ import annotations

from ..._extension import ExtensionKernels, kernel


class CPU(ExtensionKernels):
    """Bands of rows: one GEMM to the hidden channels, the chain in a per-thread buffer, one GEMM out."""

    forward = kernel("depthwise_chain_mlp_forward_cpu")  # (x, w_in, b_in, w_dw, b_dw, w_out, b_out, band)
