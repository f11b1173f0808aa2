"""``ddsa_kernels.patch``: authors'-style networks of the three families, patched vs unpatched."""
from __future__ import annotations

import copy
import io
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddsa_kernels
from ddsa_kernels import PatchReport, patch, unpatch
from ddsa_kernels.patch import patched_kind
import family_arch as fa
from net_checks import assert_same_values_and_grads, mixed_scale_forward, net_grads

patch_module = sys.modules["ddsa_kernels.patch"]
F64 = torch.float64


def _net(family, *, LayerNorm_type="WithBias", bias=False, dtype=F64, seed=0):
    torch.manual_seed(seed)
    net = fa.tiny_net(family, LayerNorm_type=LayerNorm_type, bias=bias).to(dtype)
    with torch.no_grad():  # move the branch weights and temperature off their initial values
        for name, p in net.named_parameters():
            if name.endswith(("attn", "attn1", "attn2", "attn3", "attn4")) or name.endswith("temperature"):
                p.uniform_(0.3, 1.7)
            elif name.endswith(("norm1.body.weight", "norm2.body.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith(("norm1.body.bias", "norm2.body.bias")):
                p.uniform_(-0.5, 0.5)
    return net


FFN_VARIANT = {"ddsa": "sefn", "drsformer": "mixed_scale", "restormer": "gdfn"}


def _want_counts(net, family, ln_kind="layer_norm:with_bias"):
    """Patch counts per kind:variant, from the stand-in's own classes and the convs' attributes."""
    arch = fa.ARCH[family]
    n = lambda cls: sum(type(m) is cls for m in net.modules())  # noqa: E731
    want = {f"attention:{family}": n(arch.Attention), ln_kind: n(arch.LayerNorm),
            f"feed_forward:{FFN_VARIANT[family]}": n(arch.FeedForward)}
    if hasattr(arch, "subnet"):  # DRSformer's MEFC
        want["mefc:drsformer"] = n(arch.subnet)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            k, d = m.kernel_size[0], m.dilation[0]
            label = f"depthwise_conv:{k}x{k}" + (f"/d{d}" if d != 1 else "")
            want[label] = want.get(label, 0) + 1
    return dict(sorted(want.items()))


def _x(batch=2, side=16, dtype=F64, seed=3):
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("family", fa.FAMILIES)
@pytest.mark.parametrize("backend,ln_type,bias", [("reference", "WithBias", False), ("cpu", "BiasFree", True),
                                                  ("cpu", "WithBias", False)])
def test_float64_outputs_and_every_gradient(family, backend, ln_type, bias):
    if backend not in ddsa_kernels.available_backends("cpu", op="dual_attention"):
        pytest.skip(f"backend {backend} not available")
    net = _net(family, LayerNorm_type=ln_type, bias=bias)
    x = _x()
    want = net_grads(net, x)
    report = patch(net, backend=backend)
    ln_kind = "layer_norm:with_bias" if ln_type == "WithBias" else "layer_norm:bias_free"
    assert report.counts == _want_counts(net, family, ln_kind), str(report)
    assert not report.skipped
    got = net_grads(net, x)
    assert_same_values_and_grads(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("family", fa.FAMILIES)
def test_float32_cpu(family):
    net = _net(family, dtype=torch.float32)
    x = _x(dtype=torch.float32)
    want = net_grads(net, x)
    patch(net)  # auto
    assert_same_values_and_grads(net_grads(net, x), want, rtol=2e-4, atol=2e-4)


def _relative_errors(got, exact) -> tuple[float, float, float]:
    """Relative L2 errors of a :func:`net_grads` result: output, d/dx, and all parameter gradients as one vector."""
    def rel(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    num = sum(((got[2][n].double() - g) ** 2).sum() for n, g in exact[2].items())
    den = sum((g ** 2).sum() for g in exact[2].values())
    return rel(got[0], exact[0]), rel(got[1], exact[1]), (num / den).sqrt().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", fa.FAMILIES)
def test_low_precision_error_within_twice_the_unpatched_error(family, dtype):
    """Output, input gradient and parameter gradients of the patched network in float16/bfloat16, against the
    float64 network: the worst relative error over three seeds is at most twice the unpatched network's worst.

    Worst over seeds, not per seed: in the top-k families a score that rounds across a row's k-th largest
    moves an element in or out of a mask, so the low-precision error of one seed is a draw (patched and
    unpatched alike come out 0.4 to 5 times each other per seed), while a systematic loss of precision
    (fp16 accumulation, say) raises every seed's error."""
    worst_plain, worst_fused = [0.0] * 3, [0.0] * 3
    for seed in range(3):
        ref_net = _net(family, seed=seed)
        x = _x(batch=1, seed=seed + 3)
        exact = net_grads(ref_net, x)  # the same float64-drawn output weights, rounded, for every run
        net = copy.deepcopy(ref_net).to(dtype)
        try:
            plain = net_grads(net, x.to(dtype))
        except RuntimeError as exc:  # a CPU kernel missing for this dtype
            pytest.skip(f"{dtype} unsupported on CPU here: {exc}")
        patch(net)
        fused = net_grads(net, x.to(dtype))
        for i, (p, f) in enumerate(zip(_relative_errors(plain, exact), _relative_errors(fused, exact))):
            worst_plain[i], worst_fused[i] = max(worst_plain[i], p), max(worst_fused[i], f)
    for what, p, f in zip(("output", "input gradient", "parameter gradients"), worst_plain, worst_fused):
        assert f <= 2 * p, f"{what}: patched {f:.2e} > 2 × unpatched {p:.2e}"


def test_views_not_copies_and_one_call(monkeypatch):
    net = _net("ddsa")
    patch(net)
    calls = []
    real = patch_module.attention.dual_attention

    def spy(q, k, v, temperature, weights, topk, **kw):
        calls.append((q.untyped_storage().data_ptr(), k.untyped_storage().data_ptr(),
                      v.untyped_storage().data_ptr(), temperature, weights, topk))
        return real(q, k, v, temperature, weights, topk, **kw)

    monkeypatch.setattr(patch_module.attention, "dual_attention", spy)
    attn = net.encoder_level1[0].attn
    attn(torch.randn(1, 8, 6, 7, dtype=F64))
    assert len(calls) == 1
    q_ptr, k_ptr, v_ptr, temperature, weights, topk = calls[0]
    assert q_ptr == k_ptr == v_ptr
    assert temperature is attn.temperature
    assert topk == (None, 8 * 7 // 10)
    assert weights.requires_grad and torch.equal(weights, torch.cat([attn.attn, attn.attn1]))


# ----------------------------------------------------------------------------- state and copies
def test_state_dict_unchanged():
    net = _net("drsformer")
    before = net.state_dict()
    params_before = {n: p for n, p in net.named_parameters()}
    patch(net)
    after = net.state_dict()
    assert list(before) == list(after)
    assert all(before[k].data_ptr() == after[k].data_ptr() and torch.equal(before[k], after[k]) for k in before)
    assert all(p is params_before[n] for n, p in net.named_parameters())


def test_save_load_patch_and_patch_load():
    src = _net("ddsa", seed=1)
    x = _x(batch=1)
    want = src(x)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    # load, then patch
    a = _net("ddsa", seed=5)
    buf.seek(0)
    a.load_state_dict(torch.load(buf))
    patch(a)
    # patch, then load
    b = _net("ddsa", seed=6)
    patch(b)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    torch.testing.assert_close(a(x), want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(b(x), want, rtol=1e-9, atol=1e-10)


def test_torch_save_whole_patched_model():
    net = _net("restormer")
    patch(net, backend="reference")
    x = _x(batch=1)
    want = net(x)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    attn = loaded.latent[0].attn
    assert patched_kind(attn) == "attention:restormer"
    assert attn.forward.args[0] is attn
    assert torch.equal(loaded(x), want)


def test_deepcopy_of_a_patched_model_is_patched_and_independent():
    net = _net("drsformer")
    patch(net)
    x = _x(batch=1)
    want = net(x)
    twin = copy.deepcopy(net)
    kinds = {p: patched_kind(m) for p, m in twin.named_modules() if patched_kind(m)}
    assert len(kinds) == sum(_want_counts(net, "drsformer").values())
    for _, m in twin.named_modules():
        if patched_kind(m):
            assert m.forward.args[0] is m
    torch.testing.assert_close(twin(x), want, rtol=0, atol=0)
    with torch.no_grad():
        twin.latent[0].attn.attn1.add_(1.0)  # an EMA update of the copy must not reach the original
    assert torch.equal(net(x), want)
    assert not torch.equal(twin(x), want)


def test_training_step_equals_unpatched():
    plain = _net("ddsa", bias=True)
    fused = copy.deepcopy(plain)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (plain, fused)]  # built before patching
    patch(fused)
    x, y = _x(seed=7), _x(seed=8)
    for _ in range(2):  # the second step reads the parameters the first one updated
        for m, opt in zip((plain, fused), opts):
            opt.zero_grad()
            F.l1_loss(m(x), y).backward()
            opt.step()
    for (n, p), q in zip(plain.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-10, msg=lambda m: f"{n}: {m}")
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- patch/unpatch bookkeeping
def test_unpatch_restores_bitwise_and_twice_is_harmless():
    net = _net("ddsa")
    x = _x(batch=1)
    want = net(x)
    first = patch(net)
    total = sum(_want_counts(net, "ddsa").values())
    assert len(first.patched) == total and not first.already_patched
    second = patch(net)
    assert not second.patched and len(second.already_patched) == total
    assert "already patched" in str(second)
    restored = unpatch(net)
    assert sorted((p, m.label) for p, m in restored) == sorted((p, m.label) for p, m in first.patched)
    assert all(patched_kind(m) is None and "forward" not in m.__dict__ for m in net.modules())
    assert torch.equal(net(x), want)
    assert unpatch(net) == []


def test_report_fields_and_selection():
    net = _net("ddsa", LayerNorm_type="BiasFree")
    report = patch(net, layer_norm=False, depthwise_conv=False, feed_forward=False,
                   backend={"attention": "reference"})
    want = _want_counts(net, "ddsa", "layer_norm:bias_free")
    assert isinstance(report, PatchReport)
    assert report.counts == {"attention:ddsa": want["attention:ddsa"]}
    assert report.backend == {"attention": "reference", "layer_norm": "auto", "depthwise_conv": "auto",
                              "feed_forward": "auto"}
    assert report.resolved == {"attention:ddsa": ["reference"]}
    assert ("encoder_level1.0.attn", "attention:ddsa") in [(p, m.label) for p, m in report.patched]
    text = str(report)
    assert f"attention:ddsa {want['attention:ddsa']}" in " ".join(text.split())
    report = patch(net, attention=False, depthwise_conv=False, feed_forward=False)
    assert report.counts == {"layer_norm:bias_free": want["layer_norm:bias_free"]}
    report = patch(net, feed_forward=False, backend={"depthwise_conv": "reference"})
    assert report.counts == {"depthwise_conv:3x3": want["depthwise_conv:3x3"]}
    assert report.resolved == {"depthwise_conv:3x3": ["reference"]}
    report = patch(net, backend={"feed_forward": "reference"})
    assert report.counts == {"feed_forward:sefn": want["feed_forward:sefn"]}
    assert report.resolved == {"feed_forward:sefn": ["reference"]}
    with pytest.raises(ValueError, match="not a known backend"):
        patch(net, backend="nonsense")
    with pytest.raises(ValueError, match="backend keys"):
        patch(net, backend={"attn": "auto"})


def test_torch_compile_fullgraph_no_graph_break():
    torch.manual_seed(0)
    net = fa.block_stack("ddsa", dims=(8,), heads=(2,))
    x = torch.randn(1, 3, 8, 8)
    want = net_grads(net, x)
    patch(net)
    explained = torch._dynamo.explain(net)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    assert_same_values_and_grads(net_grads(compiled, x), want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- near-misses
def _single(module):
    return nn.Sequential(module)


@pytest.mark.parametrize("make,reason", [
    (lambda: fa.WrongKernelAttention(8, 2), "qkv is Conv2d"),
    (lambda: fa.FlatTemperatureAttention(8, 2), "temperature has shape (2,)"),
    (lambda: fa.ExtraParamAttention(8, 2), "unknown branch-weight parameters ['attn', 'attn1', 'gamma']"),
    (lambda: fa.ThreeBranchAttention(8, 2), "unknown branch-weight parameters ['attn1', 'attn2', 'attn3']"),
    (lambda: fa.SixTenthsAttention(8, 1), "differs from the fused attention:ddsa computation"),
    (lambda: fa.DropoutAttention(8, 2, p=0.1), "Dropout(p=0.1)"),
    (lambda: fa.LinearQKV(8, 2), "qkv is Linear"),
    (lambda: fa.Eps6LayerNorm(8), "differs from the fused layer_norm:with_bias computation"),
    (lambda: fa.DDSAAttention(3, 3), "keep-count of 0"),
])
def test_near_misses_are_reported_and_left_alone(make, reason):
    torch.manual_seed(0)
    model = _single(make())
    report = patch(model, depthwise_conv=False)
    assert not report.patched
    assert len(report.skipped) == 1
    path, why = report.skipped[0]
    assert path == "0" and reason in why, why
    assert "forward" not in model[0].__dict__
    assert f"  skipped 1× (0): {why}" in str(report).splitlines()


class _OwnForwardConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("make,reason", [
    (lambda: nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6), "stride (2, 2)"),
    (lambda: nn.Conv2d(6, 6, 3, padding=1, dilation=2, groups=6), "padding (1, 1)"),
    (lambda: nn.Conv2d(6, 6, 3, padding=(2, 4), dilation=(1, 2), groups=6), "dilation (1, 2)"),
    (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6, padding_mode="reflect"), "(reflect)"),
    (lambda: nn.Conv2d(6, 6, 3, padding=0, groups=6), "padding (0, 0)"),
    (lambda: nn.Conv2d(6, 6, (3, 5), padding=(1, 2), groups=6), "kernel (3, 5)"),
    (lambda: nn.Conv2d(6, 6, 9, padding=4, groups=6), "kernel (9, 9)"),
    (lambda: _OwnForwardConv(6, 6, 3, padding=1, groups=6), "overrides Conv2d's forward"),
])
def test_depthwise_near_misses_are_reported_and_left_alone(make, reason):
    model = _single(make())
    report = patch(model)
    assert not report.patched and len(report.skipped) == 1
    assert reason in report.skipped[0][1], report.skipped[0][1]
    assert "forward" not in model[0].__dict__


@pytest.mark.parametrize("make,reason", [
    (lambda: fa.LeakySEFN(8), "differs from the fused feed_forward:sefn computation"),
    (lambda: fa.GatelessSEFN(8), "no submodule 'SAlayer'"),
    (lambda: fa.WideOutSEFN(8), "project_out is Conv2d(32→8"),
    (lambda: fa.LastLinearSEFN(8, 2.0, False), "differs from the fused feed_forward:sefn computation"),
])
def test_sefn_near_misses_are_reported_and_left_alone(make, reason):
    torch.manual_seed(0)
    model = _single(make())
    report = patch(model, depthwise_conv=False)
    assert not report.patched and len(report.skipped) == 1
    assert report.skipped[0][0] == "0" and reason in report.skipped[0][1], report.skipped[0][1]
    assert "forward" not in model[0].__dict__


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_sefn_with_bias_and_5x5_kernel_patched_exactly(backend):
    if backend not in ddsa_kernels.available_backends("cpu", op="depthwise_chain"):
        pytest.skip(f"backend {backend} not available")
    torch.manual_seed(0)
    model = _single(fa.Kernel5SEFN(6)).double()
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    want = net_grads(model, x)
    report = patch(model, depthwise_conv=False, backend=backend)
    assert report.counts == {"feed_forward:sefn": 1} and not report.skipped
    assert_same_values_and_grads(net_grads(model, x), want, rtol=1e-9, atol=1e-10)
    assert [(p, m.label) for p, m in unpatch(model)] == [("0", "feed_forward:sefn")]


def _hook_calls(*modules):
    calls = []
    for m in modules:
        m.register_forward_hook(lambda mod, inp, out: calls.append(mod))
    return calls


def test_authors_gate_runs_with_amax_and_keeps_its_conv():
    """The authors' gate is computed in the patched forward with amax (no torch.max with indices): SAlayer's
    own forward (and hooks on it) no longer run, its conv_sa does; values and gradients are unchanged."""
    torch.manual_seed(0)
    model = _single(fa.SEFN(6, 2.0, False)).double()
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    want = net_grads(model, x)
    report = patch(model)
    assert report.counts["feed_forward:sefn"] == 1 and not report.skipped
    gate_calls = _hook_calls(model[0].SAlayer)
    conv_calls = _hook_calls(model[0].SAlayer.conv_sa)
    with torch.profiler.profile() as prof:
        got = net_grads(model, x)
    names = {e.key for e in prof.key_averages()}
    assert "aten::amax" in names and "aten::max" not in names
    assert not gate_calls and len(conv_calls) == 1
    assert_same_values_and_grads(got, want, rtol=1e-9, atol=1e-10)


def test_a_forked_gate_is_run_as_it_is():
    torch.manual_seed(0)
    model = _single(fa.MeanFirstGateSEFN(6)).double()
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    want = net_grads(model, x)
    report = patch(model)
    assert report.counts["feed_forward:sefn"] == 1 and not report.skipped  # the rest of the block is fused
    gate_calls = _hook_calls(model[0].SAlayer)
    assert_same_values_and_grads(net_grads(model, x), want, rtol=1e-9, atol=1e-10)
    assert len(gate_calls) == 1  # ... and the fork's own gate ran


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_depthwise_convs_patched_exactly(kernel, dilation, backend):
    if backend not in ddsa_kernels.available_backends("cpu", op="depthwise_conv"):
        pytest.skip(f"backend {backend} not available")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(5, 5, kernel, padding="same", dilation=dilation, groups=5, bias=True), nn.GELU(),
                          nn.Conv2d(5, 5, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=5,
                                    bias=False)).double()
    x = torch.randn(2, 5, 7, 6, dtype=F64)
    want = net_grads(model, x)
    report = patch(model, backend=backend)
    label = f"depthwise_conv:{kernel}x{kernel}" + (f"/d{dilation}" if dilation > 1 and kernel > 1 else "")
    assert report.counts == {label: 2}
    assert_same_values_and_grads(net_grads(model, x), want, rtol=1e-9, atol=1e-10)


def test_unrelated_modules_are_not_reported():
    class ConvBody(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.body(x)

    model = nn.Sequential(ConvBody(), fa.Downsample(8), nn.LayerNorm(8), nn.MultiheadAttention(8, 2),
                          nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    report = patch(model)
    assert not report.patched and not report.skipped and not report.already_patched


def test_handled_exactly_dropout_zero_and_bias_free():
    torch.manual_seed(0)
    model = nn.Sequential(fa.LayerNorm(8, "BiasFree"), fa.DRSformerAttention(8, 2, bias=True)).double()
    assert model[1].attn_drop.p == 0
    x = torch.randn(2, 8, 5, 6, dtype=F64)
    want = net_grads(model, x)
    report = patch(model)
    assert report.counts == {"attention:drsformer": 1, "depthwise_conv:3x3": 1, "layer_norm:bias_free": 1}
    assert_same_values_and_grads(net_grads(model, x), want, rtol=1e-9, atol=1e-10)


def test_verify_false_skips_only_the_behaviour_check():
    model = _single(fa.SixTenthsAttention(8, 1))
    report = patch(model, verify=False, depthwise_conv=False)
    assert report.counts == {"attention:ddsa": 1}


def test_independent_official_ddsa_oracle_is_patched_exactly():
    from official_arch import OfficialDDSA

    torch.manual_seed(0)
    net = OfficialDDSA(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4)).double()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("attn", "attn1", "temperature")):
                p.uniform_(0.3, 1.7)
    net.eval()  # its SALayer's BatchNorm: running statistics, so both passes see the same function
    x = _x(batch=1)
    want = net_grads(net, x)
    report = patch(net, backend="reference")
    # depth-wise: 9 attention qkv_dwconv, 9 SEFN dwconv3x3 (no longer called once their SEFN is patched)
    assert report.counts == {"attention:ddsa": 9, "depthwise_conv:3x3": 18, "feed_forward:sefn": 9,
                             "layer_norm:with_bias": 18}
    assert not report.skipped
    assert_same_values_and_grads(net_grads(net, x), want, rtol=1e-9, atol=1e-10)


def test_distributed_data_parallel_single_process(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        plain = _net("restormer")
        fused = copy.deepcopy(plain)
        patch(fused)
        ddp = nn.parallel.DistributedDataParallel(fused)
        x, y = _x(seed=7), _x(seed=8)
        for m in (plain, ddp):
            F.l1_loss(m(x), y).backward()
        for (n, p), q in zip(plain.named_parameters(), fused.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-10, msg=lambda m: f"{n}: {m}")
    finally:
        dist.destroy_process_group()


class _TanhGDFN(fa.GDFN):
    """GDFN with the tanh approximation of GELU: one activation off."""

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1, approximate="tanh") * x2)


class _ExtraConvGDFN(fa.GDFN):
    def __init__(self, dim):
        super().__init__(dim, 2.0, False)
        self.extra = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return super().forward(x) + self.extra(x)


class _SwappedMSFN(fa.MSFN):
    """DRSformer's feed-forward with the two scales' second halves swapped into the other branch."""

    def forward(self, x):
        return mixed_scale_forward(self, x, (("a3", "b5"), ("b3", "a5")))  # published: ("a3", "a5"), ("b3", "b5")


@pytest.mark.parametrize("make,reason", [
    (lambda: _TanhGDFN(8, 2.0, False), "differs from the fused feed_forward:gdfn computation"),
    (lambda: _ExtraConvGDFN(8), "unknown submodule 'extra' (Conv2d) with parameters or buffers"),
    (lambda: _SwappedMSFN(8, 2.0, False), "differs from the fused feed_forward:mixed_scale computation"),
])
def test_feed_forward_near_misses_are_reported_and_left_alone(make, reason):
    torch.manual_seed(0)
    model = _single(make())
    x = torch.randn(1, 8, 9, 10)
    with torch.no_grad():
        want = model(x)
    report = patch(model, depthwise_conv=False)
    assert not report.patched and len(report.skipped) == 1
    assert report.skipped[0][0] == "0" and reason in report.skipped[0][1], report.skipped[0][1]
    with torch.no_grad():
        assert torch.equal(model(x), want)


@pytest.mark.parametrize("make", [lambda: fa.GDFN(8, 2.66, True), lambda: fa.MSFN(8, 2.66, True)])
def test_published_feed_forwards_with_bias_patched_exactly(make):
    torch.manual_seed(0)
    model = _single(make()).double()
    x = torch.randn(2, 8, 7, 9, dtype=F64)
    want = net_grads(model, x)
    report = patch(model, depthwise_conv=False, backend="cpu")
    assert len(report.patched) == 1 and not report.skipped
    assert_same_values_and_grads(net_grads(model, x), want, rtol=1e-9, atol=1e-10)
