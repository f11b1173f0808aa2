"""Argument validation for the 1×1 → depth-wise ReLU chain → 1×1 op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

from .._common import (check_kernel, check_map, check_pointwise_in, check_pointwise_out, check_tensor_types,
                       check_weight_and_bias)


def check_inputs(x: torch.Tensor, w_in: torch.Tensor, b_in: Optional[torch.Tensor], w_dw: torch.Tensor,
                 b_dw: Optional[torch.Tensor], w_out: torch.Tensor, b_out: Optional[torch.Tensor],
                 same_dtype: bool = True) -> None:
    """Validate x (B, C, H, W), w_in (n·C_h, C, 1, 1), w_dw (C_h, 1, K, K) with K odd ≤ 7,
    w_out (C_out, n·C_h, 1, 1) and the biases ((n·C_h,), (C_h,), (C_out,) or None).

    same_dtype=False accepts weights of another dtype than x (autocast casts them per op)."""
    check_tensor_types({"x": x, "w_in": w_in, "b_in": b_in, "w_dw": w_dw, "b_dw": b_dw, "w_out": w_out,
                        "b_out": b_out})
    check_map("x", x)
    hidden = check_pointwise_in(x, w_in, "n·C_h")
    if w_dw.dim() != 4 or w_dw.shape[1] != 1 or w_dw.shape[2] != w_dw.shape[3] or w_dw.shape[0] < 1:
        raise ValueError(f"w_dw must have shape (C_h, 1, K, K), got {tuple(w_dw.shape)}")
    if hidden % w_dw.shape[0]:
        raise ValueError(f"w_in has {hidden} outputs, not a multiple of w_dw's C_h={w_dw.shape[0]} "
                         "(they are n groups of C_h channels)")
    check_kernel("w_dw", w_dw)
    check_pointwise_out(w_out, hidden, "w_in's outputs")
    for weight, bias, size, names in ((w_in, b_in, hidden, ("w_in", "b_in")),
                                      (w_dw, b_dw, w_dw.shape[0], ("w_dw", "b_dw")),
                                      (w_out, b_out, w_out.shape[0], ("w_out", "b_out"))):
        check_weight_and_bias(x, weight, bias, size, same_dtype, names)
