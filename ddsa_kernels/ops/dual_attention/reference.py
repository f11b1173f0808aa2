"""The "reference" backend: the fused algorithm written with plain PyTorch matmuls.

It follows the same three steps as the fused kernels, so the custom op's autograd path runs on
every device and dtype (float64 included):

1. Gram sweep: ``q kᵀ`` (C×C) and the squared row norms, in the accumulation dtype;
2. C×C epilogue (:func:`forward_epilogue`): normalise, scale by τ, per-row k-th-largest
   threshold, masked softmaxes, ``A = Σ w_i A_i``;
3. output sweep: ``out = A v``.

Backward, with dO the output gradient and the saved O(C²) statistics:
``dA = dO vᵀ``; then (:func:`backward_epilogue`) ``dw_i = Σ dA ⊙ A_i``,
``dS = Σ_i A_i ⊙ (w_i dA − rowsum(w_i dA ⊙ A_i))``, ``dτ = Σ dS ⊙ G``, ``dG = τ dS``,
``P = dG / (‖q‖_r ‖k‖_c)``; finally ``dq = P k − q ⊙ rowsum(dG ⊙ G)/‖q‖²``,
``dk = Pᵀ q − k ⊙ colsum(dG ⊙ G)/‖k‖²`` and ``dv = Aᵀ dO``. Rows with a norm below eps follow
``F.normalize`` (divided by eps, no projection term).

Shapes: ``qk`` and ``gram`` (B, H, C, C); ``norms`` (B, H, 2, C) holding ‖q_r‖ and ‖k_r‖;
``probs`` (B, H, n_branches, C, C); all in the accumulation dtype. The autograd oracle of the
tests is :func:`ddsa_kernels.ops.dual_attention.naive.naive_dual_attention`, which shares no
code with this file.
"""
from __future__ import annotations

import torch

from ._common import accumulation_dtype


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
    """From ``dA = dO vᵀ`` to what the final sweep needs (see the module docstring).

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




def forward(q, k, v, temperature, weights, keep, eps):
    acc = accumulation_dtype(q.dtype)
    qa, ka = q.to(acc), k.to(acc)
    qk = qa @ ka.transpose(-2, -1)
    attn, probs, gram, norms = forward_epilogue(
        qk, qa.square().sum(-1), ka.square().sum(-1), temperature, weights, keep, eps
    )
    out = (attn @ v.to(acc)).to(q.dtype)
    return out, probs, gram, norms


def backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
    acc = probs.dtype
    go = grad_out.to(acc)
    grad_attn = go @ v.to(acc).transpose(-2, -1)
    attn = (probs * weights.view(1, 1, -1, 1, 1)).sum(dim=2)
    p, scale_q, scale_k, d_temp, d_w = backward_epilogue(grad_attn, probs, gram, norms, temperature, weights, eps)
    qa, ka = q.to(acc), k.to(acc)
    dq = p @ ka - scale_q.unsqueeze(-1) * qa
    dk = p.transpose(-2, -1) @ qa - scale_k.unsqueeze(-1) * ka
    dv = attn.transpose(-2, -1) @ go
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), d_temp, d_w
