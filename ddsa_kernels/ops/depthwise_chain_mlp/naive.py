"""Naive 1×1 → depth-wise ReLU chain → 1×1 block in plain PyTorch, differentiable by autograd: the oracle
and the baseline.

x (B, C, H, W); u = W_in · x + b_in, (B, n·C_h, H, W) in n groups of C_h channels; y = the depth-wise
ReLU chain of u (:mod:`ddsa_kernels.ops.depthwise_chain`); z = W_out · y + b_out, (B, C_out, H, W).
With n = 3, K = 3 and C_out = C this is IDT-DDSA's feed-forward block (SEFN) without its spatial gate.

* :func:`naive_depthwise_chain_mlp` — the 1×1 convolutions as channel contractions (``einsum``)
  around the chain's oracle; what the fused kernel is tested against (run it in float64).
* :func:`eager_depthwise_chain_mlp` — the authors' formulation: ``F.conv2d`` 1×1, the chain's torch ops,
  ``F.conv2d`` 1×1; the "eager" backend and the benchmarks' baseline.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._common import Unfused, naive_pointwise
from ..depthwise_chain.naive import eager_depthwise_chain, naive_depthwise_chain
from ._common import check_inputs

Tensor = torch.Tensor


def naive_depthwise_chain_mlp(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor,
                                  b_dw: Optional[Tensor], w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """(B, C, H, W) → (B, C_out, H, W) in x's dtype, from plain tensor algebra."""
    check_inputs(x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    return naive_pointwise(naive_depthwise_chain(naive_pointwise(x, w_in, b_in), w_dw, b_dw), w_out, b_out)


def eager_depthwise_chain_mlp(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor,
                              b_dw: Optional[Tensor], w_out: Tensor, b_out: Optional[Tensor] = None) -> Tensor:
    """The same with torch's convolutions and plain autograd; under autocast x and the weights may
    differ in dtype, as for any ``nn.Conv2d``."""
    check_inputs(x, w_in, b_in, w_dw, b_dw, w_out, b_out, same_dtype=False)
    return F.conv2d(eager_depthwise_chain(F.conv2d(x, w_in, b_in), w_dw, b_dw), w_out, b_out)


EAGER = Unfused(forward=eager_depthwise_chain_mlp)  # the "eager" backend
