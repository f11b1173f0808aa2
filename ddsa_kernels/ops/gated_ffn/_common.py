"""Argument validation for the gated feed-forward op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

from .._common import (check_kernel, check_map, check_pointwise_in, check_pointwise_out, check_tensor_types,
                       check_weight_and_bias)


def _check_depthwise(w_dw: torch.Tensor, channels: int) -> None:
    if w_dw.dim() != 4 or w_dw.shape[1] != 1 or w_dw.shape[2] != w_dw.shape[3] or w_dw.shape[0] != channels:
        raise ValueError(f"w_dw must have shape (2h, 1, K, K) with 2h={channels}, got {tuple(w_dw.shape)}")
    check_kernel("w_dw", w_dw)


def check_inputs(x: torch.Tensor, w_in: torch.Tensor, b_in: Optional[torch.Tensor], w_dw: torch.Tensor,
                 b_dw: Optional[torch.Tensor], w_out: torch.Tensor, b_out: Optional[torch.Tensor],
                 same_dtype: bool = True) -> None:
    """Validate x (B, C, H, W), w_in (2h, C, 1, 1), w_dw (2h, 1, K, K) with K odd ≤ 7, w_out (C_out, h, 1, 1)
    and the biases ((2h,), (2h,), (C_out,) or None).

    same_dtype=False accepts weights of another dtype than x (autocast casts them per op)."""
    check_tensor_types({"x": x, "w_in": w_in, "b_in": b_in, "w_dw": w_dw, "b_dw": b_dw, "w_out": w_out,
                        "b_out": b_out})
    check_map("x", x)
    hidden2 = check_pointwise_in(x, w_in, "2h")
    if hidden2 % 2:
        raise ValueError(f"w_in has {hidden2} outputs; the gate needs an even number 2h (two halves)")
    _check_depthwise(w_dw, hidden2)
    check_pointwise_out(w_out, hidden2 // 2, "half of w_in's outputs")
    for weight, bias, size, names in ((w_in, b_in, hidden2, ("w_in", "b_in")),
                                      (w_dw, b_dw, hidden2, ("w_dw", "b_dw")),
                                      (w_out, b_out, w_out.shape[0], ("w_out", "b_out"))):
        check_weight_and_bias(x, weight, bias, size, same_dtype, names)


def check_gated_inputs(u: torch.Tensor, w_dw: torch.Tensor, b_dw: Optional[torch.Tensor],
                       same_dtype: bool = True) -> None:
    """Validate u (B, 2h, H, W), w_dw (2h, 1, K, K) with K odd ≤ 7 and b_dw (2h,) or None."""
    check_tensor_types({"u": u, "w_dw": w_dw, "b_dw": b_dw})
    check_map("u", u, "(B, 2h, H, W)")
    if u.shape[1] % 2 or u.shape[1] == 0:
        raise ValueError(f"u has {u.shape[1]} channels; the gate needs an even number 2h (two halves)")
    _check_depthwise(w_dw, u.shape[1])
    check_weight_and_bias(u, w_dw, b_dw, u.shape[1], same_dtype, ("w_dw", "b_dw"))
