"""Argument validation for the channel norm op (every bad input is named in the error), and its
accumulation dtype."""
from __future__ import annotations

from typing import Optional

import torch

from .._common import FLOAT_DTYPES, check_tensor_types
from .._dtypes import accumulation_dtype  # noqa: F401  (re-exported to the op's modules)


def check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    eps: float,
    subtract_mean: bool,
) -> None:
    """Validate the op's arguments: x (B, C, H, W) or (B, C, N), weight (C,), bias (C,) or None."""
    check_tensor_types({"x": x, "weight": weight, "bias": bias})
    if x.dim() not in (3, 4):
        raise ValueError(f"x must have shape (B, C, H, W) or (B, C, N), got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x has dtype {x.dtype}; expected float16, bfloat16, float32 or float64")
    channels = x.shape[1]
    if channels < 1:
        raise ValueError(f"x has C={channels} channels; need at least 1")
    if not isinstance(subtract_mean, bool):
        raise TypeError(f"subtract_mean must be a bool, got {subtract_mean!r}")
    if bias is not None and not subtract_mean:
        raise ValueError("bias must be None when subtract_mean=False (the bias-free variant has no bias)")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dim() != 1 or t.shape[0] != channels:
            raise ValueError(f"{name} must have shape (C,) with C={channels} (x's dim 1), got {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; expected a floating-point dtype")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if bias is not None and bias.dtype != weight.dtype:
        raise ValueError(f"bias has dtype {bias.dtype} but weight has dtype {weight.dtype}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
