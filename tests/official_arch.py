"""Test oracle: the authors' DDSA network rebuilt from scratch with their exact tensor names.

A state dict with the names and shapes of ``official_state_dict_keys.json`` loads into
:class:`OfficialDDSA` with ``strict=True``. The computation is plain eager PyTorch written as
the authors' Restormer-based code computes it (LayerNorm on a (B, HW, C) view, F.normalize,
``topk`` indices → scattered mask → ``where`` −inf, per-branch softmax and ``@ v``, weighted
sum). It deliberately imports nothing from ``ddsa_model`` or ``ddsa_kernels``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WithBiasLayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, HW, C)
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = WithBiasLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w).transpose(1, 2)
        return self.body(flat).transpose(1, 2).reshape(b, c, h, w)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.attn = nn.Parameter(torch.tensor([0.2]))   # dense branch weight
        self.attn1 = nn.Parameter(torch.tensor([0.2]))  # top-k branch weight
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        heads = self.num_heads
        q = q.reshape(b, heads, c // heads, h * w)
        k = k.reshape(b, heads, c // heads, h * w)
        v = v.reshape(b, heads, c // heads, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        _, _, C, _ = q.shape
        attn = (q @ k.transpose(-2, -1)) * self.temperature

        dense = attn.softmax(dim=-1)
        out_dense = dense @ v

        mask = torch.zeros(b, heads, C, C, device=x.device, requires_grad=False)
        index = torch.topk(attn, k=int(C * 7 / 10), dim=-1, largest=True)[1]
        mask.scatter_(-1, index, 1.0)
        sparse = torch.where(mask > 0, attn, torch.full_like(attn, float("-inf"))).softmax(dim=-1)
        out_sparse = sparse @ v

        out = out_dense * self.attn + out_sparse * self.attn1
        return self.project_out(out.reshape(b, c, h, w))


class SALayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_sa = nn.Sequential(
            nn.Conv2d(2, 1, 3, 1, 1, bias=False),
            nn.BatchNorm2d(1, momentum=0.01),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1, keepdim=True)[0], torch.mean(x, 1, keepdim=True)), dim=1)
        return x * self.conv_sa(pooled)


class SEFN(nn.Module):
    def __init__(self, dim: int, ffn_expansion_factor: float) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.conv1x1_in = nn.Conv2d(dim, hidden * 3, kernel_size=1, bias=False)
        self.dwconv3x3 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=False)
        self.project_out = nn.Conv2d(hidden * 3, dim, kernel_size=1, bias=False)
        self.SAlayer = SALayer()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = self.relu(self.dwconv3x3(x1))
        y2 = self.relu(self.dwconv3x3(y1 + x2))
        y3 = self.relu(self.dwconv3x3(y2 + x3))
        out = self.project_out(torch.cat([y1, y2, y3], dim=1))
        return self.SAlayer(out)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = LayerNorm(dim)
        self.ffn = SEFN(dim, ffn_expansion_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.ffn(self.norm2(x))
        return x


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c: int = 3, embed_dim: int = 48) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


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


def _blocks(n: int, dim: int, heads: int, factor: float) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, factor) for _ in range(n)])


class OfficialDDSA(nn.Module):
    """The authors' network; ``forward`` expects H, W divisible by 8 (their test scripts pad)."""

    def __init__(self, dim: int = 48, num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads=(1, 2, 4, 8), ffn_expansion_factor: float = 2.66) -> None:
        super().__init__()
        f = ffn_expansion_factor
        self.patch_embed = OverlapPatchEmbed(3, dim)
        self.refinement0 = _blocks(num_refinement_blocks, dim, heads[0], f)
        self.encoder_level1 = _blocks(num_blocks[0], dim, heads[0], f)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = _blocks(num_blocks[1], dim * 2, heads[1], f)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = _blocks(num_blocks[2], dim * 4, heads[2], f)
        self.down3_4 = Downsample(dim * 4)
        self.latent = _blocks(num_blocks[3], dim * 8, heads[3], f)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=False)
        self.decoder_level3 = _blocks(num_blocks[2], dim * 4, heads[2], f)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=False)
        self.decoder_level2 = _blocks(num_blocks[1], dim * 2, heads[1], f)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = _blocks(num_blocks[0], dim * 2, heads[0], f)
        self.refinement = _blocks(num_refinement_blocks, dim * 2, heads[0], f)
        self.output = nn.Conv2d(dim * 2, 3, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        inp_enc_level1 = self.refinement0(self.patch_embed(inp_img))
        out_enc_level1 = self.encoder_level1(inp_enc_level1)
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))

        inp_dec_level3 = torch.cat([self.up4_3(latent), out_enc_level3], 1)
        out_dec_level3 = self.decoder_level3(self.reduce_chan_level3(inp_dec_level3))
        inp_dec_level2 = torch.cat([self.up3_2(out_dec_level3), out_enc_level2], 1)
        out_dec_level2 = self.decoder_level2(self.reduce_chan_level2(inp_dec_level2))
        inp_dec_level1 = torch.cat([self.up2_1(out_dec_level2), out_enc_level1], 1)
        out_dec_level1 = self.refinement(self.decoder_level1(inp_dec_level1))
        return self.output(out_dec_level1) + inp_img
