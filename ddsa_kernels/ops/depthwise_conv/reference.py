"""The "reference" backend: the forward and the explicit backward in plain PyTorch, on any device.

x (B, C, H, W), weight (C, 1, K, K), K odd, R = K // 2, zero padding R, stride 1::

    y  = b + Σ_ij k[i, j] · shift_ij(x)                 shift_ij(x)[h, w] = x[h + i − R, w + j − R]
    dx = Σ_ij k[K−1−i, K−1−j] · shift_ij(dy)            (the same sum with the taps rotated by 180°)
    dk[i, j] = Σ_bhw dy · shift_ij(x),   db = Σ_bhw dy

Sums of dk and db accumulate in float32 (float64 for float64). The autograd oracle of the tests is
:func:`ddsa_kernels.ops.depthwise_conv.naive.reference_depthwise_conv`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _shifts(x: torch.Tensor, k: int):
    r = k // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))
    for i in range(k):
        for j in range(k):
            yield i, j, padded[:, :, i:i + height, j:j + width]


def forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Backend forward: (B, C, H, W) → (B, C, H, W) contiguous, in x's dtype."""
    k = weight.shape[-1]
    y = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
    for i, j, shifted in _shifts(x, k):
        y += weight[:, 0, i, j].view(1, -1, 1, 1) * shifted
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend backward: (dx (B, C, H, W), dweight (C, 1, K, K), dbias (C,)) in weight's dtype."""
    k = weight.shape[-1]
    dx = forward(grad_y, weight.flip(2, 3), None)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    g = grad_y.to(acc)
    dk = torch.empty(weight.shape, dtype=acc, device=x.device)
    for i, j, shifted in _shifts(x.to(acc), k):
        dk[:, 0, i, j] = (g * shifted).sum(dim=(0, 2, 3))
    return dx, dk.to(weight.dtype), g.sum(dim=(0, 2, 3)).to(weight.dtype)
