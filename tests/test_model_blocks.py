"""Each building block of DDSANet against an independent float64 computation.

The oracles below avoid the library routines the blocks use (no F.layer_norm, no grouped conv,
no topk, no pixel_(un)shuffle): convolutions are written as sums of shifted images, the top-k
mask as a comparison with the k-th largest value of a sorted row.
"""
from __future__ import annotations

import pytest
import torch

from ddsa_model.blocks import (
    DATB, GDFN, SEFN, Downsample, DualSelfAttention, LayerNorm2d, SpatialAttentionGate, Upsample,
)
from ddsa_model.config import DDSAConfig

torch.manual_seed(0)


def _randomize(module: torch.nn.Module, scale: float = 0.5) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-scale, scale)


# -- independent float64 primitives -----------------------------------------------------------
def conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Dense 3×3 convolution, zero padding 1, as a sum of 9 shifted images. weight (O, I, 3, 3)."""
    b, c, h, w = x.shape
    padded = torch.zeros(b, c, h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    out = torch.zeros(b, weight.shape[0], h, w, dtype=x.dtype)
    for dy in range(3):
        for dx in range(3):
            shifted = padded[:, :, dy:dy + h, dx:dx + w]
            out += torch.einsum("oi,bihw->bohw", weight[:, :, dy, dx].to(x.dtype), shifted)
    return out


def depthwise3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depth-wise 3×3 convolution, zero padding 1. weight (C, 1, 3, 3)."""
    b, c, h, w = x.shape
    padded = torch.zeros(b, c, h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    out = torch.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            out += weight[:, 0, dy, dx].to(x.dtype).view(1, c, 1, 1) * padded[:, :, dy:dy + h, dx:dx + w]
    return out


def conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oi,bihw->bohw", weight[:, :, 0, 0].to(x.dtype), x)


def channel_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    c = x.shape[1]
    mean = x.sum(1, keepdim=True) / c
    var = ((x - mean) ** 2).sum(1, keepdim=True) / c
    return (x - mean) / torch.sqrt(var + eps) * weight.double().view(1, -1, 1, 1) + bias.double().view(1, -1, 1, 1)


def dual_attention64(q, k, v, temperature, weights, keeps):
    """q, k, v (B, H, C, N) float64; keeps: per branch None (dense) or k; ties kept (≥ threshold)."""
    qn = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    kn = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    s = torch.einsum("bhcn,bhdn->bhcd", qn, kn) * temperature.double().view(1, -1, 1, 1)
    a = torch.zeros_like(s)
    for w, keep in zip(weights.double(), keeps):
        if keep is None:
            masked = s
        else:
            threshold = s.sort(dim=-1, descending=True).values[..., keep - 1: keep]
            masked = torch.where(s >= threshold, s, torch.tensor(float("-inf"), dtype=s.dtype))
        e = torch.exp(masked - masked.amax(-1, keepdim=True))
        a = a + w * e / e.sum(-1, keepdim=True)
    return torch.einsum("bhcd,bhdn->bhcn", a, v)


# -- tests ------------------------------------------------------------------------------------
def test_layernorm_over_channels_with_bias():
    ln = LayerNorm2d(6)
    _randomize(ln, 1.0)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    expected = channel_layernorm(x.double(), ln.weight, ln.bias)
    torch.testing.assert_close(ln(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["dual", "dense", "sparse"])
def test_dual_self_attention_block(attention):
    channels, heads = 12, 2
    cfg = DDSAConfig(dim=12, heads=(2, 2, 2, 2), attention=attention)
    topk = cfg.topk(channels // heads)
    block = DualSelfAttention(channels, heads, topk, attention_backend="reference")
    _randomize(block)
    with torch.no_grad():
        block.core.temperature.uniform_(0.5, 3.0)
    x = torch.randn(2, channels, 6, 5)
    qkv = depthwise3x3(conv1x1(x.double(), block.qkv.weight), block.qkv_dwconv.weight)
    q, k, v = (t.reshape(2, heads, channels // heads, 30) for t in qkv.split(channels, dim=1))
    attended = dual_attention64(q, k, v, block.core.temperature, block.core.weights, topk)
    expected = conv1x1(attended.reshape(2, channels, 6, 5), block.project_out.weight)
    assert tuple(block.core.weights.shape) == (len(topk),)
    torch.testing.assert_close(block(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_keep_count_is_exact_integer_arithmetic():
    cfg = DDSAConfig()
    for c in range(2, 400):
        assert cfg.keep_count(c) == (c * 7) // 10
    assert cfg.topk(48) == (None, 33) and cfg.topk(96) == (None, 67)


def _bn_eval(y: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return (y - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps) * bn.weight.double() + bn.bias.double()


def spatial_gate64(x: torch.Tensor, gate: SpatialAttentionGate) -> torch.Tensor:
    pooled = torch.cat((x.max(dim=1, keepdim=True).values, x.sum(dim=1, keepdim=True) / x.shape[1]), dim=1)
    return x * torch.sigmoid(_bn_eval(conv3x3(pooled, gate.conv.weight), gate.bn))


def test_spatial_attention_gate_eval():
    gate = SpatialAttentionGate()
    _randomize(gate, 1.0)
    with torch.no_grad():
        gate.bn.running_mean.fill_(0.3)
        gate.bn.running_var.fill_(2.5)
    gate.eval()
    x = torch.randn(3, 5, 6, 7)
    torch.testing.assert_close(gate(x).double(), spatial_gate64(x.double(), gate), rtol=1e-5, atol=1e-6)


def test_spatial_attention_gate_train_uses_batch_stats_and_momentum():
    gate = SpatialAttentionGate(bn_momentum=0.01)
    _randomize(gate, 1.0)
    gate.train()
    x = torch.randn(4, 5, 6, 7)
    x64 = x.double()
    pooled = torch.cat((x64.max(1, keepdim=True).values, x64.mean(1, keepdim=True)), dim=1)
    y = conv3x3(pooled, gate.conv.weight)
    mean, var_biased = y.mean(), y.var(unbiased=False)
    normed = (y - mean) / torch.sqrt(var_biased + gate.bn.eps) * gate.bn.weight.double() + gate.bn.bias.double()
    expected = x64 * torch.sigmoid(normed)
    out = gate(x)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    # running stats: (1 - m)·old + m·batch, with the unbiased variance
    torch.testing.assert_close(gate.bn.running_mean.double(), 0.01 * mean.view(1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gate.bn.running_var.double(), 0.99 + 0.01 * y.var(unbiased=True).view(1), rtol=1e-5, atol=1e-7)
    assert int(gate.bn.num_batches_tracked) == 1


@pytest.mark.parametrize("gated", [True, False])
def test_sefn_shared_depthwise_chain(gated):
    ffn = SEFN(6, 2.66, spatial_gate=gated)
    assert ffn.hidden == int(6 * 2.66) == 15
    _randomize(ffn)
    ffn.eval()
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    d = ffn.dwconv.weight
    x1, x2, x3 = conv1x1(x, ffn.conv_in.weight).split(15, dim=1)
    y1 = depthwise3x3(x1, d).clamp_min(0)
    y2 = depthwise3x3(y1 + x2, d).clamp_min(0)
    y3 = depthwise3x3(y2 + x3, d).clamp_min(0)
    expected = conv1x1(torch.cat((y1, y2, y3), dim=1), ffn.project_out.weight)
    if gated:
        expected = spatial_gate64(expected, ffn.gate)
    assert (ffn.gate is not None) == gated
    torch.testing.assert_close(ffn(x.float()).double(), expected, rtol=1e-4, atol=1e-5)


def test_gdfn():
    ffn = GDFN(6, 2.0)
    _randomize(ffn)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    h = depthwise3x3(conv1x1(x, ffn.project_in.weight), ffn.dwconv.weight)
    x1, x2 = h.split(12, dim=1)
    gelu = 0.5 * x1 * (1 + torch.erf(x1 / 2**0.5))
    expected = conv1x1(gelu * x2, ffn.project_out.weight)
    torch.testing.assert_close(ffn(x.float()).double(), expected, rtol=1e-4, atol=1e-5)


def test_datb_residual_structure():
    block = DATB(8, 2, (None, 2), ffn="sefn", expansion=1.5, attention_backend="reference")
    _randomize(block)
    block.eval()
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        h = x + block.attn(channel_layernorm(x, block.norm1.weight, block.norm1.bias).float()).double()
        expected = h + block.ffn(channel_layernorm(h, block.norm2.weight, block.norm2.bias).float()).double()
        torch.testing.assert_close(block(x.float()).double(), expected, rtol=1e-4, atol=1e-5)


def _pixel_phases(packed, spatial):
    """(packed[:, 4c + 2i + j], spatial[:, c, i::2, j::2]) for every channel c of ``spatial`` and 2×2 phase
    (i, j): the pairs PixelUnshuffle(2) / PixelShuffle(2) make equal, listed from the layout written out here."""
    return [(packed[:, c * 4 + i * 2 + j], spatial[:, c, i::2, j::2])
            for c in range(spatial.shape[1]) for i in range(2) for j in range(2)]


def test_downsample_upsample_layout():
    x = torch.randn(2, 6, 4, 6, dtype=torch.float64)
    # Downsample: conv to 3 channels, then PixelUnshuffle; Upsample: conv to 12 channels, then PixelShuffle
    for block, out_shape, shuffled_out in ((Downsample(6), (2, 12, 2, 3), True), (Upsample(6), (2, 3, 8, 12), False)):
        conv = conv3x3(x, block.conv.weight)  # (2, 3, 4, 6) / (2, 12, 4, 6)
        out = block(x.float()).double()
        assert out.shape == out_shape
        pairs = _pixel_phases(out, conv) if shuffled_out else [(o, c) for c, o in _pixel_phases(conv, out)]
        assert len(pairs) == 12
        for got, want in pairs:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
