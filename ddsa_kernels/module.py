"""The ops as nn.Modules: ``DualSelfAttentionCore`` (learnable temperature and branch weights),
``ChannelNorm`` (learnable per-channel weight and bias) and ``DepthwiseConv2d`` (an ``nn.Conv2d``
whose forward runs :func:`ddsa_kernels.depthwise_conv`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from .ops.channel_norm import channel_norm
from .ops.depthwise_conv import depthwise_conv
from .ops._common import MAX_KERNEL
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


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, per pixel, with no permute.

    ``subtract_mean=True`` is the authors' WithBias_LayerNorm (``bias=False`` drops b),
    ``subtract_mean=False`` their BiasFree_LayerNorm (``x/σ · w``; needs ``bias=False``).
    Parameters ``weight`` (C,) initialised to ones and ``bias`` (C,) to zeros (None without bias).
    """

    def __init__(
        self,
        channels: int,
        *,
        bias: bool = True,
        subtract_mean: bool = True,
        eps: float = 1e-5,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if bias and not subtract_mean:
            raise ValueError("bias=True needs subtract_mean=True (the bias-free variant has no bias)")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be a positive float, got {eps!r}")
        self.channels = channels
        self.subtract_mean = subtract_mean
        self.eps = eps
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(x, self.weight, self.bias, self.eps, subtract_mean=self.subtract_mean,
                            backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.channels}, bias={self.bias is not None}, subtract_mean={self.subtract_mean}, "
                f"eps={self.eps}, backend={self.backend!r}")


def ddsa_topk(channels: int) -> tuple[Optional[int], int]:
    """DDSA's branches: dense + top-k with k = floor(7C/10)."""
    return (None, channels * 7 // 10)


def drsformer_topk(channels: int) -> tuple[int, int, int, int]:
    """DRSformer's four top-k branches: floor(C/2), floor(2C/3), floor(3C/4), floor(4C/5)."""
    return (channels // 2, channels * 2 // 3, channels * 3 // 4, channels * 4 // 5)


def restormer_topk(channels: int) -> tuple[None]:
    """Restormer's MDTA: one dense branch."""
    return (None,)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)`` computed by
    :func:`ddsa_kernels.depthwise_conv`: same parameters (``weight`` (C, 1, K, K), ``bias`` (C,) or None),
    same state dict, same result. (B, C, H, W) → (B, C, H, W); K odd, 1 to 7.
    """

    def __init__(self, channels: int, kernel_size: int = 3, *, bias: bool = True, backend: str = "auto",
                 device=None, dtype=None) -> None:
        if kernel_size % 2 != 1 or not 1 <= kernel_size <= MAX_KERNEL:
            raise ValueError(f"kernel_size must be odd, 1 to {MAX_KERNEL}, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias,
                         device=device, dtype=dtype)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.weight, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"
