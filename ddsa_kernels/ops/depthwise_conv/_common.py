"""Argument validation for the depth-wise convolution op (every bad input is named in the error)."""
from __future__ import annotations

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_KERNEL = 7


def check_tensor_types(x: object, weight: object, bias: object) -> None:
    """TypeError unless x and weight are tensors and bias is a tensor or None."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_weight_and_bias(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], channels: int,
                          same_dtype: bool = True, names: tuple[str, str] = ("weight", "bias")) -> None:
    """weight and bias on x's device (and of x's dtype unless ``same_dtype=False``), bias (channels,) or None;
    errors call them by ``names``."""
    for name, t in zip(names, (weight, bias)):
        if t is None:
            continue
        if same_dtype and t.dtype != x.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but x has dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != channels):
        raise ValueError(f"{names[1]} must have shape (C,) with C={channels}, got {tuple(bias.shape)}")


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
    check_tensor_types(x, weight, bias)
    check_dilation(dilation)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x has dtype {x.dtype}; expected float16, bfloat16, float32 or float64")
    channels = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must have shape (C, 1, K, K) with C={channels} (x's dim 1), got {tuple(weight.shape)}")
    k = weight.shape[2]
    if k % 2 != 1 or k > MAX_KERNEL:
        raise ValueError(f"weight has a {k}×{k} kernel; supported: odd sizes 1 to {MAX_KERNEL}")
    check_weight_and_bias(x, weight, bias, channels)
    return k
