"""Stand-in for DRSformer, ``basicsr/models/archs/DRSformer_arch.py`` of cschenxiang/DRSformer.

Written from scratch with the module structure of that file: the same classes (the unused
``ReLUConvBN`` and ``ResBlock`` too), constructor signatures and defaults, attribute names and
registration order, the ``Operations`` list and ``OPS`` table, so ``state_dict()`` keys and shapes
and ``named_modules()`` paths and types are the published network's, and the same weights give
the same outputs. Differences that change nothing observable: no ``einops`` (plain reshapes) and
the top-k masks are built in the scores' dtype.

* ``FeedForward`` is the mixed-scale FFN (MSFN): 1×1 ``project_in`` to 2·hidden, 3×3 and 5×5
  depth-wise convs each followed by a ReLU *module* (``relu3``, ``relu5``), first halves and second
  halves concatenated, grouped ``dwconv3x3_1`` / ``dwconv5x5_1`` (2·hidden → hidden) with
  ``relu3_1`` / ``relu5_1``, concat, 1×1 ``project_out``.
* ``Attention`` (TKSA): four top-k branches (⌊C/2⌋, ⌊2C/3⌋, ⌊3C/4⌋, ⌊4C/5⌋) weighted by
  ``attn1``..``attn4``; ``attn_drop`` (p = 0) is constructed but never applied.
* ``subnet`` (MEFC, a mixture of experts): ``OALayer`` predicts per-sample softmax weights over the
  eight ``Operations`` for each of ``steps`` ``OperationLayer`` s of a ``GroupOLs``.
* ``DRSformer``: the 4-level U-Net with ``encoder_level0 = subnet(dim)`` after the embedding and
  ``refinement = subnet(2·dim)`` (no refinement transformer blocks, so no
  ``num_refinement_blocks`` argument); (B, inp_channels, H, W) → (B, out_channels, H, W), H and W
  multiples of 8.

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
    """MSFN: (B, dim, H, W) → (B, dim, H, W) through 3×3 and 5×5 depth-wise paths that exchange halves."""

    def __init__(self, dim, ffn_expansion_factor, bias):
        super(FeedForward, self).__init__()
        hidden = int(dim * ffn_expansion_factor)
        wide = hidden * 2
        self.project_in = nn.Conv2d(dim, wide, kernel_size=1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(wide, wide, kernel_size=3, stride=1, padding=1, groups=wide, bias=bias)
        self.dwconv5x5 = nn.Conv2d(wide, wide, kernel_size=5, stride=1, padding=2, groups=wide, bias=bias)
        self.relu3 = nn.ReLU()
        self.relu5 = nn.ReLU()
        self.dwconv3x3_1 = nn.Conv2d(wide, hidden, kernel_size=3, stride=1, padding=1, groups=hidden, bias=bias)
        self.dwconv5x5_1 = nn.Conv2d(wide, hidden, kernel_size=5, stride=1, padding=2, groups=hidden, bias=bias)
        self.relu3_1 = nn.ReLU()
        self.relu5_1 = nn.ReLU()
        self.project_out = nn.Conv2d(wide, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        x = self.project_in(x)
        a3, b3 = self.relu3(self.dwconv3x3(x)).chunk(2, dim=1)
        a5, b5 = self.relu5(self.dwconv5x5(x)).chunk(2, dim=1)
        first = self.relu3_1(self.dwconv3x3_1(torch.cat([a3, a5], dim=1)))
        second = self.relu5_1(self.dwconv5x5_1(torch.cat([b3, b5], dim=1)))
        return self.project_out(torch.cat([first, second], dim=1))


def _keep_top(attn, keep):
    """``attn`` with every entry outside the ``keep`` largest of its row set to −inf (exactly ``keep`` kept)."""
    mask = torch.zeros_like(attn)
    mask.scatter_(-1, torch.topk(attn, k=keep, dim=-1, largest=True)[1], 1.)
    return torch.where(mask > 0, attn, torch.full_like(attn, float('-inf')))


class Attention(nn.Module):
    """TKSA, channel ("transposed") attention with four top-k branches: (B, dim, H, W) → same."""

    def __init__(self, dim, num_heads, bias):
        super(Attention, self).__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, stride=1, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.attn_drop = nn.Dropout(0.)
        self.attn1 = torch.nn.Parameter(torch.tensor([0.2]), requires_grad=True)
        self.attn2 = torch.nn.Parameter(torch.tensor([0.2]), requires_grad=True)
        self.attn3 = torch.nn.Parameter(torch.tensor([0.2]), requires_grad=True)
        self.attn4 = torch.nn.Parameter(torch.tensor([0.2]), requires_grad=True)

    def forward(self, x):
        b, c, h, w = x.shape
        heads = self.num_heads
        q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        scores = (q @ k.transpose(-2, -1)) * self.temperature
        C = q.shape[2]
        keeps = (int(C / 2), int(C * 2 / 3), int(C * 3 / 4), int(C * 4 / 5))
        branches = [_keep_top(scores, keep).softmax(dim=-1) @ v for keep in keeps]
        out = branches[0] * self.attn1 + branches[1] * self.attn2 + branches[2] * self.attn3 + branches[3] * self.attn4
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


class OperationLayer(nn.Module):
    """Every op of ``Operations`` on x, each scaled by its per-sample weight, concatenated, 1×1 conv + ReLU.

    ``forward(x, weights)``: x (B, C, H, W), weights (B, len(Operations)) → (B, C, H, W).
    """

    def __init__(self, C, stride):
        super(OperationLayer, self).__init__()
        self._ops = nn.ModuleList([OPS[name](C, stride, False) for name in Operations])
        self._out = nn.Sequential(nn.Conv2d(C * len(Operations), C, 1, padding=0, bias=False), nn.ReLU())

    def forward(self, x, weights):
        per_op = weights.transpose(1, 0)
        scaled = [op(x) * w.view([-1, 1, 1, 1]) for w, op in zip(per_op, self._ops)]
        return self._out(torch.cat(scaled, dim=1))


class GroupOLs(nn.Module):
    """1×1 conv + ReLU, then ``steps`` residual ``OperationLayer`` s, step i weighted by weights[:, i, :]."""

    def __init__(self, steps, C):
        super(GroupOLs, self).__init__()
        self.preprocess = ReLUConv(C, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._ops = nn.ModuleList()
        self.relu = nn.ReLU()
        for _ in range(steps):
            self._ops.append(OperationLayer(C, 1))

    def forward(self, s0, weights):
        s0 = self.preprocess(s0)
        for i in range(self._steps):
            s0 = self.relu(self._ops[i](s0, weights[:, i, :]) + s0)
        return s0


class OALayer(nn.Module):
    """Operation weights from the global average: (B, channel, H, W) → logits (B, k, num_ops)."""

    def __init__(self, channel, k, num_ops):
        super(OALayer, self).__init__()
        self.k = k
        self.num_ops = num_ops
        self.output = k * num_ops
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.ca_fc = nn.Sequential(
            nn.Linear(channel, self.output * 2),
            nn.ReLU(),
            nn.Linear(self.output * 2, self.k * self.num_ops),
        )

    def forward(self, x):
        pooled = self.avg_pool(x).view(x.size(0), -1)
        return self.ca_fc(pooled).view(-1, self.k, self.num_ops)


Operations = [
    'sep_conv_1x1',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'sep_conv_7x7',
    'dil_conv_3x3',
    'dil_conv_5x5',
    'dil_conv_7x7',
    'avg_pool_3x3',
]


def _sep(kernel):
    return lambda C, stride, affine: SepConv(C, C, kernel, stride, kernel // 2, affine=affine)


def _dil(kernel):
    return lambda C, stride, affine: DilConv(C, C, kernel, stride, kernel - 1, 2, affine=affine)


OPS = {
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'sep_conv_1x1': _sep(1),
    'sep_conv_3x3': _sep(3),
    'sep_conv_5x5': _sep(5),
    'sep_conv_7x7': _sep(7),
    'dil_conv_3x3': _dil(3),
    'dil_conv_5x5': _dil(5),
    'dil_conv_7x7': _dil(7),
}


class ReLUConvBN(nn.Module):
    """ReLU, conv, BatchNorm (defined, unused by the network)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super(ReLUConvBN, self).__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class ReLUConv(nn.Module):
    """Conv then ReLU (despite the name); ``affine`` is unused."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super(ReLUConv, self).__init__()
        self.op = nn.Sequential(
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.ReLU(inplace=False),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """Dilated depth-wise conv, then 1×1."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super(DilConv, self).__init__()
        self.op = nn.Sequential(
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.op(x)


class ResBlock(nn.Module):
    """relu(x + conv2(relu(conv1(x)))) with depth-wise convs (defined, unused by the network)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super(ResBlock, self).__init__()
        self.conv1 = nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in,
                               bias=False)
        self.conv2 = nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in,
                               bias=False)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class SepConv(nn.Module):
    """Depth-wise conv, 1×1, ReLU, depth-wise conv, 1×1."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super(SepConv, self).__init__()
        self.op = nn.Sequential(
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.op(x)


class subnet(nn.Module):
    """MEFC: ``layer_num`` pairs of (``OALayer``, ``GroupOLs``): (B, dim, H, W) → same."""

    def __init__(self, dim, layer_num=1, steps=4):
        super(subnet, self).__init__()
        self._C = dim
        self.num_ops = len(Operations)
        self._layer_num = layer_num
        self._steps = steps
        self.layers = nn.ModuleList()
        for _ in range(layer_num):
            self.layers += [OALayer(dim, steps, self.num_ops), GroupOLs(steps, dim)]

    def forward(self, x):
        weights = None
        for layer in self.layers:
            if isinstance(layer, OALayer):
                weights = F.softmax(layer(x), dim=-1)
            else:
                x = layer(x, weights)
        return x


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


class DRSformer(nn.Module):
    """DRSformer: (B, inp_channels, H, W) → (B, out_channels, H, W), H and W multiples of 8."""

    def __init__(self,
                 inp_channels=3,
                 out_channels=3,
                 dim=48,
                 num_blocks=[4, 6, 6, 8],
                 heads=[1, 2, 4, 8],
                 ffn_expansion_factor=2.66,
                 bias=False,
                 LayerNorm_type='WithBias'):
        super(DRSformer, self).__init__()

        def stack(n, width, n_heads):
            return nn.Sequential(*[TransformerBlock(dim=width, num_heads=n_heads,
                                                    ffn_expansion_factor=ffn_expansion_factor, bias=bias,
                                                    LayerNorm_type=LayerNorm_type) for _ in range(n)])

        d1, d2, d3, d4 = dim, int(dim * 2), int(dim * 4), int(dim * 8)
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level0 = subnet(dim)
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
        self.refinement = subnet(dim=d2)
        self.output = nn.Conv2d(d2, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, inp_img):
        enc1 = self.encoder_level1(self.encoder_level0(self.patch_embed(inp_img)))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        return self.output(dec1) + inp_img
