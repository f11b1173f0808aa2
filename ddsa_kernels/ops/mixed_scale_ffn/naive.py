"""DRSformer's mixed-scale feed-forward (MSFN) in plain PyTorch, differentiable by autograd: the oracle
and the baseline.

x (B, C, H, W), h hidden channels, d_K a depth-wise K×K convolution with zero padding K // 2::

    u = W_in · x + b_in                                   (B, 2h, H, W)
    s3 = relu(d(u; w3, b3)),  s5 = relu(d(u; w5, b5))     (B, 2h, H, W) each
    X1 = cat(s3[:h], s5[:h]),  X2 = cat(s3[h:], s5[h:])   (B, 2h, H, W) each
    p = relu(g(X1; w3_1, b3_1)),  q = relu(g(X2; w5_1, b5_1))
    z = W_out · cat(p, q) + b_out                         (B, C_out, H, W)

g is the grouped convolution with h groups of two inputs: output j reads X[2j] and X[2j + 1].

* :func:`naive_mixed_scale_ffn` — the 1×1 convolutions as channel contractions (``einsum``), the
  K×K ones as sums of K² shifted products (the depth-wise op's oracle); the oracle every backend is
  tested against (run it in float64).
* :func:`eager_mixed_scale_ffn` — the authors' formulation (``F.conv2d``, ``chunk``, ``cat``, ReLU);
  the "eager" backend and the benchmarks' baseline.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._common import Unfused, naive_pointwise
from ..depthwise_conv.naive import naive_depthwise_conv
from ._common import check_inputs

Tensor = torch.Tensor


def _pairs(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Output j = Σ_g weight[j, g] ⊛ x[2j + g] (+ bias[j]): h groups of two input channels."""
    out = naive_depthwise_conv(x[:, 0::2], weight[:, 0:1]) + naive_depthwise_conv(x[:, 1::2], weight[:, 1:2])
    return out if bias is None else out + bias[:, None, None]


def naive_mixed_scale_ffn(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w3: Tensor, b3: Optional[Tensor],
                              w5: Tensor, b5: Optional[Tensor], w3_1: Tensor, b3_1: Optional[Tensor], w5_1: Tensor,
                              b5_1: Optional[Tensor], w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """(B, C, H, W) → (B, C_out, H, W) in x's dtype, from plain tensor algebra."""
    h = check_inputs(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out)
    u = naive_pointwise(x, w_in, b_in)
    s3 = torch.relu(naive_depthwise_conv(u, w3, b3))
    s5 = torch.relu(naive_depthwise_conv(u, w5, b5))
    p = torch.relu(_pairs(torch.cat([s3[:, :h], s5[:, :h]], 1), w3_1, b3_1))
    q = torch.relu(_pairs(torch.cat([s3[:, h:], s5[:, h:]], 1), w5_1, b5_1))
    return naive_pointwise(torch.cat([p, q], 1), w_out, b_out)


def eager_mixed_scale_middle(u: Tensor, w3: Tensor, b3: Optional[Tensor], w5: Tensor, b5: Optional[Tensor],
                             w3_1: Tensor, b3_1: Optional[Tensor], w5_1: Tensor, b5_1: Optional[Tensor]) -> Tensor:
    """u (B, 2h, H, W) → cat(p, q) (B, 2h, H, W) with torch's convolutions, as the authors write it."""
    h = u.shape[1] // 2
    x1_3, x2_3 = F.relu(F.conv2d(u, w3, b3, padding=w3.shape[-1] // 2, groups=2 * h)).chunk(2, dim=1)
    x1_5, x2_5 = F.relu(F.conv2d(u, w5, b5, padding=w5.shape[-1] // 2, groups=2 * h)).chunk(2, dim=1)
    p = F.relu(F.conv2d(torch.cat([x1_3, x1_5], 1), w3_1, b3_1, padding=w3_1.shape[-1] // 2, groups=h))
    q = F.relu(F.conv2d(torch.cat([x2_3, x2_5], 1), w5_1, b5_1, padding=w5_1.shape[-1] // 2, groups=h))
    return torch.cat([p, q], dim=1)


def eager_mixed_scale_ffn(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w3: Tensor, b3: Optional[Tensor],
                          w5: Tensor, b5: Optional[Tensor], w3_1: Tensor, b3_1: Optional[Tensor], w5_1: Tensor,
                          b5_1: Optional[Tensor], w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """The same with torch's convolutions and plain autograd; under autocast x and the weights may differ
    in dtype, as for any ``nn.Conv2d``."""
    check_inputs(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out, same_dtype=False)
    u = F.conv2d(x, w_in, b_in)
    return F.conv2d(eager_mixed_scale_middle(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1), w_out, b_out)


EAGER = Unfused(forward=eager_mixed_scale_ffn, middle_forward=eager_mixed_scale_middle)  # the "eager" backend
