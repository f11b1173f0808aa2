"""Naive depth-wise ReLU chain in plain PyTorch, differentiable by autograd: the oracle and the baseline.

x (B, n·C, H, W) holds n channel groups x_1 .. x_n of C channels each; one depth-wise convolution d
(weight (C, 1, K, K), bias (C,) or None, zero padding K // 2) is shared along the chain::

    y_1 = relu(d(x_1)),   y_i = relu(d(y_{i−1} + x_i)),   y = concat(y_1, .., y_n)  (B, n·C, H, W)

With n = 3 and K = 3 this is the middle of IDT-DDSA's feed-forward block (SEFN).

* :func:`naive_depthwise_chain` — the chain over the depth-wise convolution's oracle
  (:func:`~ddsa_kernels.ops.depthwise_conv.naive.naive_depthwise_conv`, K² shifted products); what
  every backend is tested against (run it in float64).
* :func:`eager_depthwise_chain` — the authors' formulation with ``F.conv2d``, ``relu`` and ``cat``:
  the "eager" backend and the benchmarks' baseline.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F

from .._common import Unfused
from ..depthwise_conv.naive import eager_depthwise_conv, naive_depthwise_conv
from ._common import check_inputs

Tensor = torch.Tensor


def _chain(x: Tensor, weight: Tensor, bias: Optional[Tensor], conv: Callable[..., Tensor],
           same_dtype: bool = True) -> Tensor:
    n, _ = check_inputs(x, weight, bias, same_dtype)
    outs: list[Tensor] = []
    for xi in x.chunk(n, dim=1):
        outs.append(F.relu(conv(xi if not outs else outs[-1] + xi, weight, bias)))
    return torch.cat(outs, dim=1)


def naive_depthwise_chain(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """(B, n·C, H, W) → (B, n·C, H, W) over the shifted-sum depth-wise convolution, in x's dtype."""
    return _chain(x, weight, bias, naive_depthwise_conv)


def eager_depthwise_chain(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """The same with torch's convolution (``F.conv2d``, ``groups=C``) and plain autograd; under autocast
    x and the weight may differ in dtype, as for any ``nn.Conv2d``."""
    return _chain(x, weight, bias, eager_depthwise_conv, same_dtype=False)


EAGER = Unfused(forward=eager_depthwise_chain)  # the "eager" backend
