"""Depth-wise ReLU chain over channel groups (the middle of IDT-DDSA's SEFN feed-forward block):
registration, autograd and the public function.

x (B, n·C, H, W) holds n groups x_1 .. x_n of C channels; one depth-wise K×K convolution d is shared::

    y_1 = relu(d(x_1)),   y_i = relu(d(y_{i−1} + x_i)),   y = concat(y_1, .., y_n)

Written with torch ops this is n convolutions, n − 1 additions, n ReLUs and a concatenation (and as
many again in the backward); the "cpu" backend runs each (b, c) plane's whole chain in one task and
writes every y_i into its slice of y. On other devices (and for dtypes the kernel does not cover)
``backend="auto"`` picks "eager", the torch ops.

Two custom ops carry the work so that ``torch.compile`` sees one opaque node each way:

* ``ddsa::depthwise_chain_fwd`` → y;
* ``ddsa::depthwise_chain_bwd`` → ``(dx, dweight, dbias)``.

Autograd saves x, y and the weight (no copies; y is usually kept by the next layer anyway).
The backends are listed in ``ddsa_kernels._registry``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import _registry
from .._common import autocast_runs_eager, empty_depthwise_grads
from ._common import check_inputs

_OP = "depthwise_chain"

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::depthwise_chain_fwd", mutates_args=())
def depthwise_chain_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str) -> Tensor:
    return _registry.implementation(_OP, backend).forward(x, weight, bias)


@depthwise_chain_fwd.register_fake
def _(x, weight, bias, backend):
    return x.new_empty(x.shape)


@torch.library.custom_op("ddsa::depthwise_chain_bwd", mutates_args=())
def depthwise_chain_bwd(grad_y: Tensor, x: Tensor, y: Tensor, weight: Tensor,
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    dx, dw, db = _registry.implementation(_OP, backend).backward(grad_y.to(x.dtype), x, y, weight)
    return dx, dw, db


@depthwise_chain_bwd.register_fake
def _(grad_y, x, y, weight, backend):
    return empty_depthwise_grads(x, weight)


def _setup_context(ctx, inputs, output):
    x, weight, bias, backend = inputs
    ctx.save_for_backward(x, output, weight)
    ctx.has_bias, ctx.backend = bias is not None, backend


def _backward(ctx, grad_y):
    x, y, weight = ctx.saved_tensors
    dx, dw, db = depthwise_chain_bwd(grad_y, x, y, weight, ctx.backend)
    return dx, dw, (db if ctx.has_bias else None), None


depthwise_chain_fwd.register_autograd(_backward, setup_context=_setup_context)


def depthwise_chain(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, backend: str = "auto") -> Tensor:
    """``y_1 = relu(d(x_1))``, ``y_i = relu(d(y_{i−1} + x_i))`` over the n channel groups of x, concatenated.

    d is the depth-wise convolution with ``weight`` and ``bias`` (zero padding K // 2, stride 1), the
    same for every group. The same result as
    ``torch.cat([y_1, .., y_n], 1)`` computed with ``F.conv2d(..., groups=C)`` and ``F.relu``.

    Args:
        x: (B, n·C, H, W), any strides, float16/bfloat16/float32/float64.
        weight: (C, 1, K, K) with K odd, 1 ≤ K ≤ 7, x's dtype and device. bias: (C,) or None.
        backend: "auto" (the "cpu" kernel for float32/float64 CPU tensors outside autocast, else
            "eager"), or a name listed by ``ddsa_kernels.build_info("depthwise_chain")``: "cpu",
            "reference" (plain PyTorch, any device), "eager" (torch ops, as the authors write it).

    Returns:
        (B, n·C, H, W) in x's dtype; differentiable w.r.t. x, weight and bias.
    """
    if autocast_runs_eager(backend, x):
        return _registry.implementation(_OP, "eager").forward(x, weight, bias)
    check_inputs(x, weight, bias)
    name = _registry.resolve_backend(backend, x.device, x.dtype, channels=weight.shape[0], op=_OP)
    if not _registry.is_fused(name, op=_OP):
        return _registry.implementation(_OP, name).forward(x, weight, bias)
    return depthwise_chain_fwd(x, weight, bias, name)


__all__ = ["depthwise_chain"]
