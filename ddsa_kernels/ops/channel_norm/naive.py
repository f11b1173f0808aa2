"""Naive channel LayerNorm in plain PyTorch, differentiable by autograd: the oracle and the baseline.

Per batch and pixel, over the C channels of an NCHW map (biased variance)::

    μ = mean_c x,  σ = sqrt(mean_c (x − μ)² + eps)
    subtract_mean=True:   y = (x − μ)/σ · w + b
    subtract_mean=False:  y =  x/σ · w          (σ still from the centred variance)

* :func:`naive_channel_norm` — the formula written directly with reductions over dim 1; the
  oracle every backend is tested against (run it in float64). Shares no code with the backends
  except argument checking.
* :func:`eager_channel_norm` — the authors' way: permute to (B, H·W, C), normalise the last dim,
  permute back, in the input dtype. The benchmarks' baseline and the "eager" backend.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._common import Unfused
from ._common import accumulation_dtype, check_inputs


def _channel_view(t: torch.Tensor, dims: int) -> torch.Tensor:
    """(C,) → (1, C, 1[, 1]) to broadcast against a (B, C, N) or (B, C, H, W) tensor."""
    return t.view(1, -1, *([1] * (dims - 2)))


def naive_channel_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    *,
    subtract_mean: bool = True,
) -> torch.Tensor:
    """Channel LayerNorm of x (B, C, H, W) or (B, C, N) with weight, bias (C,).

    Returns x's shape and dtype; computed in float32 (float64 for float64 inputs).
    """
    check_inputs(x, weight, bias, eps, subtract_mean)
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    mu = xa.mean(dim=1, keepdim=True)
    sigma = ((xa - mu) ** 2).mean(dim=1, keepdim=True).add(eps).sqrt()
    w = _channel_view(weight.to(acc), x.dim())
    if subtract_mean:
        y = (xa - mu) / sigma * w
        if bias is not None:
            y = y + _channel_view(bias.to(acc), x.dim())
    else:
        y = xa / sigma * w
    return y.to(x.dtype)


def eager_channel_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    *,
    subtract_mean: bool = True,
) -> torch.Tensor:
    """The authors' computation: (B, C, H, W) → (B, H·W, C) → LayerNorm over C → back, in x's dtype.

    As their ``to_3d`` / ``WithBias_LayerNorm`` (or ``BiasFree_LayerNorm``) / ``to_4d``.
    """
    shape = x.shape
    batch, channels = shape[0], shape[1]
    x3 = x.reshape(batch, channels, -1).permute(0, 2, 1)  # (B, HW, C)
    mu = x3.mean(-1, keepdim=True)
    sigma = x3.var(-1, keepdim=True, unbiased=False)
    if subtract_mean:
        y3 = (x3 - mu) / torch.sqrt(sigma + eps) * weight
        if bias is not None:
            y3 = y3 + bias
    else:
        y3 = x3 / torch.sqrt(sigma + eps) * weight
    return y3.permute(0, 2, 1).reshape(shape)


EAGER = Unfused(forward=eager_channel_norm)  # the "eager" backend
