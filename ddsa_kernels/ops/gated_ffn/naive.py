"""Naive gated feed-forward (Restormer's GDFN) in plain PyTorch, differentiable by autograd: the oracle and
the baseline.

x (B, C, H, W); u = W_in · x + b_in (B, 2h, H, W); d = the depth-wise K×K convolution of u (zero "same"
padding); y = gelu(d[:, :h]) · d[:, h:] with the exact (erf) GELU; z = W_out · y + b_out (B, C_out, H, W).

* :func:`naive_gated_ffn` / :func:`naive_gated_depthwise` — channel contractions (``einsum``),
  the depth-wise convolution's K² shifted products and ``0.5·a·(1 + erf(a/√2))``; the oracle every
  backend is tested against (run it in float64).
* :func:`eager_gated_ffn` / :func:`eager_gated_depthwise` — the authors' formulation with ``F.conv2d``,
  ``chunk`` and ``F.gelu``: the "eager" backend and the benchmarks' baseline.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .._common import Unfused, naive_pointwise
from ..depthwise_conv.naive import naive_depthwise_conv
from ._common import check_gated_inputs, check_inputs

Tensor = torch.Tensor


def _gate(d: Tensor) -> Tensor:
    a, g = d.chunk(2, dim=1)
    return 0.5 * a * (1 + torch.erf(a * (1 / math.sqrt(2)))) * g


def naive_gated_depthwise(u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor] = None) -> Tensor:
    """(B, 2h, H, W) → gelu(d[:, :h]) · d[:, h:] (B, h, H, W) from plain tensor algebra, in u's dtype."""
    check_gated_inputs(u, w_dw, b_dw)
    return _gate(naive_depthwise_conv(u, w_dw, b_dw))


def naive_gated_ffn(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
                        w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """(B, C, H, W) → (B, C_out, H, W) in x's dtype, from plain tensor algebra."""
    check_inputs(x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    return naive_pointwise(_gate(naive_depthwise_conv(naive_pointwise(x, w_in, b_in), w_dw, b_dw)), w_out, b_out)


def _eager_middle(u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor]) -> Tensor:
    a, g = F.conv2d(u, w_dw, b_dw, padding=w_dw.shape[-1] // 2, groups=w_dw.shape[0]).chunk(2, dim=1)
    return F.gelu(a) * g


def eager_gated_depthwise(u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor] = None) -> Tensor:
    """The middle with torch's depth-wise convolution and ``F.gelu``, plain autograd."""
    check_gated_inputs(u, w_dw, b_dw, same_dtype=False)
    return _eager_middle(u, w_dw, b_dw)


def eager_gated_ffn(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
                    w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """The block as Restormer's ``FeedForward.forward`` computes it, with plain autograd; under autocast x
    and the weights may differ in dtype, as for any ``nn.Conv2d``."""
    check_inputs(x, w_in, b_in, w_dw, b_dw, w_out, b_out, same_dtype=False)
    return F.conv2d(_eager_middle(F.conv2d(x, w_in, b_in), w_dw, b_dw), w_out, b_out)


EAGER = Unfused(forward=eager_gated_ffn, gated_forward=eager_gated_depthwise)  # the "eager" backend
