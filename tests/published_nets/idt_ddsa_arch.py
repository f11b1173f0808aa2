"""Stand-in for the IDT-DDSA network, ``basicsr/models/archs/restormer_arch.py`` of zt-fan/IDT-DDSA.

Written from scratch with the module structure of that file: the same classes, constructor
signatures and defaults, attribute names and registration order, so ``state_dict()`` keys and
shapes and ``named_modules()`` paths and types are the published network's, and the same weights
give the same outputs. Differences that change nothing observable: no ``einops`` (plain reshapes)
and the top-k mask is built in the scores' dtype.

* ``FeedForward`` is the SEFN that the published file runs (it also holds Restormer's GDFN, inside a
  string literal): 1×1 ``conv1x1_in`` to 3·hidden, one shared 3×3 depth-wise ``dwconv3x3`` applied
  three times in a chain with the *functional* ``F.relu`` (no relu submodule), concat,
  ``project_out``, then the spatial gate ``SAlayer``.
* ``Attention``: dense softmax branch weighted by ``attn`` plus a top-⌊7C/10⌋ branch weighted by
  ``attn1``.
* ``Restormer``: the 4-level U-Net with a level-0 ``refinement0`` stack in front of
  ``encoder_level1``; (B, inp_channels, H, W) → (B, out_channels, H, W), H and W multiples of 8.

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
    """SEFN: (B, dim, H, W) → (B, dim, H, W) through a ReLU-chained shared depth-wise conv and a spatial gate."""

    def __init__(self, dim, ffn_expansion_factor, bias):
        super(FeedForward, self).__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.conv1x1_in = nn.Conv2d(dim, hidden * 3, kernel_size=1, stride=1, padding=0, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden, hidden, kernel_size=3, stride=1, padding=1, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 3, dim, kernel_size=1, bias=bias)
        self.SAlayer = SALayer()

    def forward(self, x):
        g1, g2, g3 = self.conv1x1_in(x).chunk(3, dim=1)
        y1 = F.relu(self.dwconv3x3(g1))
        y2 = F.relu(self.dwconv3x3(y1 + g2))
        y3 = F.relu(self.dwconv3x3(y2 + g3))
        return self.SAlayer(self.project_out(torch.cat((y1, y2, y3), dim=1)))


class SALayer(nn.Module):
    """Spatial gate: x · sigmoid(BN(conv3×3([max over channels, mean over channels])))."""

    def __init__(self):
        super().__init__()
        self.conv_sa = nn.Sequential(
            nn.Conv2d(2, 1, 3, 1, 1, bias=False),
            nn.BatchNorm2d(1, momentum=0.01),
            nn.Sigmoid(),
        )

    def forward(self, x):
        pooled = torch.cat((torch.max(x, 1, keepdim=True)[0], torch.mean(x, dim=1, keepdim=True)), dim=1)
        return x * self.conv_sa(pooled)


def _keep_top(attn, keep):
    """``attn`` with every entry outside the ``keep`` largest of its row set to −inf (exactly ``keep`` kept)."""
    mask = torch.zeros_like(attn)
    mask.scatter_(-1, torch.topk(attn, k=keep, dim=-1, largest=True)[1], 1.)
    return torch.where(mask > 0, attn, torch.full_like(attn, float('-inf')))


class Attention(nn.Module):
    """Channel ("transposed") attention with a dense and a top-⌊7C/10⌋ branch: (B, dim, H, W) → same."""

    def __init__(self, dim, num_heads, bias):
        super(Attention, self).__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, stride=1, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.attn = torch.nn.Parameter(torch.tensor([0.2]), requires_grad=True)
        self.attn1 = torch.nn.Parameter(torch.tensor([0.2]), requires_grad=True)

    def forward(self, x):
        b, c, h, w = x.shape
        heads = self.num_heads
        q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        scores = (q @ k.transpose(-2, -1)) * self.temperature
        per_head = q.shape[2]
        dense = scores.softmax(dim=-1) @ v
        sparse = _keep_top(scores, int(7 * per_head / 10)).softmax(dim=-1) @ v
        out = dense * self.attn + sparse * self.attn1
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
    """The IDT-DDSA network: (B, inp_channels, H, W) → (B, out_channels, H, W), H and W multiples of 8."""

    def __init__(self,
                 inp_channels=3,
                 out_channels=3,
                 dim=48,
                 num_blocks=[4, 6, 6, 8],
                 num_refinement_blocks=2,
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
        self.refinement0 = stack(num_refinement_blocks, d1, heads[0])
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
        enc1 = self.encoder_level1(self.refinement0(emb))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        if self.dual_pixel_task:
            return self.output(dec1 + self.skip_conv(emb))
        return self.output(dec1) + inp_img
