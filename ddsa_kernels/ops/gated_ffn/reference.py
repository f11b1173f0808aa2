"""The "reference" backend: plain PyTorch tensor algebra on any device, float64 capable, differentiated
by autograd (an unfused backend, no custom op).

The 1×1 convolutions are matrix products over the flattened pixels, the depth-wise convolution the
depth-wise op's reference forward (taps on the overlapping windows of the image), the exact GELU
``a · Φ(a)`` with Φ the normal CDF. Signatures are those of the op's public functions, without
``backend``.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._common import matmul_pointwise
from ..depthwise_conv import reference as conv

Tensor = torch.Tensor


def gated_forward(u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor] = None) -> Tensor:
    """(B, 2h, H, W) → gelu(d[:, :h]) · d[:, h:] (B, h, H, W) with d the depth-wise convolution of u."""
    d = conv.forward(u, w_dw, b_dw)
    h = d.shape[1] // 2
    a = d[:, :h]
    return a * torch.special.ndtr(a) * d[:, h:]


def forward(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor], w_out: Tensor,
            b_out: Optional[Tensor] = None) -> Tensor:
    """(B, C, H, W) → (B, C_out, H, W) in x's dtype."""
    return matmul_pointwise(gated_forward(matmul_pointwise(x, w_in, b_in), w_dw, b_dw), w_out, b_out)
