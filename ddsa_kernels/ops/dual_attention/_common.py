"""Argument validation for the dual attention op (every bad input is named in the error), and its
accumulation dtype."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from .._common import FLOAT_DTYPES, check_tensor_types
from .._dtypes import accumulation_dtype  # noqa: F401  (re-exported to the op's modules)


def normalize_topk(topk: Sequence[Optional[int]], channels: int) -> tuple[int, ...]:
    """Return keep-counts as ints, 0 meaning a dense branch; check 1 <= k <= C."""
    if isinstance(topk, (int, type(None))) or isinstance(topk, (str, bytes)):
        raise ValueError(f"topk must be a sequence with one entry per branch (None or int), got {topk!r}")
    keep = []
    for i, k in enumerate(topk):
        if k is None:
            keep.append(0)
            continue
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"topk[{i}] must be None (dense) or an int keep-count, got {k!r}")
        if not 1 <= k <= channels:
            raise ValueError(f"topk[{i}]={k} is outside 1..C (C={channels} channels per head)")
        keep.append(int(k))
    if not keep:
        raise ValueError("topk must have at least one branch")
    return tuple(keep)


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    topk: Sequence[Optional[int]],
    eps: float,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Validate the op's arguments. Returns temperature reshaped to (H,) and the keep-counts."""
    check_tensor_types({"q": q, "k": k, "v": v, "temperature": temperature, "weights": weights})
    if q.dim() != 4:
        raise ValueError(f"q must have shape (B, H, C, N), got {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but q has shape {tuple(q.shape)}")
    if q.dtype not in FLOAT_DTYPES:
        raise ValueError(f"q has dtype {q.dtype}; expected float16, bfloat16, float32 or float64")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but q has dtype {q.dtype}")
    for name, t in (("k", k), ("v", v), ("temperature", temperature), ("weights", weights)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    for name, t in (("temperature", temperature), ("weights", weights)):
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    batch, heads, channels, pixels = q.shape
    if channels < 1:
        raise ValueError(f"q has C={channels} channels per head; need at least 1")
    keep = normalize_topk(topk, channels)
    if temperature.numel() != heads or temperature.dim() not in (1, 3):
        raise ValueError(
            f"temperature must have shape (H,) or (H, 1, 1) with H={heads}, got {tuple(temperature.shape)}"
        )
    if weights.dim() != 1 or weights.numel() != len(keep):
        raise ValueError(
            f"weights must have shape ({len(keep)},), one per topk branch, got {tuple(weights.shape)}"
        )
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    return temperature.reshape(heads), keep
