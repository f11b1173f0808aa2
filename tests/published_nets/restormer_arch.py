"""Stand-in for Restormer, ``basicsr/models/archs/restormer_arch.py`` of swz30/Restormer.

Written from scratch with the module structure of that file: the same classes, constructor
signatures and defaults, attribute names and registration order, so ``state_dict()`` keys and
shapes and ``named_modules()`` paths and types are the published network's, and the same weights
give the same outputs. No ``einops`` (plain reshapes).

* ``FeedForward`` is GDFN: 1×1 ``project_in`` to 2·hidden, 3×3 depth-wise ``dwconv``, split in two
  halves, ``F.gelu(x1) * x2`` (functional, no activation submodule), 1×1 ``project_out``.
* ``Attention`` is MDTA: one dense softmax branch, no branch weights.
* ``Restormer``: the 4-level U-Net with ``num_refinement_blocks`` (default 4) refinement blocks;
  (B, inp_channels, H, W) → (B, out_channels, H, W), H and W multiples of 8.

Imports nothing from this repository: ``ddsa-bench patch`` loads it by file path.
"""
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F


def to_3d(x):
    """(B, C, H, W) → (B, H·W, C)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).transpose(1, 2)


def to_4d(x, h, w):
    """(B, H·W, C) → (B, C, H, W)."""
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, h, w)


def _as_shape(normalized_shape):
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    shape = torch.Size(normalized_shape)
    assert len(shape) == 1
    return shape


class BiasFree_LayerNorm(nn.Module):
    """x / sqrt(var(x) + 1e-5) · weight over the last dim (the numerator is not centred)."""

    def __init__(self, normalized_shape):
        super(BiasFree_LayerNorm, self).__init__()
        shape = _as_shape(normalized_shape)
        self.weight = nn.Parameter(torch.ones(shape))
        self.normalized_shape = shape

    def forward(self, x):
        var = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + 1e-5) * self.weight


class WithBias_LayerNorm(nn.Module):
    """(x − mean) / sqrt(var + 1e-5) · weight + bias over the last dim."""

    def __init__(self, normalized_shape):
        super(WithBias_LayerNorm, self).__init__()
        shape = _as_shape(normalized_shape)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.normalized_shape = shape

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    """Channel norm of a (B, C, H, W) map through a (B, H·W, C) view; ``body`` does the maths."""

    def __init__(self, dim, LayerNorm_type):
        super(LayerNorm, self).__init__()
        self.body = BiasFree_LayerNorm(dim) if LayerNorm_type == 'BiasFree' else WithBias_LayerNorm(dim)

    def forward(self, x):
        h, w = x.shape[-2:]
        return to_4d(self.body(to_3d(x)), h, w)


class FeedForward(nn.Module):
    """GDFN: (B, dim, H, W) → (B, dim, H, W), a GELU-gated depth-wise conv."""

    def __init__(self, dim, ffn_expansion_factor, bias):
        super(FeedForward, self).__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1, groups=hidden * 2,
                                bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class Attention(nn.Module):
    """MDTA, channel ("transposed") attention with one dense branch: (B, dim, H, W) → same."""

    def __init__(self, dim, num_heads, bias):
        super(Attention, self).__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, stride=1, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        heads = self.num_heads
        q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        out = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    """x + attn(norm1(x)), then + ffn(norm2(x))."""

    def __init__(self, dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type):
        super(TransformerBlock, self).__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3×3 conv embedding."""

    def __init__(self, in_c=3, embed_dim=48, bias=False):
        super(OverlapPatchEmbed, self).__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    """3×3 conv to n_feat/2, pixel-unshuffle by 2: (B, n, H, W) → (B, 2n, H/2, W/2)."""

    def __init__(self, n_feat):
        super(Downsample, self).__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, stride=1, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """3×3 conv to 2·n_feat, pixel-shuffle by 2: (B, n, H, W) → (B, n/2, 2H, 2W)."""

    def __init__(self, n_feat):
        super(Upsample, self).__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, stride=1, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


class Restormer(nn.Module):
    """Restormer: (B, inp_channels, H, W) → (B, out_channels, H, W), H and W multiples of 8."""

    def __init__(self,
                 inp_channels=3,
                 out_channels=3,
                 dim=48,
                 num_blocks=[4, 6, 6, 8],
                 num_refinement_blocks=4,
                 heads=[1, 2, 4, 8],
                 ffn_expansion_factor=2.66,
                 bias=False,
                 LayerNorm_type='WithBias',
                 dual_pixel_task=False):
        super(Restormer, self).__init__()

        def stack(n, width, n_heads):
            return nn.Sequential(*[TransformerBlock(dim=width, num_heads=n_heads,
                                                    ffn_expansion_factor=ffn_expansion_factor, bias=bias,
                                                    LayerNorm_type=LayerNorm_type) for _ in range(n)])

        d1, d2, d3, d4 = dim, int(dim * 2), int(dim * 4), int(dim * 8)
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = stack(num_blocks[0], d1, heads[0])
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = stack(num_blocks[1], d2, heads[1])
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = stack(num_blocks[2], d3, heads[2])
        self.down3_4 = Downsample(d3)
        self.latent = stack(num_blocks[3], d4, heads[3])
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, kernel_size=1, bias=bias)
        self.decoder_level3 = stack(num_blocks[2], d3, heads[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
        self.decoder_level2 = stack(num_blocks[1], d2, heads[1])
        self.up2_1 = Upsample(d2)
        self.decoder_level1 = stack(num_blocks[0], d2, heads[0])
        self.refinement = stack(num_refinement_blocks, d2, heads[0])
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, d2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(d2, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, inp_img):
        emb = self.patch_embed(inp_img)
        enc1 = self.encoder_level1(emb)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        if self.dual_pixel_task:
            return self.output(dec1 + self.skip_conv(emb))
        return self.output(dec1) + inp_img
