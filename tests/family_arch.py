"""Test models for ``ddsa_kernels.patch``: the published-structure stand-ins of the three families
(``tests/published_nets``) and near-misses derived from them that look like them but are not.

The family classes are the stand-ins' own: ``SEFN`` *is* IDT-DDSA's ``FeedForward`` (functional
``F.relu``, no relu submodule), ``LayerNorm`` its ``LayerNorm``; the three attentions are the published
``Attention`` classes with a default for ``bias``. Plain eager PyTorch; imports nothing from
``ddsa_kernels`` or ``ddsa_model``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import published_nets
from published_nets import FAMILIES, drsformer_arch, idt_ddsa_arch, restormer_arch  # noqa: F401

# ----------------------------------------------------------------------------- the families' own classes
LayerNorm = idt_ddsa_arch.LayerNorm
WithBias_LayerNorm = idt_ddsa_arch.WithBias_LayerNorm
BiasFree_LayerNorm = idt_ddsa_arch.BiasFree_LayerNorm
SEFN = idt_ddsa_arch.FeedForward
SALayer = idt_ddsa_arch.SALayer
GDFN = restormer_arch.FeedForward
MSFN = drsformer_arch.FeedForward
Downsample = idt_ddsa_arch.Downsample
to_3d, to_4d = idt_ddsa_arch.to_3d, idt_ddsa_arch.to_4d
ARCH = {"ddsa": idt_ddsa_arch, "drsformer": drsformer_arch, "restormer": restormer_arch}


class DDSAAttention(idt_ddsa_arch.Attention):
    """IDT-DDSA's ``Attention`` (dense + top-⌊7C/10⌋ branches), ``bias`` defaulting to False."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)


class DRSformerAttention(drsformer_arch.Attention):
    """DRSformer's ``Attention`` (four top-k branches, unused ``attn_drop``), ``bias`` defaulting to False."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)


class RestormerAttention(restormer_arch.Attention):
    """Restormer's ``Attention`` (MDTA), ``bias`` defaulting to False."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)


ATTENTION = {"ddsa": DDSAAttention, "drsformer": DRSformerAttention, "restormer": RestormerAttention}


def tiny_net(family: str, **kwargs: Any) -> nn.Module:
    """The family's published-structure network at the tiny size (dim 8, one block per level, heads
    (1, 2, 2, 4)); ``kwargs`` (e.g. ``LayerNorm_type``, ``bias``) override the constructor's."""
    return published_nets.build(family, "tiny", **kwargs)


def small_net(family: str, **kwargs: Any) -> nn.Module:
    """The family's published-structure network at the ddsa-small size."""
    return published_nets.build(family, "small", **kwargs)


def block_stack(family: str, dims=(8, 16), heads=(1, 2), LayerNorm_type: str = "WithBias",
                bias: bool = False) -> nn.Sequential:
    """A conv embed, one of the family's ``TransformerBlock`` per (dim, heads) with 1×1 convs between dims,
    a conv out: (B, 3, H, W) → (B, 3, H, W)."""
    block = ARCH[family].TransformerBlock
    layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 3, padding=1)]
    for i, (d, h) in enumerate(zip(dims, heads)):
        if i and dims[i - 1] != d:
            layers.append(nn.Conv2d(dims[i - 1], d, 1))
        layers.append(block(d, h, 2.0, bias, LayerNorm_type))
    layers.append(nn.Conv2d(dims[-1], 3, 3, padding=1))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- helpers of the forks
def _heads(attn: nn.Module, x: torch.Tensor):
    """q (normalised), k (normalised), v as (B, heads, C/heads, H·W) and the scaled scores."""
    b, c, h, w = x.shape
    q, k, v = (t.reshape(b, attn.num_heads, c // attn.num_heads, h * w)
               for t in attn.qkv_dwconv(attn.qkv(x)).chunk(3, dim=1))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return (q @ k.transpose(-2, -1)) * attn.temperature, v


def _topk_softmax(attn: torch.Tensor, keep: int) -> torch.Tensor:
    """Softmax over the ``keep`` largest entries of each row (exactly ``keep``: topk indices), zero elsewhere."""
    mask = torch.zeros_like(attn).scatter_(-1, torch.topk(attn, k=keep, dim=-1)[1], 1.0)
    return torch.where(mask > 0, attn, torch.full_like(attn, float("-inf"))).softmax(dim=-1)


def _finish(attn: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return attn.project_out(out.reshape(x.shape))


# ----------------------------------------------------------------------------- near-miss attentions
class WrongKernelAttention(DDSAAttention):
    """qkv is a 3×3 conv instead of 1×1 (same attribute names)."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=3, padding=1, bias=bias)


class FlatTemperatureAttention(RestormerAttention):
    """temperature of shape (heads,) instead of (heads, 1, 1); its forward broadcasts it."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)
        self.temperature = nn.Parameter(torch.ones(num_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature.view(-1, 1, 1)
        return _finish(self, attn.softmax(dim=-1) @ v, x)


class ExtraParamAttention(DDSAAttention):
    """DDSA attention with an extra learnable output gain."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gamma


class ThreeBranchAttention(DRSformerAttention):
    """An unknown set of branch weights: attn1..attn3 only."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)
        del self.attn4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = _heads(self, x)
        C = attn.shape[-1]
        out = sum(_topk_softmax(attn, k) @ v * w for k, w in
                  ((int(C / 2), self.attn1), (int(C * 2 / 3), self.attn2), (int(C * 3 / 4), self.attn3)))
        return _finish(self, out, x)


class SixTenthsAttention(DDSAAttention):
    """Same structure as DDSA's attention but keeps top-⌊6C/10⌋: only the behaviour check can tell."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = _heads(self, x)
        C = attn.shape[-1]
        out = (attn.softmax(dim=-1) @ v) * self.attn + (_topk_softmax(attn, int(C * 6 / 10)) @ v) * self.attn1
        return _finish(self, out, x)


class DropoutAttention(DRSformerAttention):
    """DRSformer attention whose attn_drop has p > 0, applied to each branch's probabilities."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False, p: float = 0.1) -> None:
        super().__init__(dim, num_heads, bias)
        self.attn_drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = _heads(self, x)
        C = attn.shape[-1]
        keeps = (int(C / 2), int(C * 2 / 3), int(C * 3 / 4), int(C * 4 / 5))
        weights = (self.attn1, self.attn2, self.attn3, self.attn4)
        out = sum(self.attn_drop(_topk_softmax(attn, k)) @ v * w for k, w in zip(keeps, weights))
        return _finish(self, out, x)


class LinearQKV(nn.Module):
    """Attribute names of an attention module, but Linear layers on (B, N, dim) tokens."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.qkv(x)[..., : x.shape[-1]])


# ----------------------------------------------------------------------------- near-miss norms
class _Eps6Body(WithBias_LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-6) * self.weight + self.bias


class Eps6LayerNorm(LayerNorm):
    """A WithBias LayerNorm whose body uses eps 1e-6."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, "WithBias")
        self.body = _Eps6Body(dim)


# ----------------------------------------------------------------------------- SEFN forks
class LeakySEFN(SEFN):
    """A fork whose chain uses a LeakyReLU module (``self.relu``) instead of F.relu: not SEFN's math."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.0, bias: bool = False) -> None:
        super().__init__(dim, ffn_expansion_factor, bias)
        self.relu = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = self.relu(self.dwconv3x3(x1))
        y2 = self.relu(self.dwconv3x3(y1 + x2))
        y3 = self.relu(self.dwconv3x3(y2 + x3))
        return self.SAlayer(self.project_out(torch.cat((y1, y2, y3), dim=1)))


class GatelessSEFN(SEFN):
    """The "SEFN w/o SA" ablation written by deleting the gate: other submodules, left alone."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.0, bias: bool = False) -> None:
        super().__init__(dim, ffn_expansion_factor, bias)
        del self.SAlayer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = F.relu(self.dwconv3x3(x1))
        y2 = F.relu(self.dwconv3x3(y1 + x2))
        y3 = F.relu(self.dwconv3x3(y2 + x3))
        return self.project_out(torch.cat((y1, y2, y3), dim=1))


class WideOutSEFN(SEFN):
    """project_out reads only two of the three groups: the shapes do not match SEFN."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.0, bias: bool = False) -> None:
        super().__init__(dim, ffn_expansion_factor, bias)
        hidden = self.dwconv3x3.in_channels
        self.project_out = nn.Conv2d(hidden * 2, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = F.relu(self.dwconv3x3(x1))
        y2 = F.relu(self.dwconv3x3(y1 + x2))
        return self.SAlayer(self.project_out(torch.cat((y1, y2), dim=1)))


class LastLinearSEFN(SEFN):
    """Same modules and shapes, but y3 skips the ReLU: only the behaviour check can tell."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = F.relu(self.dwconv3x3(x1))
        y2 = F.relu(self.dwconv3x3(y1 + x2))
        y3 = self.dwconv3x3(y2 + x3)
        return self.SAlayer(self.project_out(torch.cat((y1, y2, y3), dim=1)))


class Kernel5SEFN(SEFN):
    """SEFN with a biased 5×5 depth-wise kernel: still SEFN's math, patched exactly."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.0) -> None:
        super().__init__(dim, ffn_expansion_factor, bias=True)
        hidden = self.dwconv3x3.in_channels
        self.dwconv3x3 = nn.Conv2d(hidden, hidden, kernel_size=5, padding=2, groups=hidden, bias=True)


class MeanFirstSALayer(SALayer):
    """A fork of the spatial gate that pools [mean, max] instead of [max, mean]: the same modules, other math."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.mean(x, 1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], dim=1)
        return x * self.conv_sa(pooled)


class MeanFirstGateSEFN(SEFN):
    """SEFN with that gate: the block is still SEFN (patched), its gate is not the authors'."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.0, bias: bool = False) -> None:
        super().__init__(dim, ffn_expansion_factor, bias)
        self.SAlayer = MeanFirstSALayer()
