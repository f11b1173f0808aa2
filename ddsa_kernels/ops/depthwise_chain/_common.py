"""Argument validation for the depth-wise ReLU chain op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

from .._common import check_kernel, check_map, check_tensor_types, check_weight_and_bias


def check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 same_dtype: bool = True) -> tuple[int, int]:
    """Validate x (B, n·C, H, W), weight (C, 1, K, K) with K odd ≤ 7, bias (C,) or None; returns (n, K).

    same_dtype=False accepts a weight and bias of another dtype than x (autocast casts them per op)."""
    check_tensor_types({"x": x, "weight": weight, "bias": bias})
    check_map("x", x, "(B, n·C, H, W)")
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3] or weight.shape[0] < 1:
        raise ValueError(f"weight must have shape (C, 1, K, K), got {tuple(weight.shape)}")
    channels = weight.shape[0]
    if x.shape[1] % channels:
        raise ValueError(f"x has {x.shape[1]} channels, not a multiple of the weight's C={channels} "
                         "(x holds n groups of C channels)")
    k = check_kernel("weight", weight)
    check_weight_and_bias(x, weight, bias, channels, same_dtype)
    return x.shape[1] // channels, k
