"""The "reference" backend: plain PyTorch tensor algebra on any device, float64 capable, differentiated
by autograd (an unfused backend, no custom op).

The 1×1 convolutions are matrix products over the flattened pixels; the chain is the depth-wise chain
op's own reference forward (depth-wise taps on the overlapping windows of the image). Signatures are
those of the op's public function, without ``backend``.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._common import matmul_pointwise
from ..depthwise_chain import reference as chain

Tensor = torch.Tensor


def forward(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor], w_out: Tensor,
            b_out: Optional[Tensor] = None) -> Tensor:
    """(B, C, H, W) → (B, C_out, H, W) in x's dtype."""
    return matmul_pointwise(chain.forward(matmul_pointwise(x, w_in, b_in), w_dw, b_dw), w_out, b_out)
