"""Argument validation for the 1×1 → depth-wise ReLU chain → 1×1 op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

from ..depthwise_conv._common import FLOAT_DTYPES, MAX_KERNEL, check_weight_and_bias


def check_inputs(x: torch.Tensor, w_in: torch.Tensor, b_in: Optional[torch.Tensor], w_dw: torch.Tensor,
                 b_dw: Optional[torch.Tensor], w_out: torch.Tensor, b_out: Optional[torch.Tensor],
                 same_dtype: bool = True) -> None:
    """Validate x (B, C, H, W), w_in (n·C_h, C, 1, 1), w_dw (C_h, 1, K, K) with K odd ≤ 7,
    w_out (C_out, n·C_h, 1, 1) and the biases ((n·C_h,), (C_h,), (C_out,) or None).

    same_dtype=False accepts weights of another dtype than x (autocast casts them per op)."""
    named = {"x": x, "w_in": w_in, "b_in": b_in, "w_dw": w_dw, "b_dw": b_dw, "w_out": w_out, "b_out": b_out}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) and not (t is None and name.startswith("b_")):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x has dtype {x.dtype}; expected float16, bfloat16, float32 or float64")
    channels = x.shape[1]
    if w_in.dim() != 4 or w_in.shape[1] != channels or w_in.shape[2:] != (1, 1) or w_in.shape[0] < 1:
        raise ValueError(f"w_in must have shape (n·C_h, C, 1, 1) with C={channels} (x's dim 1), got {tuple(w_in.shape)}")
    hidden = w_in.shape[0]
    if w_dw.dim() != 4 or w_dw.shape[1] != 1 or w_dw.shape[2] != w_dw.shape[3] or w_dw.shape[0] < 1:
        raise ValueError(f"w_dw must have shape (C_h, 1, K, K), got {tuple(w_dw.shape)}")
    if hidden % w_dw.shape[0]:
        raise ValueError(f"w_in has {hidden} outputs, not a multiple of w_dw's C_h={w_dw.shape[0]} "
                         "(they are n groups of C_h channels)")
    k = w_dw.shape[2]
    if k % 2 != 1 or k > MAX_KERNEL:
        raise ValueError(f"w_dw has a {k}×{k} kernel; supported: odd sizes 1 to {MAX_KERNEL}")
    if w_out.dim() != 4 or w_out.shape[1] != hidden or w_out.shape[2:] != (1, 1) or w_out.shape[0] < 1:
        raise ValueError(f"w_out must have shape (C_out, {hidden}, 1, 1) (w_in's outputs), got {tuple(w_out.shape)}")
    for weight, bias, size, names in ((w_in, b_in, hidden, ("w_in", "b_in")),
                                      (w_dw, b_dw, w_dw.shape[0], ("w_dw", "b_dw")),
                                      (w_out, b_out, w_out.shape[0], ("w_out", "b_out"))):
        check_weight_and_bias(x, weight, bias, size, same_dtype, names)
