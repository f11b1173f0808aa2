"""``DualSelfAttentionCore``: the op with its learnable temperature and branch weights."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from .ops.dual_attention import dual_attention
from .ops.dual_attention._common import normalize_topk


class DualSelfAttentionCore(nn.Module):
    """Owns τ (one per head, shape (H, 1, 1) as in the authors' code) and the branch weights.

    Authors' initialisation: τ = 1, every branch weight 0.2. ``forward(q, k, v)`` takes
    (B, H, C, N) tensors and returns (B, H, C, N).
    """

    def __init__(
        self,
        heads: int,
        channels: int,
        topk: Sequence[Optional[int]],
        *,
        backend: str = "auto",
        eps: float = 1e-12,
        weight_init: float = 0.2,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.channels = channels
        self.topk = tuple(topk)
        normalize_topk(self.topk, channels)  # fail at construction, not at the first forward
        self.backend = backend
        self.eps = eps
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.weights = nn.Parameter(torch.full((len(self.topk),), float(weight_init)))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return dual_attention(q, k, v, self.temperature, self.weights, self.topk, eps=self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, channels={self.channels}, topk={self.topk}, backend={self.backend!r}"


def ddsa_topk(channels: int) -> tuple[Optional[int], int]:
    """DDSA's branches: dense + top-k with k = floor(7C/10)."""
    return (None, channels * 7 // 10)


def drsformer_topk(channels: int) -> tuple[int, int, int, int]:
    """DRSformer's four top-k branches: floor(C/2), floor(2C/3), floor(3C/4), floor(4C/5)."""
    return (channels // 2, channels * 2 // 3, channels * 3 // 4, channels * 4 // 5)


def restormer_topk(channels: int) -> tuple[None]:
    """Restormer's MDTA: one dense branch."""
    return (None,)
