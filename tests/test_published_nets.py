"""The stand-ins of ``tests/published_nets`` against the fingerprints of the published networks: module
paths and classes, parameter and buffer names and shapes, constructor signatures, seeded outputs; and the
feed-forwards' maths against F.conv2d oracles in float64."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import published_nets as pn
from published_nets import drsformer_arch, forks, idt_ddsa_arch, restormer_arch

from net_checks import mixed_scale_forward

F64 = torch.float64


def _standin_fingerprint(family):
    module = pn.arch_module(family)
    record = {"class": pn.SOURCES[family][1], "kwargs": pn.small_kwargs(family), "signatures": pn.signatures(module),
              **pn.structure(pn.build(family, "small"))}
    return record, pn.load_fingerprint(family)


def _assert_structure_matches(family):
    got, want = _standin_fingerprint(family)
    for key in ("class", "kwargs", "signatures", "modules", "parameters", "buffers"):
        assert got[key] == want[key], f"{family}: {key} differs from the published network's"


def _assert_seeded_outputs_match(family):
    want = pn.load_fingerprint(family)
    assert want["tiny_kwargs"] == pn.tiny_kwargs(family)
    got = pn.seeded_outputs(pn.arch_module(family), pn.SOURCES[family][1], want["tiny_kwargs"])
    for mode in ("train", "eval"):
        torch.testing.assert_close(torch.tensor(got[mode], dtype=F64), torch.tensor(want["tiny_seeded_outputs"][mode],
                                   dtype=F64), rtol=1e-9, atol=1e-10, msg=lambda m: f"{family} {mode}: {m}")


# ----------------------------------------------------------------------------- fingerprints
@pytest.mark.parametrize("family", pn.FAMILIES)
def test_structure_matches_the_published_network(family):
    _assert_structure_matches(family)
    fp = pn.load_fingerprint(family)
    assert fp["family"] == family and fp["source"].startswith(pn.SOURCES[family][2])


@pytest.mark.parametrize("family", pn.FAMILIES)
def test_seeded_outputs_match_the_published_network(family):
    _assert_seeded_outputs_match(family)


def test_fingerprint_rejects_an_extra_relu_module(monkeypatch):
    """Our earlier SEFN had an ``nn.ReLU`` attribute: the structural comparison must catch exactly that."""
    real_init = idt_ddsa_arch.FeedForward.__init__

    @functools.wraps(real_init)  # same signature: only the structure changes
    def init_with_relu(self, dim, ffn_expansion_factor, bias):
        real_init(self, dim, ffn_expansion_factor, bias)
        self.relu = nn.ReLU()

    monkeypatch.setattr(idt_ddsa_arch.FeedForward, "__init__", init_with_relu)
    with pytest.raises(AssertionError, match="modules differs"):
        _assert_structure_matches("ddsa")


def test_fingerprint_rejects_a_missing_refinement0(monkeypatch):
    real_init = idt_ddsa_arch.Restormer.__init__

    @functools.wraps(real_init)
    def init_without(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        del self.refinement0

    monkeypatch.setattr(idt_ddsa_arch.Restormer, "__init__", init_without)
    with pytest.raises(AssertionError, match="modules differs"):
        _assert_structure_matches("ddsa")


def test_fingerprint_rejects_a_changed_default(monkeypatch):
    monkeypatch.setattr(drsformer_arch.subnet.__init__, "__defaults__", (1, 3))
    with pytest.raises(AssertionError, match="signatures differs"):
        _assert_structure_matches("drsformer")


def _sefn_last_linear(self, x):
    x1, x2, x3 = self.conv1x1_in(x).chunk(3, dim=1)
    y1 = F.relu(self.dwconv3x3(x1))
    y2 = F.relu(self.dwconv3x3(y1 + x2))
    return self.SAlayer(self.project_out(torch.cat((y1, y2, self.dwconv3x3(y2 + x3)), dim=1)))


def _msfn_halves_swapped(self, x):
    return mixed_scale_forward(self, x, (("a3", "b3"), ("a5", "b5")))  # published: ("a3", "a5"), ("b3", "b5")


def _gdfn_gate_on_second_half(self, x):
    value, gate = self.dwconv(self.project_in(x)).chunk(2, dim=1)
    return self.project_out(F.gelu(gate) * value)


@pytest.mark.parametrize("family,cls,broken", [
    ("ddsa", idt_ddsa_arch.FeedForward, _sefn_last_linear),
    ("drsformer", drsformer_arch.FeedForward, _msfn_halves_swapped),
    ("restormer", restormer_arch.FeedForward, _gdfn_gate_on_second_half),
])
def test_seeded_outputs_reject_a_changed_feed_forward(monkeypatch, family, cls, broken):
    monkeypatch.setattr(cls, "forward", broken)
    with pytest.raises(AssertionError):
        _assert_seeded_outputs_match(family)


# ----------------------------------------------------------------------------- behavioural facts
def _conv(x, conv):
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _sefn_oracle(ff, x):
    h = ff.dwconv3x3.in_channels
    t = _conv(x, ff.conv1x1_in)
    ys = []
    prev = torch.zeros_like(t[:, :h])
    for i in range(3):
        prev = torch.clamp_min(_conv(t[:, i * h:(i + 1) * h] + (prev if i else 0), ff.dwconv3x3), 0)
        ys.append(prev)
    out = _conv(torch.cat(ys, 1), ff.project_out)
    conv, bn, _ = ff.SAlayer.conv_sa
    pooled = torch.cat([out.amax(1, keepdim=True), out.mean(1, keepdim=True)], 1)
    s = F.conv2d(pooled, conv.weight, padding=1)
    s = (s - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    return out * torch.sigmoid(s * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))


def _randomised(module):
    torch.manual_seed(0)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for b in module.buffers():
            if b.is_floating_point():
                b.copy_(torch.rand_like(b) + 0.5)
    return module


def test_idt_ddsa_feed_forward_is_sefn_with_functional_relu():
    ff = _randomised(idt_ddsa_arch.FeedForward(6, 2.0, True))
    assert [n for n, _ in ff.named_children()] == ["conv1x1_in", "dwconv3x3", "project_out", "SAlayer"]
    assert not any(isinstance(m, (nn.ReLU, nn.GELU, nn.LeakyReLU)) for m in ff.modules())
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    torch.testing.assert_close(ff(x), _sefn_oracle(ff, x), rtol=1e-12, atol=1e-12)
    ff.forward = _sefn_last_linear.__get__(ff)  # the tolerance rejects a one-ReLU change
    assert not torch.allclose(ff(x), _sefn_oracle(ff, x), rtol=1e-6, atol=1e-6)


def _msfn_oracle(ff, x):
    t = _conv(x, ff.project_in)
    r3, r5 = torch.relu(_conv(t, ff.dwconv3x3)), torch.relu(_conv(t, ff.dwconv5x5))
    h = r3.shape[1] // 2
    first = torch.relu(_conv(torch.cat([r3[:, :h], r5[:, :h]], 1), ff.dwconv3x3_1))
    second = torch.relu(_conv(torch.cat([r3[:, h:], r5[:, h:]], 1), ff.dwconv5x5_1))
    return _conv(torch.cat([first, second], 1), ff.project_out)


def test_drsformer_feed_forward_is_mixed_scale_with_relu_modules():
    ff = _randomised(drsformer_arch.FeedForward(6, 2.0, True))
    relus = {n: m for n, m in ff.named_children() if isinstance(m, nn.ReLU)}
    assert list(relus) == ["relu3", "relu5", "relu3_1", "relu5_1"]
    calls = []
    for name, m in relus.items():
        m.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name))
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    torch.testing.assert_close(ff(x), _msfn_oracle(ff, x), rtol=1e-12, atol=1e-12)
    assert sorted(calls) == sorted(relus)
    assert ff.dwconv3x3_1.groups == ff.dwconv3x3_1.out_channels == ff.dwconv3x3_1.in_channels // 2
    ff.forward = _msfn_halves_swapped.__get__(ff)
    assert not torch.allclose(ff(x), _msfn_oracle(ff, x), rtol=1e-6, atol=1e-6)


def test_restormer_feed_forward_is_gdfn_with_functional_gelu():
    ff = _randomised(restormer_arch.FeedForward(6, 2.0, True))
    assert [n for n, _ in ff.named_children()] == ["project_in", "dwconv", "project_out"]
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    t = _conv(_conv(x, ff.project_in), ff.dwconv)
    h = t.shape[1] // 2
    want = _conv(0.5 * t[:, :h] * (1 + torch.erf(t[:, :h] / 2 ** 0.5)) * t[:, h:], ff.project_out)
    torch.testing.assert_close(ff(x), want, rtol=1e-12, atol=1e-12)
    ff.forward = _gdfn_gate_on_second_half.__get__(ff)
    assert not torch.allclose(ff(x), want, rtol=1e-6, atol=1e-6)


def test_drsformer_has_a_level0_subnet_and_a_subnet_refinement():
    net = pn.build("drsformer", "tiny")
    assert isinstance(net.encoder_level0, drsformer_arch.subnet) and isinstance(net.refinement, drsformer_arch.subnet)
    assert [type(m).__name__ for m in net.encoder_level0.layers] == ["OALayer", "GroupOLs"]
    ops = net.encoder_level0.layers[1]._ops[0]._ops
    assert [type(m).__name__ for m in ops] == ["SepConv"] * 4 + ["DilConv"] * 3 + ["AvgPool2d"]
    assert not any(isinstance(m, drsformer_arch.TransformerBlock) for m in net.refinement.modules())


def _dual_oracle(attn, q, k, v):
    """Dense + top-⌊7C/10⌋ attention on (B, C, H, W) q, k, v with a threshold mask found by sorting
    (not topk + scatter): (B, C, H, W)."""
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, attn.num_heads, c // attn.num_heads, h * w) for t in (q, k, v))
    s = (q / q.norm(dim=-1, keepdim=True)) @ (k / k.norm(dim=-1, keepdim=True)).transpose(-2, -1) * attn.temperature
    keep = int(7 * q.shape[2] / 10)
    kth = s.sort(dim=-1, descending=True).values[..., keep - 1:keep]
    sparse = s.masked_fill(s < kth, float("-inf")).softmax(-1)
    return ((s.softmax(-1) @ v) * attn.attn + (sparse @ v) * attn.attn1).reshape(b, c, h, w)


def test_idt_ddsa_attention_dense_plus_top_seven_tenths():
    attn = _randomised(idt_ddsa_arch.Attention(8, 2, True))
    x = torch.randn(2, 8, 5, 6, dtype=F64)
    q, k, v = _conv(_conv(x, attn.qkv), attn.qkv_dwconv).chunk(3, 1)
    torch.testing.assert_close(attn(x), _conv(_dual_oracle(attn, q, k, v), attn.project_out), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- helpers
def test_sizes_and_kwargs():
    assert pn.small_kwargs("ddsa") == {"dim": 16, "num_blocks": [1, 2, 2, 3], "heads": [1, 2, 4, 8],
                                       "ffn_expansion_factor": 2.66, "bias": False, "LayerNorm_type": "WithBias",
                                       "num_refinement_blocks": 1}
    assert "num_refinement_blocks" not in pn.small_kwargs("drsformer")
    assert pn.tiny_kwargs("restormer")["dim"] == 8
    net = pn.build("restormer", "tiny", LayerNorm_type="BiasFree", bias=True)
    assert isinstance(net.encoder_level1[0].norm1.body, restormer_arch.BiasFree_LayerNorm)
    assert net.output.bias is not None
    with pytest.raises(ValueError, match="unknown family 'swin'"):
        pn.build("swin")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        pn.build("ddsa", "huge")


@pytest.mark.parametrize("family", pn.FAMILIES)
def test_arch_spec_loads_by_path_with_the_same_structure(family):
    path, cls = pn.arch_spec(family).rsplit(":", 1)
    module = pn.load_file(path, f"_by_path_{family}")
    by_path = getattr(module, cls)(**pn.tiny_kwargs(family))
    assert pn.structure(by_path) == pn.structure(pn.build(family, "tiny"))
    x = torch.rand(1, 3, 16, 16)
    assert by_path(x).shape == x.shape


# ----------------------------------------------------------------------------- forks
def _fork_pair(cls, dim=8, heads=2, **kwargs):
    """The published attention with random weights and the fork ``cls`` carrying them."""
    base = _randomised(idt_ddsa_arch.Attention(dim, heads, True))
    fork = cls(dim, heads, True, **kwargs).double()
    missing, unexpected = fork.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(m.startswith("prior_proj.") for m in missing)
    return base, fork


def _windowed_oracle(base, x, window):
    """The published module's q, k, v cropped to each window (every window // 2, the last flush with the
    border), the sort-mask attention of each crop, overlaps averaged, project_out."""
    b, c, h, w = x.shape
    q, k, v = _conv(_conv(x, base.qkv), base.qkv_dwconv).chunk(3, 1)
    stride = window // 2
    tops = sorted({*range(0, max(h - window, 0) + 1, stride), max(h - window, 0)})
    lefts = sorted({*range(0, max(w - window, 0) + 1, stride), max(w - window, 0)})
    acc, cnt = torch.zeros(b, c, h, w, dtype=x.dtype), torch.zeros(h, w, dtype=x.dtype)
    for t in tops:
        for l in lefts:
            win = (Ellipsis, slice(t, t + window), slice(l, l + window))
            acc[win] += _dual_oracle(base, q[win], k[win], v[win])
            cnt[win[1:]] += 1
    return _conv(acc / cnt, base.project_out)


def test_windowed_fork_is_global_in_one_window_and_averages_windows_beyond():
    base, fork = _fork_pair(forks.WindowedAttention, window_size=8)
    small = torch.randn(2, 8, 8, 6, dtype=F64)
    torch.testing.assert_close(fork(small), base(small), rtol=1e-12, atol=1e-12)
    large = torch.randn(1, 8, 13, 20, dtype=F64)
    assert forks.window_starts(13, 8, 4) == [0, 4, 5] and forks.window_starts(20, 8, 4) == [0, 4, 8, 12]
    want = _windowed_oracle(base, large, 8)
    torch.testing.assert_close(fork(large), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(base(large), want, rtol=1e-6, atol=1e-6)  # global attention is not the fork


def test_eval_windowed_fork_branches_on_training_and_size():
    base, fork = _fork_pair(forks.EvalWindowedAttention, eval_window=8)
    large = torch.randn(1, 8, 12, 10, dtype=F64)
    small = torch.randn(1, 8, 8, 8, dtype=F64)
    fork.train()
    torch.testing.assert_close(fork(large), base(large), rtol=1e-12, atol=1e-12)
    fork.eval()
    torch.testing.assert_close(fork(small), base(small), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fork(large), _windowed_oracle(base, large, 8), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(fork(large), base(large), rtol=1e-6, atol=1e-6)


def test_prior_fork_adds_a_projection_of_the_prior_to_v():
    base, fork = _fork_pair(forks.PriorAttention, prior_channels=2)
    x = torch.randn(2, 8, 5, 7, dtype=F64)
    prior = torch.randn(2, 2, 5, 7, dtype=F64)
    torch.testing.assert_close(fork(x), base(x), rtol=1e-12, atol=1e-12)
    # the same attention with v shifted: q and k from the published module, v + the projection
    q, k, v = _conv(_conv(x, base.qkv), base.qkv_dwconv).chunk(3, 1)
    want = _conv(_dual_oracle(base, q, k, v + F.conv2d(prior, fork.prior_proj.weight)), base.project_out)
    torch.testing.assert_close(fork(x, prior), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(fork(x), want, rtol=1e-6, atol=1e-6)
    net = forks.PriorNet().double()
    calls = []
    net.blocks[0].attn.register_forward_hook(lambda m, args, out: calls.append(len(args)), with_kwargs=False)
    img = torch.rand(1, 3, 9, 11, dtype=F64)
    assert net(img).shape == img.shape and calls == [2]


def test_swap_attention_keeps_the_weights_and_outputs_below_the_window():
    torch.manual_seed(0)
    net = pn.build("ddsa", "tiny").double().eval()
    x = torch.rand(1, 3, 16, 16, dtype=F64)
    want = net(x)
    forks.swap_attention(net, lambda d, h, b: forks.WindowedAttention(d, h, b, window_size=16))
    assert sum(isinstance(m, forks.WindowedAttention) for m in net.modules()) == 9
    torch.testing.assert_close(net(x), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(net(torch.rand(1, 3, 32, 32, dtype=F64)),
                              pn.build("ddsa", "tiny").double().eval()(torch.rand(1, 3, 32, 32, dtype=F64)))


def test_forks_load_by_path_too():
    module = pn.load_file(pn.HERE / "forks.py", "_forks_by_path")
    net = module.PriorNet()
    assert type(net.blocks[0].attn).__mro__[1].__name__ == "Attention"
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
