"""The "reference" backend: the chain's forward and its explicit backward in plain PyTorch, any device.

With u_1 = x_1, u_i = y_{i−1} + x_i the convolution inputs, d the depth-wise convolution (the
depth-wise op's reference backend) and g_i the gradient of the pre-activation d(u_i)::

    g_n = dy_n · [y_n > 0],   g_i = (dy_i + du_{i+1}) · [y_i > 0],   du_i = dconv_x(g_i),   dx_i = du_i
    dweight = Σ_i dconv_w(g_i, u_i),   dbias = Σ_i Σ_bhw g_i

Signatures are those of every backend of the op (see the op's ``__init__``).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..depthwise_conv import reference as conv


def forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Backend forward: (B, n·C, H, W) → (B, n·C, H, W) contiguous, in x's dtype."""
    n = x.shape[1] // weight.shape[0]
    outs: list[torch.Tensor] = []
    for xi in x.chunk(n, dim=1):
        outs.append(torch.relu(conv.forward(xi if not outs else outs[-1] + xi, weight, bias)))
    return torch.cat(outs, dim=1)


def backward(grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend backward from the saved input x and output y: (dx (B, n·C, H, W), dweight (C, 1, K, K),
    dbias (C,)), the weight gradients in weight's dtype."""
    n = x.shape[1] // weight.shape[0]
    xs, ys, dys = x.chunk(n, dim=1), y.chunk(n, dim=1), grad_y.chunk(n, dim=1)
    dxs: list[torch.Tensor] = [torch.empty(0)] * n
    dw = torch.zeros(weight.shape, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                     device=x.device)
    db = torch.zeros(weight.shape[0], dtype=dw.dtype, device=x.device)
    carry: Optional[torch.Tensor] = None
    for i in reversed(range(n)):
        g = dys[i] if carry is None else dys[i] + carry
        g = torch.where(ys[i] > 0, g, torch.zeros_like(g))
        u = xs[i] if i == 0 else ys[i - 1] + xs[i]
        du, dwi, dbi = conv.backward(g, u, weight)
        dxs[i] = du
        dw += dwi.to(dw.dtype)
        db += dbi.to(db.dtype)
        carry = du
    return torch.cat(dxs, dim=1), dw.to(weight.dtype), db.to(weight.dtype)
