"""Naive depth-wise convolution in plain PyTorch, differentiable by autograd: the oracle and the baseline.

For x (B, C, H, W), weight (C, 1, K, K) with K odd, R = K // 2, dilation D ≥ 1, zero padding D·R,
stride 1::

    y[b, c, h, w] = bias[c] + Σ_{i, j < K} weight[c, 0, i, j] · x[b, c, h + D(i − R), w + D(j − R)]

* :func:`naive_depthwise_conv` — that sum written out over K² shifted views of the zero-padded
  input; the oracle every backend is tested against (run it in float64). Shares no code with torch's
  convolution or with the backends.
* :func:`eager_depthwise_conv` — ``torch.nn.functional.conv2d`` with ``groups=C``: what an
  ``nn.Conv2d`` does, the benchmarks' baseline and the "eager" backend.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._common import Unfused
from ._common import check_inputs


def naive_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                             dilation: int = 1) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H, W): the K² shifted products summed, in x's dtype."""
    k = check_inputs(x, weight, bias, dilation)
    pad = dilation * (k // 2)
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    y = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            top, left = i * dilation, j * dilation
            y = y + weight[:, 0, i, j].view(1, -1, 1, 1) * padded[:, :, top:top + height, left:left + width]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def eager_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                         dilation: int = 1) -> torch.Tensor:
    """torch's own convolution (``F.conv2d`` with ``groups=C``, zero padding dilation·(K // 2)), plain autograd."""
    k = weight.shape[-1]
    return F.conv2d(x, weight, bias, stride=1, padding=dilation * (k // 2), dilation=dilation, groups=x.shape[1])


EAGER = Unfused(forward=eager_depthwise_conv)  # the "eager" backend
