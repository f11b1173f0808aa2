"""The "reference" backend: plain PyTorch tensor algebra on any device, float64 capable, differentiated
by autograd (an unfused backend, no custom op).

The 1×1 convolutions are matrix products over the flattened pixels. Each pair of K×K stages runs as one
depth-wise convolution (the depth-wise op's reference forward): the smaller kernel is zero-padded to the
larger one's size, which leaves its convolution unchanged, and the weights are stacked along the
channels. A grouped convolution with two inputs per output is a depth-wise one over the inputs (its
(h, 2, K, K) weight read as (2h, 1, K, K)) followed by the sum of each pair. Signatures are those of the
op's public functions, without ``backend``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._common import matmul_pointwise
from ..depthwise_conv import reference as conv

Tensor = torch.Tensor


def _stack(weights: tuple[Tensor, Tensor], biases: tuple[Optional[Tensor], Optional[Tensor]]) -> tuple[Tensor, Tensor]:
    """Both weights at the larger kernel size (centred zero padding), concatenated along dim 0, and the
    biases (zeros for None) likewise."""
    k = max(w.shape[-1] for w in weights)
    padded = [F.pad(w, [(k - w.shape[-1]) // 2] * 4) for w in weights]
    bias = [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases)]
    return torch.cat(padded), torch.cat(bias)


def middle_forward(u: Tensor, w3: Tensor, b3: Optional[Tensor], w5: Tensor, b5: Optional[Tensor], w3_1: Tensor,
                   b3_1: Optional[Tensor], w5_1: Tensor, b5_1: Optional[Tensor]) -> Tensor:
    """u (B, 2h, H, W) → cat(p, q) (B, 2h, H, W)."""
    batch, two_h, height, width = u.shape
    h = two_h // 2
    weight, bias = _stack((w3, w5), (b3, b5))
    s = torch.relu(conv.forward(torch.cat([u, u], 1), weight, bias))  # (B, 4h): s3, then s5
    s3, s5 = s[:, :two_h], s[:, two_h:]
    pairs_in = torch.cat([s3[:, :h], s5[:, :h], s3[:, h:], s5[:, h:]], 1)  # X1, then X2
    weight, bias = _stack((w3_1, w5_1), (b3_1, b5_1))  # (2h, 2, K, K): p's weights, then q's
    taps = conv.forward(pairs_in, weight.reshape(2 * two_h, 1, *weight.shape[2:]), None)
    return torch.relu(taps.view(batch, two_h, 2, height, width).sum(2) + bias.view(1, -1, 1, 1))


def forward(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w3: Tensor, b3: Optional[Tensor], w5: Tensor,
            b5: Optional[Tensor], w3_1: Tensor, b3_1: Optional[Tensor], w5_1: Tensor, b5_1: Optional[Tensor],
            w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """(B, C, H, W) → (B, C_out, H, W) in x's dtype."""
    m = middle_forward(matmul_pointwise(x, w_in, b_in), w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)
    return matmul_pointwise(m, w_out, b_out)
