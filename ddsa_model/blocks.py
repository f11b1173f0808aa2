"""The building blocks of DDSANet, one class each, named as in the paper.

All tensors are (B, C, H, W) feature maps; every convolution is bias-free. Depth-wise 3×3 convolutions
are ``ddsa_kernels.DepthwiseConv2d`` (an ``nn.Conv2d`` with the same parameters, run by the package's
CPU kernel on CPU and by torch's convolution elsewhere).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ddsa_kernels import DepthwiseConv2d, DualSelfAttentionCore, channel_norm, depthwise_chain_mlp


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel of a (B, C, H, W) map, with weight and bias
    (Restormer's 'WithBias'): the fused ``ddsa_kernels.channel_norm``, which reads NCHW directly
    (no permute copies)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(x, self.weight, self.bias, self.eps)


class DualSelfAttention(nn.Module):
    """The DDSA attention block: 1×1 conv n→3n, 3×3 depth-wise conv, per-head dual attention, 1×1 conv.

    q, k, v are (B, heads, n/heads, H·W); the attention itself is the fused op of ``ddsa_kernels``
    (transposed attention over channels: the attention matrix is (n/heads)², not pixels²), run by
    its backend ``attention_backend`` ("auto", "reference", "eager", ...; not validated here).
    """

    def __init__(self, channels: int, heads: int, topk: Sequence[Optional[int]], attention_backend: str = "auto") -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.qkv_dwconv = DepthwiseConv2d(channels * 3, 3, bias=False)
        self.core = DualSelfAttentionCore(heads, channels // heads, topk, backend=attention_backend)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        shape = (b, self.heads, c // self.heads, h * w)
        out = self.core(q.reshape(shape), k.reshape(shape), v.reshape(shape))
        return self.project_out(out.reshape(b, c, h, w))


class SpatialAttentionGate(nn.Module):
    """x · σ(BN(conv3×3([max_c x, mean_c x]))): one gate value per pixel, shared by all channels."""

    def __init__(self, bn_momentum: float = 0.01) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class SEFN(nn.Module):
    """Spatial-enhanced feed-forward network.

    1×1 conv n → 3·hidden, split x₁, x₂, x₃; one shared 3×3 depth-wise conv d:
    y₁ = relu(d(x₁)), y₂ = relu(d(y₁ + x₂)), y₃ = relu(d(y₂ + x₃)); concat, 1×1 conv → n (the three
    convolutions are one ``ddsa_kernels.depthwise_chain_mlp`` call); then
    the spatial-attention gate (unless ``spatial_gate=False``, the "SEFN w/o SA" ablation).
    """

    def __init__(self, channels: int, expansion: float, spatial_gate: bool = True, bn_momentum: float = 0.01) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.hidden = hidden
        self.conv_in = nn.Conv2d(channels, hidden * 3, 1, bias=False)
        self.dwconv = DepthwiseConv2d(hidden, 3, bias=False)
        self.project_out = nn.Conv2d(hidden * 3, channels, 1, bias=False)
        self.gate = SpatialAttentionGate(bn_momentum) if spatial_gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = depthwise_chain_mlp(x, self.conv_in.weight, self.conv_in.bias, self.dwconv.weight, self.dwconv.bias,
                                  self.project_out.weight, self.project_out.bias, backend=self.dwconv.backend)
        return self.gate(out) if self.gate is not None else out


class GDFN(nn.Module):
    """Restormer's gated-dconv FFN (ablation baseline): 1×1 n→2·hidden, 3×3 dw, gelu(x₁)·x₂, 1×1 → n."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=False)
        self.dwconv = DepthwiseConv2d(hidden * 2, 3, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class DATB(nn.Module):
    """Dual attention Transformer block: x + DDSA(LN(x)), then x + FFN(LN(x))."""

    def __init__(
        self,
        channels: int,
        heads: int,
        topk: Sequence[Optional[int]],
        ffn: str = "sefn",
        expansion: float = 2.66,
        attention_backend: str = "auto",
        bn_momentum: float = 0.01,
        layernorm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels, layernorm_eps)
        self.attn = DualSelfAttention(channels, heads, topk, attention_backend)
        self.norm2 = LayerNorm2d(channels, layernorm_eps)
        if ffn == "gdfn":
            self.ffn: nn.Module = GDFN(channels, expansion)
        elif ffn in ("sefn", "sefn-no-sa"):
            self.ffn = SEFN(channels, expansion, spatial_gate=ffn == "sefn", bn_momentum=bn_momentum)
        else:
            raise ValueError(f"unknown ffn kind {ffn!r}; choose sefn, gdfn or sefn-no-sa")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Module):
    """3×3 conv n → n/2, then pixel-unshuffle(2): (B, n, H, W) → (B, 2n, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(self.conv(x), 2)


class Upsample(nn.Module):
    """3×3 conv n → 2n, then pixel-shuffle(2): (B, n, H, W) → (B, n/2, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)
