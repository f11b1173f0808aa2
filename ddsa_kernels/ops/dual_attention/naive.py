"""Naive dual attention in plain PyTorch, differentiable by autograd: the oracle and the baseline.

* :func:`naive_dual_attention` — the exact semantics (ties at the threshold all kept); the
  oracle every backend is tested against (run it in float64). Written the straightforward way on
  purpose — normalised copies, one masked softmax per branch — and shares no code with the fused
  backends except argument checking.
* :func:`eager_dual_attention` — the computation as the authors' code does it, in the input dtype:
  per branch q̂ k̂ᵀ · τ, ``topk`` indices, a scattered 0/1 mask, ``where`` −inf, a softmax, an ``@ v``
  product, then the weighted sum of the branch outputs. The benchmarks' baseline and the "eager"
  backend; not a reference for semantics (with ties at the threshold it keeps exactly k entries,
  as ``torch.topk`` does).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from .._common import Unfused
from ._common import accumulation_dtype, check_inputs


def naive_dual_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    topk: Sequence[Optional[int]],
    eps: float = 1e-12,
) -> torch.Tensor:
    """``out = (Σ_i w_i softmax(mask_i(τ q̂ k̂ᵀ))) v`` for q, k, v of shape (B, H, C, N).

    ``topk[i]`` is None for a dense branch or the number of entries kept per row (every value
    ≥ the k-th largest is kept, so ties at the threshold are all kept). Returns (B, H, C, N) in
    q's dtype; computed in float32 (float64 for float64 inputs).
    """
    temp, keep = check_inputs(q, k, v, temperature, weights, topk, eps)
    acc = accumulation_dtype(q.dtype)
    q_hat = F.normalize(q.to(acc), dim=-1, eps=eps)
    k_hat = F.normalize(k.to(acc), dim=-1, eps=eps)
    scores = (q_hat @ k_hat.transpose(-2, -1)) * temp.to(acc).view(1, -1, 1, 1)
    attn = torch.zeros_like(scores)
    for w, keep_count in zip(weights.to(acc).unbind(0), keep):
        if keep_count == 0:
            probs = torch.softmax(scores, dim=-1)
        else:
            threshold = torch.topk(scores, keep_count, dim=-1).values[..., -1:]
            probs = torch.softmax(scores.masked_fill(scores < threshold, float("-inf")), dim=-1)
        attn = attn + w * probs
    return (attn @ v.to(acc)).to(q.dtype)


def eager_dual_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    topk: Sequence[Optional[int]],
    eps: float = 1e-12,
) -> torch.Tensor:
    """(B, H, C, N) q, k, v -> (B, H, C, N), computed branch by branch in the input dtype."""
    heads = q.shape[1]
    q = F.normalize(q, dim=-1, eps=eps)
    k = F.normalize(k, dim=-1, eps=eps)
    attn = (q @ k.transpose(-2, -1)) * temperature.reshape(1, heads, 1, 1).to(q.dtype)
    out = None
    for i, keep in enumerate(topk):
        if keep is None:
            branch = attn.softmax(dim=-1)
        else:
            index = torch.topk(attn, k=keep, dim=-1, largest=True).indices
            mask = torch.zeros_like(attn).scatter_(-1, index, 1.0)
            branch = torch.where(mask > 0, attn, torch.full_like(attn, float("-inf"))).softmax(dim=-1)
        term = (branch @ v) * weights[i].to(q.dtype)
        out = term if out is None else out + term
    return out


EAGER = Unfused(forward=eager_dual_attention)  # the "eager" backend
