"""The C×C epilogues of the fused op, in PyTorch (batched over (B, H)).

Backends that implement only the two N-sweeps use these; fused backends implement the same
math in their own kernels and are tested against the reference. Shapes: ``qk`` and ``gram``
(B, H, C, C); ``norms`` (B, H, 2, C) holding ‖q_r‖ and ‖k_r‖; ``probs`` (B, H, n_branches, C, C).
All in the accumulation dtype (float32, or float64 for float64 inputs).
"""
from __future__ import annotations

import torch


def branch_probabilities(scores: torch.Tensor, keep: tuple[int, ...]) -> torch.Tensor:
    """Softmax of each branch's masked scores: (..., C, C) -> (..., n_branches, C, C)."""
    probs = []
    for keep_count in keep:
        if keep_count == 0 or keep_count == scores.shape[-1]:
            probs.append(torch.softmax(scores, dim=-1))
        else:
            threshold = torch.topk(scores, keep_count, dim=-1).values[..., -1:]
            probs.append(torch.softmax(scores.masked_fill(scores < threshold, float("-inf")), dim=-1))
    return torch.stack(probs, dim=-3)


def forward_epilogue(
    qk: torch.Tensor,
    sq_norm_q: torch.Tensor,
    sq_norm_k: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    keep: tuple[int, ...],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the raw Gram ``q kᵀ`` and squared row norms to the combined attention.

    Returns ``(attn, probs, gram, norms)``: attn (B, H, C, C) = Σ w_i A_i; probs the A_i;
    gram = q̂ k̂ᵀ; norms (B, H, 2, C) = (‖q‖, ‖k‖) unclamped.
    """
    norm_q = sq_norm_q.sqrt()
    norm_k = sq_norm_k.sqrt()
    gram = qk / (norm_q.clamp_min(eps).unsqueeze(-1) * norm_k.clamp_min(eps).unsqueeze(-2))
    scores = gram * temperature.view(1, -1, 1, 1)
    probs = branch_probabilities(scores, keep)
    attn = (probs * weights.view(1, 1, -1, 1, 1)).sum(dim=2)
    return attn, probs, gram, torch.stack((norm_q, norm_k), dim=2)


def backward_epilogue(
    grad_attn: torch.Tensor,
    probs: torch.Tensor,
    gram: torch.Tensor,
    norms: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``dA = dO vᵀ`` to what the final sweep needs (DESIGN §2).

    Returns ``(P, scale_q, scale_k, d_temperature (H,), d_weights (n_branches,))`` such that
    ``dq = P k − scale_q ⊙ q`` and ``dk = Pᵀ q − scale_k ⊙ k`` (row-wise scales, (B, H, C)).
    """
    dA = grad_attn.unsqueeze(2)  # (B, H, 1, C, C)
    d_weights = (dA * probs).sum(dim=(0, 1, 3, 4))
    wdA = dA * weights.view(1, 1, -1, 1, 1)
    d_scores = (probs * (wdA - (wdA * probs).sum(dim=-1, keepdim=True))).sum(dim=2)
    d_temperature = (d_scores * gram).sum(dim=(0, 2, 3))
    d_gram = d_scores * temperature.view(1, -1, 1, 1)
    dg_g = d_gram * gram
    norm_q, norm_k = norms.unbind(dim=2)
    nq = norm_q.clamp_min(eps)
    nk = norm_k.clamp_min(eps)
    p = d_gram / (nq.unsqueeze(-1) * nk.unsqueeze(-2))
    # F.normalize divides by max(‖x‖, eps): rows below eps get no projection term.
    scale_q = torch.where(norm_q >= eps, dg_g.sum(dim=-1) / (nq * nq), torch.zeros_like(nq))
    scale_k = torch.where(norm_k >= eps, dg_g.sum(dim=-2) / (nk * nk), torch.zeros_like(nk))
    return p, scale_q, scale_k, d_temperature, d_weights
