"""The public op: ``torch.library`` registration, autograd and the ``dual_attention`` function.

Two custom ops carry the work so that ``torch.compile`` sees one opaque node each way:

* ``ddsa::dual_attention_fwd`` → ``(out, probs, gram, norms)``; only ``out`` is differentiable,
  the other three are the O(B·H·C²) statistics autograd saves for the backward.
* ``ddsa::dual_attention_bwd`` → ``(dq, dk, dv, d_temperature, d_weights)``.

Autograd saves q, k, v (the caller's tensors, no copies), temperature, weights and the
statistics: never a C×N intermediate.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from ._checks import check_inputs
from .backends import get_backend, resolve_backend
from .eager import eager_dual_attention
from .reference import accumulation_dtype

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::dual_attention_fwd", mutates_args=())
def dual_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, temperature: Tensor, weights: Tensor, keep: list[int], eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = accumulation_dtype(q.dtype)
    impl = get_backend(backend)
    out, probs, gram, norms = impl.forward(q, k, v, temperature.to(acc), weights.to(acc), tuple(keep), eps)
    return out, probs, gram, norms


@dual_attention_fwd.register_fake
def _(q, k, v, temperature, weights, keep, eps, backend):
    batch, heads, channels, pixels = q.shape
    acc = accumulation_dtype(q.dtype)
    return (
        q.new_empty(q.shape),
        q.new_empty((batch, heads, len(keep), channels, channels), dtype=acc),
        q.new_empty((batch, heads, channels, channels), dtype=acc),
        q.new_empty((batch, heads, 2, channels), dtype=acc),
    )


@torch.library.custom_op("ddsa::dual_attention_bwd", mutates_args=())
def dual_attention_bwd(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    temperature: Tensor,
    weights: Tensor,
    probs: Tensor,
    gram: Tensor,
    norms: Tensor,
    keep: list[int],
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    acc = probs.dtype
    impl = get_backend(backend)
    dq, dk, dv, d_temp, d_w = impl.backward(
        grad_out.to(q.dtype), q, k, v, temperature.to(acc), weights.to(acc), probs, gram, norms, tuple(keep), eps
    )
    return dq, dk, dv, d_temp.to(temperature.dtype), d_w.to(weights.dtype)


@dual_attention_bwd.register_fake
def _(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps, backend):
    return (
        q.new_empty(q.shape),
        q.new_empty(q.shape),
        q.new_empty(q.shape),
        temperature.new_empty(temperature.shape),
        weights.new_empty(weights.shape),
    )


def _setup_context(ctx, inputs, output):
    q, k, v, temperature, weights, keep, eps, backend = inputs
    _, probs, gram, norms = output
    ctx.save_for_backward(q, k, v, temperature, weights, probs, gram, norms)
    ctx.keep, ctx.eps, ctx.backend = keep, eps, backend
    ctx.mark_non_differentiable(probs, gram, norms)


def _backward(ctx, grad_out, _g_probs, _g_gram, _g_norms):
    q, k, v, temperature, weights, probs, gram, norms = ctx.saved_tensors
    dq, dk, dv, d_temp, d_w = dual_attention_bwd(
        grad_out, q, k, v, temperature, weights, probs, gram, norms, ctx.keep, ctx.eps, ctx.backend
    )
    return dq, dk, dv, d_temp, d_w, None, None, None


dual_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def dual_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    temperature: Tensor,
    weights: Tensor,
    topk: Sequence[Optional[int]],
    *,
    eps: float = 1e-12,
    backend: str = "auto",
) -> Tensor:
    """Fused dual (dense + top-k) transposed self-attention.

    ``out = (Σ_i w_i softmax(mask_i(τ_h q̂ k̂ᵀ))) v`` per batch and head, where q̂, k̂ are q, k
    L2-normalised over pixels (``F.normalize`` with ``eps``) and ``mask_i`` keeps, in each row,
    the values ≥ the ``topk[i]``-th largest (−inf elsewhere; ``None`` = dense branch).

    Args:
        q, k, v: (B, H, C, N) — C channels per head, N pixels; any strides; fp16/bf16/fp32
            (float64 on the reference backend).
        temperature: (H,) or (H, 1, 1); weights: (n_branches,), one per ``topk`` entry.
        topk: one entry per branch, ``None`` or a keep-count 1 ≤ k ≤ C.
        backend: "auto" (fastest for the device), one of :func:`available_backends`, or
            "eager" — the unfused authors'-style computation with plain autograd (a baseline).

    Returns:
        (B, H, C, N) in q's dtype; differentiable w.r.t. q, k, v, temperature and weights.
    """
    temp, keep = check_inputs(q, k, v, temperature, weights, topk, eps)
    if not isinstance(backend, str):
        raise ValueError(f"backend must be a string, got {backend!r}")
    if backend == "eager":
        return eager_dual_attention(q, k, v, temp, weights, topk, eps)
    name = resolve_backend(backend, q.device, q.dtype)
    out = dual_attention_fwd(q, k, v, temp, weights, list(keep), float(eps), name)[0]
    return out
