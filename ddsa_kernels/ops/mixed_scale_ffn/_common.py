"""Argument validation for DRSformer's mixed-scale feed-forward op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

from .._common import (check_kernel, check_map, check_pointwise_in, check_pointwise_out, check_tensor_types,
                       check_weight_and_bias)

Tensor = torch.Tensor
NAMES = ("x", "w_in", "b_in", "w3", "b3", "w5", "b5", "w3_1", "b3_1", "w5_1", "b5_1", "w_out", "b_out")


def _check_depthwise(name: str, weight: Tensor, out_channels: int, in_per_group: int) -> None:
    if (weight.dim() != 4 or weight.shape[0] != out_channels or weight.shape[1] != in_per_group
            or weight.shape[2] != weight.shape[3]):
        raise ValueError(f"{name} must have shape ({out_channels}, {in_per_group}, K, K), got {tuple(weight.shape)}")
    check_kernel(name, weight)


def check_middle(ref: Tensor, two_h: int, w3: Tensor, b3: Optional[Tensor], w5: Tensor, b5: Optional[Tensor],
                 w3_1: Tensor, b3_1: Optional[Tensor], w5_1: Tensor, b5_1: Optional[Tensor],
                 same_dtype: bool = True, counted: str = "u's channels") -> int:
    """Validate the depth-wise stages for 2h projected channels: 2h even and ≥ 2 (``counted`` names where
    2h comes from in the error), w3, w5 (2h, 1, K, K), b3, b5 (2h,); w3_1, w5_1 (h, 2, K, K), b3_1, b5_1
    (h,); K odd ≤ 7 (each weight its own); all on ref's device (and of its dtype unless
    ``same_dtype=False``). Returns h."""
    if two_h < 2 or two_h % 2:
        raise ValueError(f"{counted} must be an even number 2h ≥ 2 (the two halves), got {two_h}")
    h = two_h // 2
    for name, weight, bias, out_channels, per_group in (("w3", w3, b3, two_h, 1), ("w5", w5, b5, two_h, 1),
                                                        ("w3_1", w3_1, b3_1, h, 2), ("w5_1", w5_1, b5_1, h, 2)):
        _check_depthwise(name, weight, out_channels, per_group)
        check_weight_and_bias(ref, weight, bias, out_channels, same_dtype, (name, "b" + name[1:]))
    return h


def check_inputs(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w3: Tensor, b3: Optional[Tensor], w5: Tensor,
                 b5: Optional[Tensor], w3_1: Tensor, b3_1: Optional[Tensor], w5_1: Tensor, b5_1: Optional[Tensor],
                 w_out: Tensor, b_out: Optional[Tensor], same_dtype: bool = True) -> int:
    """Validate x (B, C, H, W), w_in (2h, C, 1, 1), the depth-wise stages (:func:`check_middle`) and
    w_out (C_out, 2h, 1, 1) with b_out (C_out,); biases may be None. Returns h.

    same_dtype=False accepts weights of another dtype than x (autocast casts them per op)."""
    args = (x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out)
    check_tensor_types(dict(zip(NAMES, args)))
    check_map("x", x)
    two_h = check_pointwise_in(x, w_in, "2h")
    h = check_middle(x, two_h, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, same_dtype, counted="w_in's outputs")
    check_weight_and_bias(x, w_in, b_in, two_h, same_dtype, ("w_in", "b_in"))
    check_pointwise_out(w_out, two_h, "w_in's outputs")
    check_weight_and_bias(x, w_out, b_out, w_out.shape[0], same_dtype, ("w_out", "b_out"))
    return h
