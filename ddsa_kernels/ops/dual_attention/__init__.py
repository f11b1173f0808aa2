"""Dual (dense + top-k) transposed self-attention: registration, autograd and the public function.

Per batch b and head h, with q, k, v of shape (C, N) (C channels per head, N = H·W pixels)::

    q̂ = q / max(‖q‖₂, eps)  row-wise over N (likewise k̂), as F.normalize
    S = τ_h · q̂ k̂ᵀ                                   (C×C)
    A_i = softmax(mask_i(S)), mask_i keeps in each row every score ≥ its k_i-th largest
          (−inf elsewhere, ties at the threshold all kept; a dense branch keeps all)
    out = (Σ_i w_i A_i) v                              (C×N)

DDSA uses a dense and a top-⌊7C/10⌋ branch, DRSformer four top-k branches, Restormer's MDTA one
dense branch. Because A is only C×C, a fused implementation reads q, k once (Gram sweep: q kᵀ
and the row norms), does the C×C epilogue, and reads v once to write out (output sweep); the
backward has the same two-sweep shape. The backends that do so are listed in
``ddsa_kernels._registry``; this file is the one autograd path they all share.

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

from ... import _registry
from ._common import accumulation_dtype, check_inputs

_OP = "dual_attention"

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::dual_attention_fwd", mutates_args=())
def dual_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, temperature: Tensor, weights: Tensor, keep: list[int], eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = accumulation_dtype(q.dtype)
    impl = _registry.implementation(_OP, backend)
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
    impl = _registry.implementation(_OP, backend)
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
        backend: "auto" (the fastest available for the tensors), or a name listed by
            :func:`ddsa_kernels.build_info`: "reference", "triton", "cpu", "cuda", or "eager" —
            the unfused authors'-style computation with plain autograd (a baseline).

    Returns:
        (B, H, C, N) in q's dtype; differentiable w.r.t. q, k, v, temperature and weights.
    """
    temp, keep = check_inputs(q, k, v, temperature, weights, topk, eps)
    name = _registry.resolve_backend(backend, q.device, q.dtype, channels=q.shape[2], op=_OP)
    if not _registry.is_fused(name, op=_OP):
        return _registry.implementation(_OP, name).forward(q, k, v, temp, weights, topk, eps)
    return dual_attention_fwd(q, k, v, temp, weights, list(keep), float(eps), name)[0]


__all__ = ["dual_attention"]
