"""The "reference" backend: the fused algorithm in plain PyTorch, on any device and dtype.

Tensors: x (B, C, H, W) with any strides; weight, bias (C,) in the accumulation dtype (float32,
float64 for float64 inputs). Statistics mean, rstd (B, H, W) in the accumulation dtype, per pixel.

Forward: μ = mean_c x, rstd = 1/sqrt(mean_c (x − μ)² + eps) (two passes: mean, then the centred
variance), y = (x − μ)·rstd·w + b, or x·rstd·w without the mean.

μ is exact only to half an ulp of |μ|, a sizeable part of x − μ on a near-constant pixel far from zero
(2 ± 1e-5 in float32); so x − μ is corrected by its own channel mean r = mean_c (x − μ) wherever x̂ is
formed (variance mean_c (x − μ)² − r², x̂ = (x − μ − r)·rstd, in the backward too), and the saved mean
is μ + r. Autograd of the plain formula gets the same correction through μ's gradient.

Backward, with g = dy·w, x̂ = (x − μ)·rstd and means over channels::

    subtract_mean=True:  dx = (g − mean(g) − x̂·mean(g·x̂))·rstd,  dw = Σ dy·x̂,      db = Σ dy
    subtract_mean=False: dx = (g − x̂·mean(g·x·rstd))·rstd,       dw = Σ dy·x·rstd, db = Σ dy

(sums over batch and pixels). The autograd oracle of the tests is
:func:`ddsa_kernels.ops.channel_norm.naive.naive_channel_norm`, which shares no code with this file.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import accumulation_dtype


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float, subtract_mean: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend forward: x (B, C, H, W) → (y (B, C, H, W) contiguous in x's dtype, mean, rstd (B, H, W))."""
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    mean = xa.mean(dim=1)
    d = xa - mean.unsqueeze(1)
    residual = d.mean(dim=1)
    rstd = torch.rsqrt((d.square().mean(dim=1) - residual.square()).clamp_min(0) + eps)
    w = weight.to(acc).view(1, -1, 1, 1)
    if subtract_mean:
        y = (d - residual.unsqueeze(1)) * rstd.unsqueeze(1) * w
        if bias is not None:
            y = y + bias.to(acc).view(1, -1, 1, 1)
    else:
        y = xa * rstd.unsqueeze(1) * w
    return y.to(x.dtype).contiguous(), mean + residual, rstd


def backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    subtract_mean: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend backward → (dx (B, C, H, W) contiguous in x's dtype, dw (C,), db (C,) in the accumulation dtype)."""
    acc = mean.dtype
    dy = grad_y.to(acc)
    xa = x.to(acc)
    r = rstd.unsqueeze(1)
    d = xa - mean.unsqueeze(1)
    xhat = (d - d.mean(dim=1, keepdim=True)) * r
    g = dy * weight.to(acc).view(1, -1, 1, 1)
    if subtract_mean:
        dx = (g - g.mean(dim=1, keepdim=True) - xhat * (g * xhat).mean(dim=1, keepdim=True)) * r
        dw = (dy * xhat).sum(dim=(0, 2, 3))
    else:
        xr = xa * r
        dx = (g - xhat * (g * xr).mean(dim=1, keepdim=True)) * r
        dw = (dy * xr).sum(dim=(0, 2, 3))
    db = dy.sum(dim=(0, 2, 3))
    return dx.to(x.dtype).contiguous(), dw, db
