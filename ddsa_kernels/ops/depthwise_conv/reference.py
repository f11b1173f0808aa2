"""The "reference" backend: the forward and the explicit backward in plain PyTorch, on any device.

x (B, C, H, W), weight (C, 1, K, K), K odd, R = K // 2, dilation D, zero padding D·R, stride 1::

    y  = b + Σ_ij k[i, j] · shift_ij(x)                 shift_ij(x)[h, w] = x[h + D(i − R), w + D(j − R)]
    dx = Σ_ij k[K−1−i, K−1−j] · shift_ij(dy)            (the same sum with the taps rotated by 180°)
    dk[i, j] = Σ_bhw dy · shift_ij(x),   db = Σ_bhw dy

Each tap touches only the rectangle where the shifted map overlaps the image (no padded copy, so a
large dilation costs nothing extra). Sums of dk and db accumulate in float32 (float64 for float64).
The autograd oracle of the tests is :func:`ddsa_kernels.ops.depthwise_conv.naive.naive_depthwise_conv`.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch


def _window(shift: int, size: int) -> tuple[slice, slice]:
    """(output slice, input slice) along an axis of ``size`` pixels where the map shifted by ``shift``
    pixels overlaps the image (empty when it does not)."""
    return slice(max(0, -shift), min(size, size - shift)), slice(max(0, shift), min(size, size + shift))


def _overlaps(height: int, width: int, k: int, dilation: int) -> Iterator[tuple[int, int, tuple, tuple]]:
    """(i, j, output window, input window) of every tap whose shifted map overlaps the image; a window
    is (row slice, column slice) of a (…, H, W) tensor."""
    r = k // 2
    for i in range(k):
        rows_out, rows_in = _window((i - r) * dilation, height)
        if rows_out.start >= rows_out.stop:
            continue
        for j in range(k):
            cols_out, cols_in = _window((j - r) * dilation, width)
            if cols_out.start >= cols_out.stop:
                continue
            yield i, j, (rows_out, cols_out), (rows_in, cols_in)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int = 1) -> torch.Tensor:
    """Backend forward: (B, C, H, W) → (B, C, H, W) contiguous, in x's dtype."""
    k = weight.shape[-1]
    height, width = x.shape[-2:]
    y = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
    for i, j, (ro, co), (ri, ci) in _overlaps(height, width, k, dilation):
        y[:, :, ro, co] += weight[:, 0, i, j].view(1, -1, 1, 1) * x[:, :, ri, ci]
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
             dilation: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend backward: (dx (B, C, H, W), dweight (C, 1, K, K), dbias (C,)) in weight's dtype."""
    k = weight.shape[-1]
    height, width = x.shape[-2:]
    dx = forward(grad_y, weight.flip(2, 3), None, dilation)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    g, xa = grad_y.to(acc), x.to(acc)
    dk = torch.zeros(weight.shape, dtype=acc, device=x.device)
    for i, j, (ro, co), (ri, ci) in _overlaps(height, width, k, dilation):
        dk[:, 0, i, j] = (g[:, :, ro, co] * xa[:, :, ri, ci]).sum(dim=(0, 2, 3))
    return dx, dk.to(weight.dtype), g.sum(dim=(0, 2, 3)).to(weight.dtype)
