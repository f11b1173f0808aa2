"""Plain-PyTorch dual attention: the exact semantics, differentiable by autograd.

This is the oracle every backend is tested against (run it in float64). It is written the
straightforward way on purpose — normalised copies, one masked softmax per branch — and shares
no code with the fused backends except argument checking.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_inputs


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reference_dual_attention(
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
