"""Float64 oracles of the convolutional ops written here from torch's own primitives (F.conv2d,
F.layer_norm), independent of the package's reference implementations."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def depthwise_conv_oracle(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    """(B, C, H, W) ⊛ (C, 1, K, K) + b with zero padding K // 2, by F.conv2d(groups=C)."""
    return F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=x.shape[1])


def chain_oracle(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    """y_1 = relu(d(x_1)), y_i = relu(d(y_{i−1} + x_i)), concatenated; x (B, n·C, H, W), w (C, 1, K, K)."""
    c = w.shape[0]
    outs: list[Tensor] = []
    for i in range(x.shape[1] // c):
        xi = x[:, i * c:(i + 1) * c]
        outs.append(torch.relu(depthwise_conv_oracle(xi if i == 0 else outs[-1] + xi, w, b)))
    return torch.cat(outs, dim=1)


def chain_mlp_oracle(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
                     w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """1×1 convolution, the chain, 1×1 convolution: (B, C, H, W) → (B, C_out, H, W)."""
    return F.conv2d(chain_oracle(F.conv2d(x, w_in, b_in), w_dw, b_dw), w_out, b_out)


def channel_norm_oracle(x: Tensor, w: Tensor, b: Optional[Tensor], eps: float = 1e-5, *,
                        subtract_mean: bool = True) -> Tensor:
    """LayerNorm over the channels of (B, C, H, W) or (B, C, N). With the mean: F.layer_norm on the
    channels-last view; without (Restormer's BiasFree): x / sqrt(biased variance + eps) · w."""
    last = x.movedim(1, -1)
    if subtract_mean:
        y = F.layer_norm(last, (x.shape[1],), w, b, eps)
    else:
        y = last / torch.sqrt(last.var(dim=-1, unbiased=False, keepdim=True) + eps) * w
    return y.movedim(-1, 1)
