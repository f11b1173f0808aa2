"""1×1 convolution → depth-wise ReLU chain → 1×1 convolution (IDT-DDSA's SEFN without its spatial gate):
registration and the public function.

x (B, C, H, W)::

    u = W_in · x + b_in                       (B, n·C_h, H, W): n groups u_1 .. u_n of C_h channels
    y_1 = relu(d(u_1)),  y_i = relu(d(y_{i−1} + u_i))     d: one shared depth-wise K×K convolution
    z = W_out · concat(y_1, .., y_n) + b_out  (B, C_out, H, W)

u and y are n·C_h / C times larger than x (SEFN: 8 times), so unfused the block mostly moves them to
memory and back. The "cpu" backend's inference kernel walks the image in bands of rows and keeps u and
y of one band in a per-thread buffer: one GEMM in, the chain in place, one GEMM out. It has no
backward: when gradients are needed, the 1×1 convolutions run as ``F.conv2d`` around the chain op's
own fused kernel, which is differentiable. With ``backend="auto"`` small maps (under
:data:`MIN_FUSED_PIXELS`) also take that path: their u and y fit in the caches anyway, where torch's
single large GEMM is faster than one per band.

The custom op ``ddsa::depthwise_chain_mlp_fwd`` → z keeps the kernel one opaque node under
``torch.compile``. The backends are listed in ``ddsa_kernels._registry``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ... import _registry
from .._common import autocast_runs_eager, empty_block_output, needs_grad
from ..depthwise_chain import depthwise_chain
from ._common import check_inputs

_OP = "depthwise_chain_mlp"
BAND_ROWS = 16  # rows per band: u and y of a 256-wide band of SEFN at dim 32 take 2.9 MB per thread
MIN_FUSED_PIXELS = 128 * 128  # backend="auto" fuses maps of at least this many pixels (H·W)

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::depthwise_chain_mlp_fwd", mutates_args=())
def depthwise_chain_mlp_fwd(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
                            w_out: Tensor, b_out: Optional[Tensor], backend: str, band: int) -> Tensor:
    return _registry.implementation(_OP, backend).forward(x, w_in, b_in, w_dw, b_dw, w_out, b_out, band)


@depthwise_chain_mlp_fwd.register_fake
def _(x, w_in, b_in, w_dw, b_dw, w_out, b_out, backend, band):
    return empty_block_output(x, w_out)


def depthwise_chain_mlp(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
                        w_out: Tensor, b_out: Optional[Tensor] = None, *, backend: str = "auto") -> Tensor:
    """``conv1x1(depthwise_chain(conv1x1(x, w_in, b_in), w_dw, b_dw), w_out, b_out)``.

    Args:
        x: (B, C, H, W), float16/bfloat16/float32/float64.
        w_in: (n·C_h, C, 1, 1); b_in: (n·C_h,) or None.
        w_dw: (C_h, 1, K, K) with K odd, 1 ≤ K ≤ 7, shared by the n links of the chain; b_dw: (C_h,) or None.
        w_out: (C_out, n·C_h, 1, 1); b_out: (C_out,) or None. All of x's dtype and device.
        backend: "auto" (the "cpu" kernel for float32/float64 CPU tensors of at least
            :data:`MIN_FUSED_PIXELS` pixels outside autocast, else the unfused ops), "cpu", "reference"
            (plain tensor algebra) or "eager" (torch's convolutions).

    Returns:
        (B, C_out, H, W) in x's dtype; differentiable w.r.t. every input (the fused kernel runs only when
        no gradient is needed).
    """
    if autocast_runs_eager(backend, x):
        return _registry.implementation(_OP, "eager").forward(x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    check_inputs(x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    name = _registry.resolve_backend(backend, x.device, x.dtype, op=_OP)
    tensors = (x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    if not _registry.is_fused(name, op=_OP):  # "reference" / "eager": plain autograd of their torch ops
        return _registry.implementation(_OP, name).forward(*tensors)
    if not needs_grad(*tensors) and (backend != "auto" or x.shape[2] * x.shape[3] >= MIN_FUSED_PIXELS):
        return depthwise_chain_mlp_fwd(*tensors, name, BAND_ROWS)
    return F.conv2d(depthwise_chain(F.conv2d(x, w_in, b_in), w_dw, b_dw, backend=name), w_out, b_out)


__all__ = ["depthwise_chain_mlp"]
