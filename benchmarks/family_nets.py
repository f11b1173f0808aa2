"""The authors'-style networks of the three families, written as their BasicSR repositories write them.

Plain eager PyTorch, independent of ``ddsa_kernels`` and ``ddsa_model``: these are what
``ddsa_kernels.patch`` is meant to speed up, used by ``ddsa-bench patch`` and as the tests' oracle.

* ``LayerNorm(dim, LayerNorm_type)`` with ``body`` = ``WithBias_LayerNorm`` or ``BiasFree_LayerNorm``:
  over channels of a (B, C, H, W) tensor through a (B, H·W, C) view, biased variance, eps 1e-5.
* ``RestormerAttention`` (MDTA, one dense branch), ``DDSAAttention`` (dense + top-⌊7C/10⌋ with the
  scalar weights ``attn``, ``attn1``), ``DRSformerAttention`` (top-⌊C/2⌋, ⌊2C/3⌋, ⌊3C/4⌋, ⌊4C/5⌋ with
  ``attn1``..``attn4``; an unused ``attn_drop = Dropout(0)`` as in DRSformer): (B, dim, H, W) → same.
  The top-k mask is the authors': ``torch.topk`` indices scattered into zeros, −inf elsewhere.
* the feed-forward of each family: ``SEFN`` for DDSA, as IDT-DDSA writes it (1×1 in to 3·hidden, one
  shared 3×3 depth-wise conv chained over the three groups with ReLU, concat, 1×1 out, ``SALayer``
  spatial gate with BatchNorm); ``FeedForward``, Restormer's GDFN (1×1 in, 3×3 depth-wise, GELU gate,
  1×1 out), for Restormer and, standing in for its multi-scale FFN (not reproduced here), DRSformer.
* ``TransformerBlock``: ``x + attn(norm1(x))``, then ``x + ffn(norm2(x))``.
* ``FamilyNet``: Restormer's 4-level U-Net (overlap patch embed, pixel-unshuffle downsampling,
  pixel-shuffle upsampling with 1×1 channel reductions, refinement blocks, global residual);
  H and W must be multiples of 8. ``small_net(family)`` is the DDSA ``ddsa-small`` size: dim 16,
  blocks (1, 2, 2, 3), heads (1, 2, 4, 8), one refinement block.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("ddsa", "drsformer", "restormer")


def to_3d(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).transpose(1, 2)


def to_4d(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, hw, c = x.shape
    return x.transpose(1, 2).reshape(b, c, h, w)


class BiasFree_LayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, HW, C)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(sigma + 1e-5) * self.weight


class WithBias_LayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, HW, C)
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    def __init__(self, dim: int, LayerNorm_type: str = "WithBias") -> None:
        super().__init__()
        self.body = BiasFree_LayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBias_LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return to_4d(self.body(to_3d(x)), h, w)


def _topk_softmax(attn: torch.Tensor, keep: int) -> torch.Tensor:
    b, heads, c, _ = attn.shape
    mask = torch.zeros(b, heads, c, c, device=attn.device, dtype=attn.dtype, requires_grad=False)
    index = torch.topk(attn, k=keep, dim=-1, largest=True)[1]
    mask.scatter_(-1, index, 1.0)
    return torch.where(mask > 0, attn, torch.full_like(attn, float("-inf"))).softmax(dim=-1)


class _AttentionBase(nn.Module):
    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, stride=1, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def scores(self, x: torch.Tensor):
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = q.reshape(b, self.num_heads, c // self.num_heads, h * w)
        k = k.reshape(b, self.num_heads, c // self.num_heads, h * w)
        v = v.reshape(b, self.num_heads, c // self.num_heads, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        return (q @ k.transpose(-2, -1)) * self.temperature, v

    def finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(out.reshape(x.shape))


class RestormerAttention(_AttentionBase):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = self.scores(x)
        return self.finish(attn.softmax(dim=-1) @ v, x)


class DDSAAttention(_AttentionBase):
    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)
        self.attn = nn.Parameter(torch.tensor([0.2]))
        self.attn1 = nn.Parameter(torch.tensor([0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = self.scores(x)
        C = attn.shape[-1]
        out = (attn.softmax(dim=-1) @ v) * self.attn + (_topk_softmax(attn, int(C * 7 / 10)) @ v) * self.attn1
        return self.finish(out, x)


class DRSformerAttention(_AttentionBase):
    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, bias)
        self.attn_drop = nn.Dropout(0.0)
        self.attn1 = nn.Parameter(torch.tensor([0.2]))
        self.attn2 = nn.Parameter(torch.tensor([0.2]))
        self.attn3 = nn.Parameter(torch.tensor([0.2]))
        self.attn4 = nn.Parameter(torch.tensor([0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = self.scores(x)
        C = attn.shape[-1]
        out1 = _topk_softmax(attn, int(C / 2)) @ v
        out2 = _topk_softmax(attn, int(C * 2 / 3)) @ v
        out3 = _topk_softmax(attn, int(C * 3 / 4)) @ v
        out4 = _topk_softmax(attn, int(C * 4 / 5)) @ v
        out = out1 * self.attn1 + out2 * self.attn2 + out3 * self.attn3 + out4 * self.attn4
        return self.finish(out, x)


ATTENTION = {"ddsa": DDSAAttention, "drsformer": DRSformerAttention, "restormer": RestormerAttention}


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1, groups=hidden * 2,
                                bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class SALayer(nn.Module):
    """IDT-DDSA's spatial gate: x · sigmoid(BN(conv3×3([max over c, mean over c])))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_sa = nn.Sequential(nn.Conv2d(2, 1, kernel_size=3, stride=1, padding=1, bias=False),
                                     nn.BatchNorm2d(1, momentum=0.01), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.max(x, 1, keepdim=True)[0], torch.mean(x, 1, keepdim=True)], dim=1)
        return x * self.conv_sa(pooled)


class SEFN(nn.Module):
    """IDT-DDSA's feed-forward: 1×1 in to 3·hidden, one shared 3×3 depth-wise conv applied three times
    in a chain with ReLU, concat, 1×1 out, spatial gate."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.conv1x1_in = nn.Conv2d(dim, hidden * 3, kernel_size=1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden, hidden, kernel_size=3, stride=1, padding=1, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 3, dim, kernel_size=1, bias=bias)
        self.SAlayer = SALayer()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = self.relu(self.dwconv3x3(x1))
        y2 = self.relu(self.dwconv3x3(y1 + x2))
        y3 = self.relu(self.dwconv3x3(y2 + x3))
        return self.SAlayer(self.project_out(torch.cat([y1, y2, y3], dim=1)))


FEED_FORWARD = {"ddsa": SEFN, "drsformer": FeedForward, "restormer": FeedForward}


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = "WithBias", family: str = "ddsa") -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = ATTENTION[family](dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FEED_FORWARD[family](dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Module):
    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, 1, 1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, 1, 1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FamilyNet(nn.Module):
    """Restormer's U-Net with the attention of ``family``: (B, 3, H, W) → (B, 3, H, W), H, W multiples of 8."""

    def __init__(self, family: str = "ddsa", dim: int = 16, num_blocks: Sequence[int] = (1, 2, 2, 3),
                 num_refinement_blocks: int = 1, heads: Sequence[int] = (1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False, LayerNorm_type: str = "WithBias") -> None:
        super().__init__()

        def blocks(n: int, d: int, h: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(d, h, ffn_expansion_factor, bias, LayerNorm_type, family)
                                   for _ in range(n)])

        self.patch_embed = nn.Conv2d(3, dim, kernel_size=3, stride=1, padding=1, bias=bias)
        self.encoder_level1 = blocks(num_blocks[0], dim, heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = blocks(num_blocks[1], dim * 2, heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = blocks(num_blocks[2], dim * 4, heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = blocks(num_blocks[3], dim * 8, heads[3])
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = blocks(num_blocks[2], dim * 4, heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = blocks(num_blocks[1], dim * 2, heads[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = blocks(num_blocks[0], dim * 2, heads[0])
        self.refinement = blocks(num_refinement_blocks, dim * 2, heads[0])
        self.output = nn.Conv2d(dim * 2, 3, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        enc1 = self.encoder_level1(self.patch_embed(inp_img))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        return self.output(self.refinement(dec1)) + inp_img


def small_net(family: str, **kwargs) -> FamilyNet:
    """``ddsa-small`` size: dim 16, blocks (1, 2, 2, 3), heads (1, 2, 4, 8), one refinement block."""
    return FamilyNet(family, dim=16, num_blocks=(1, 2, 2, 3), num_refinement_blocks=1, heads=(1, 2, 4, 8), **kwargs)


def tiny_net(family: str, **kwargs) -> FamilyNet:
    """For tests: dim 8, one block per level, heads (1, 2, 2, 4) (C per head 8, 8, 16, 16)."""
    return FamilyNet(family, dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4), **kwargs)
