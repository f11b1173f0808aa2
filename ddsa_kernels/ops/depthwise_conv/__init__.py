"""Depth-wise 2-D convolution (odd K×K kernel, stride 1, dilation d, zero padding d·(K // 2)) of NCHW
maps: registration, autograd and the public function.

These are the 3×3 (and DRSformer's 5×5) depth-wise convolutions of every Restormer-family block, and the
dilated (d = 2) 3/5/7 ones of DRSformer's MEFC subnet.
torch runs them on CPU through oneDNN, which reorders an NCHW map into a blocked layout and back on
each call; the "cpu" backend works on the NCHW planes directly. On other devices (and for dtypes the
kernel does not cover) ``backend="auto"`` picks "eager", torch's own convolution.

Two custom ops carry the work so that ``torch.compile`` sees one opaque node each way:

* ``ddsa::depthwise_conv_fwd(x, weight, bias, backend, dilation=1)`` → y;
* ``ddsa::depthwise_conv_bwd(grad_y, x, weight, backend, dilation=1)`` → ``(dx, dweight, dbias)``.

Autograd saves x and the weight (no copies). The backends are listed in ``ddsa_kernels._registry``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import _registry
from .._common import autocast_runs_eager, empty_depthwise_grads, needs_grad
from ._common import check_dilation, check_inputs

_OP = "depthwise_conv"

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::depthwise_conv_fwd", mutates_args=())
def depthwise_conv_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str, dilation: int = 1) -> Tensor:
    return _registry.implementation(_OP, backend).forward(x, weight, bias, dilation)


@depthwise_conv_fwd.register_fake
def _(x, weight, bias, backend, dilation=1):
    return x.new_empty(x.shape)


@torch.library.custom_op("ddsa::depthwise_conv_bwd", mutates_args=())
def depthwise_conv_bwd(grad_y: Tensor, x: Tensor, weight: Tensor, backend: str,
                       dilation: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    dx, dw, db = _registry.implementation(_OP, backend).backward(grad_y.to(x.dtype), x, weight, dilation)
    return dx, dw, db


@depthwise_conv_bwd.register_fake
def _(grad_y, x, weight, backend, dilation=1):
    return empty_depthwise_grads(x, weight)


def _setup_context(ctx, inputs, output):
    x, weight, bias, backend, dilation = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.backend, ctx.dilation = bias is not None, backend, dilation


def _backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    dx, dw, db = depthwise_conv_bwd(grad_y, x, weight, ctx.backend, ctx.dilation)
    return dx, dw, (db if ctx.has_bias else None), None, None


depthwise_conv_fwd.register_autograd(_backward, setup_context=_setup_context)


def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, dilation: int = 1,
                   backend: str = "auto") -> Tensor:
    """Depth-wise convolution: ``y[b, c] = bias[c] + weight[c, 0] ⋆ x[b, c]`` with the kernel's taps
    ``dilation`` pixels apart and zero padding dilation·(K // 2) (output size = input size).

    The same result as ``F.conv2d(x, weight, bias, padding=dilation * (K // 2), dilation=dilation, groups=C)``.

    Args:
        x: (B, C, H, W), any strides, float16/bfloat16/float32/float64.
        weight: (C, 1, K, K) with K odd, 1 ≤ K ≤ 7, x's dtype and device. bias: (C,) or None.
        dilation: an int ≥ 1 (1: the plain convolution).
        backend: "auto" (the "cpu" kernel for float32/float64 CPU tensors outside autocast, except dilated
            5×5 / 7×7 kernels when no gradient is needed; else "eager"), or a name listed by ``ddsa_kernels.build_info("depthwise_conv")``: "cpu",
            "reference" (plain PyTorch, any device), "eager" (torch's convolution).

    Returns:
        (B, C, H, W) in x's dtype; differentiable w.r.t. x, weight and bias.
    """
    if autocast_runs_eager(backend, x):
        return _registry.implementation(_OP, "eager").forward(x, weight, bias, dilation=check_dilation(dilation))
    check_inputs(x, weight, bias, dilation)
    name = _registry.resolve_backend(backend, x.device, x.dtype, channels=x.shape[1], op=_OP)
    if (backend == "auto" and name == "cpu" and dilation > 1 and weight.shape[-1] >= 5
            and not needs_grad(x, weight, bias)):
        # the dilated 5×5 / 7×7 forward alone is slower than torch's (0.35–0.95×, depthwise_conv.json); with the
        # backward it is 8–10× faster
        name = "eager"
    if not _registry.is_fused(name, op=_OP):
        return _registry.implementation(_OP, name).forward(x, weight, bias, dilation=dilation)
    return depthwise_conv_fwd(x, weight, bias, name, dilation)


__all__ = ["depthwise_conv"]
