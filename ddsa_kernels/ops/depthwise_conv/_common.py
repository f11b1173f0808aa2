"""Argument validation for the depth-wise convolution op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

from .._common import check_kernel, check_map, check_tensor_types, check_weight_and_bias

def check_dilation(dilation: object) -> int:
    """ValueError unless ``dilation`` is an int ≥ 1 (a bool is not); returns it."""
    if isinstance(dilation, bool) or not isinstance(dilation, (int, torch.SymInt)):
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r} of type {type(dilation).__name__}")
    if dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation}")
    return dilation


def check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int = 1) -> int:
    """Validate x (B, C, H, W), weight (C, 1, K, K) with K odd ≤ 7, bias (C,) or None, dilation an int ≥ 1;
    returns K."""
    check_tensor_types({"x": x, "weight": weight, "bias": bias})
    check_dilation(dilation)
    check_map("x", x)
    channels = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must have shape (C, 1, K, K) with C={channels} (x's dim 1), got {tuple(weight.shape)}")
    k = check_kernel("weight", weight)
    check_weight_and_bias(x, weight, bias, channels)
    return k
