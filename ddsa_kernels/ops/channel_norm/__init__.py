"""Channel LayerNorm of NCHW feature maps: registration, autograd and the public function.

Per batch b and pixel p, over the C channels, directly in NCHW (a pixel's channels sit at
stride H·W; no permuted copy)::

    μ = mean_c x,   σ = sqrt(mean_c (x − μ)² + eps)         (biased variance)
    subtract_mean=True  (the authors' WithBias_LayerNorm):  y = (x − μ)/σ · w + b
    subtract_mean=False (the authors' BiasFree_LayerNorm):  y =  x/σ · w

Two custom ops carry the work so that ``torch.compile`` sees one opaque node each way:

* ``ddsa::channel_norm_fwd`` → ``(y, mean, rstd)``; only ``y`` is differentiable, ``mean`` and
  ``rstd`` = 1/σ (B, H, W) are the per-pixel statistics autograd saves for the backward.
* ``ddsa::channel_norm_bwd`` → ``(dx, dw, db)``.

Autograd saves x (the caller's tensor, no copy), weight and the O(B·H·W) statistics, never x̂.
The backends are listed in ``ddsa_kernels._registry``; this file is the one autograd path they share.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import _registry
from ._common import accumulation_dtype, check_inputs

_OP = "channel_norm"

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::channel_norm_fwd", mutates_args=())
def channel_norm_fwd(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], eps: float, subtract_mean: bool, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    acc = accumulation_dtype(x.dtype)
    impl = _registry.implementation(_OP, backend)
    b = None if bias is None else bias.to(acc)
    y, mean, rstd = impl.forward(x, weight.to(acc), b, eps, subtract_mean)
    return y, mean, rstd


@channel_norm_fwd.register_fake
def _(x, weight, bias, eps, subtract_mean, backend):
    batch, _, height, width = x.shape
    acc = accumulation_dtype(x.dtype)
    stats = (batch, height, width)
    return x.new_empty(x.shape), x.new_empty(stats, dtype=acc), x.new_empty(stats, dtype=acc)


@torch.library.custom_op("ddsa::channel_norm_bwd", mutates_args=())
def channel_norm_bwd(
    grad_y: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, subtract_mean: bool, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    acc = mean.dtype
    impl = _registry.implementation(_OP, backend)
    dx, dw, db = impl.backward(grad_y.to(x.dtype), x, weight.to(acc), mean, rstd, subtract_mean)
    return dx, dw.to(weight.dtype), db.to(weight.dtype)


@channel_norm_bwd.register_fake
def _(grad_y, x, weight, mean, rstd, subtract_mean, backend):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape)


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, subtract_mean, backend = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.has_bias, ctx.subtract_mean, ctx.backend = bias is not None, subtract_mean, backend
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, grad_y, _g_mean, _g_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw, db = channel_norm_bwd(grad_y, x, weight, mean, rstd, ctx.subtract_mean, ctx.backend)
    return dx, dw, (db if ctx.has_bias else None), None, None, None


channel_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def channel_norm(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    *,
    subtract_mean: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Fused LayerNorm over the channels of an NCHW map, per batch and pixel.

    ``y = (x − μ)/σ · w + b`` (``subtract_mean=True``, ``b`` optional) or ``y = x/σ · w``
    (``subtract_mean=False``), with μ and σ² = mean_c (x − μ)² + eps over the C channels of
    each pixel (biased variance, as the authors' WithBias/BiasFree LayerNorm).

    Args:
        x: (B, C, H, W) or (B, C, N); any strides; fp16/bf16/fp32 (float64 on the reference and
            cpu backends). Statistics accumulate in fp32 (float64 for float64).
        weight: (C,); bias: (C,) or None (must be None with ``subtract_mean=False``); float
            tensors of one dtype, on x's device. Their gradients come back in their dtype.
        eps: added to the variance, > 0.
        backend: "auto" (the fastest available for the tensors), or a name listed by
            ``ddsa_kernels.build_info("channel_norm")``: "reference", "triton", "cpu", "cuda",
            or "eager" — the authors' permute-and-normalise computation with plain autograd.

    Returns:
        x's shape and dtype (contiguous); differentiable w.r.t. x, weight and bias.
    """
    check_inputs(x, weight, bias, eps, subtract_mean)
    name = _registry.resolve_backend(backend, x.device, x.dtype, channels=x.shape[1], op=_OP)
    if not _registry.is_fused(name, op=_OP):
        return _registry.implementation(_OP, name).forward(x, weight, bias, eps, subtract_mean=subtract_mean)
    if x.dim() == 3:
        return channel_norm_fwd(x.unsqueeze(-1), weight, bias, float(eps), subtract_mean, name)[0].squeeze(-1)
    return channel_norm_fwd(x, weight, bias, float(eps), subtract_mean, name)[0]


__all__ = ["channel_norm"]
