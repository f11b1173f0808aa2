"""The unfused computation as the authors' code does it, for benchmarks and the model's "eager" mode.

Per branch: q̂ k̂ᵀ · τ, ``topk`` indices, a scattered 0/1 mask, ``where`` −inf, a softmax, an
``@ v`` product; then the weighted sum of the branch outputs. Plain autograd, no custom op:
this is the baseline the fused backends are measured against, not a reference for semantics
(with ties at the threshold it keeps exactly k entries, as ``torch.topk`` does).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F


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
