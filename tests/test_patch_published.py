"""``ddsa_kernels.patch`` on networks built as the authors publish them (``tests/published_nets``): every
module of a supported kind is patched, the fused ops really run (counted at the dispatcher), values and
every gradient equal the unpatched twin in float64, and ``unpatch`` restores forward and backward."""
from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import published_nets
from ddsa_kernels import patch, unpatch

from net_checks import assert_same_values_and_grads, net_grads

F64 = torch.float64
FFN_OPS = {"ddsa::depthwise_chain_mlp_fwd", "ddsa::depthwise_chain_fwd", "ddsa::gated_ffn_fwd",
           "ddsa::gated_depthwise_fwd", "ddsa::mixed_scale_ffn_fwd", "ddsa::mixed_scale_ffn_mid_fwd"}
FFN_VARIANT = {"ddsa": "sefn", "drsformer": "mixed_scale", "restormer": "gdfn"}


class DdsaOpCounter(TorchDispatchMode):
    """Counts the ``ddsa::`` custom ops that reach the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name.startswith("ddsa::"):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _net(family: str) -> nn.Module:
    torch.manual_seed(0)
    net = published_nets.build(family, "tiny").to(F64)
    with torch.no_grad():  # branch weights and temperatures off their initial values
        for name, p in net.named_parameters():
            if name.endswith(("attn", "attn1", "attn2", "attn3", "attn4", "temperature")):
                p.uniform_(0.3, 1.7)
    return net


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _expected_calls(family: str, net: nn.Module, x: torch.Tensor) -> Counter[str]:
    """Module calls of each kind in one forward of the unpatched net (forward hooks; the depth-wise convs
    inside a feed-forward are not called once the feed-forward is fused)."""
    arch = published_nets.arch_module(family)
    kinds = {arch.Attention: "attention", arch.LayerNorm: "layer_norm", arch.FeedForward: "feed_forward"}
    ffn_paths = [p for p, m in net.named_modules() if isinstance(m, arch.FeedForward)]
    calls: Counter[str] = Counter()
    handles = []
    for path, m in net.named_modules():
        kind = next((k for cls, k in kinds.items() if type(m) is cls), None)
        if kind is None and _is_depthwise(m) and not any(path.startswith(f + ".") for f in ffn_paths):
            kind = "depthwise_conv"
        if kind is not None:
            handles.append(m.register_forward_hook(lambda mod, i, o, kind=kind: calls.update([kind])))
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return calls


@pytest.mark.parametrize("family", published_nets.FAMILIES)
def test_every_supported_module_is_patched_and_its_fused_op_runs(family):
    net = _net(family).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=F64)
    calls = _expected_calls(family, net, x)
    with torch.no_grad():
        want = net(x)
    # "auto" on CPU resolves to the compiled kernels for every kind (below some map size an op's auto may
    # still take torch's ops: the count below names the backend so that every call must reach a kernel);
    # DRSformer's MEFC is rewritten in plain torch ops, reported as "torch"
    auto = patch(copy.deepcopy(net))
    assert auto.resolved and all(res == (["torch"] if label.startswith("mefc:") else ["cpu"])
                                 for label, res in auto.resolved.items()), auto.resolved
    report = patch(net, backend="cpu")
    assert not report.skipped, str(report)
    assert [(p, m.label) for p, m in report.patched] == [(p, m.label) for p, m in auto.patched]
    kinds = Counter(m.kind for _, m in report.patched)
    arch = published_nets.arch_module(family)
    assert kinds["attention"] == sum(type(m) is arch.Attention for m in net.modules())
    assert kinds["layer_norm"] == sum(type(m) is arch.LayerNorm for m in net.modules())
    assert kinds["feed_forward"] == sum(type(m) is arch.FeedForward for m in net.modules()) > 0
    assert {m.variant for _, m in report.patched if m.kind == "feed_forward"} == {FFN_VARIANT[family]}
    assert kinds["depthwise_conv"] == sum(_is_depthwise(m) for m in net.modules())
    assert kinds["mefc"] == sum(type(m) is getattr(arch, "subnet", None) for m in net.modules())
    with DdsaOpCounter() as counter, torch.no_grad():
        got = net(x)
    ops = counter.counts
    assert ops["ddsa::dual_attention_fwd"] == calls["attention"]
    assert ops["ddsa::channel_norm_fwd"] == calls["layer_norm"]
    assert ops["ddsa::depthwise_conv_fwd"] == calls["depthwise_conv"]
    assert sum(ops[name] for name in FFN_OPS) == calls["feed_forward"]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("family", published_nets.FAMILIES)
def test_float64_values_and_every_gradient_then_unpatch(family):
    net = _net(family).train()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=F64)
    twin = copy.deepcopy(net)
    want = net_grads(net, x)
    report = patch(twin)
    assert report.patched and not report.skipped
    with DdsaOpCounter() as counter:
        got = net_grads(twin, x)
    assert counter.counts["ddsa::dual_attention_bwd"] > 0 and counter.counts["ddsa::channel_norm_bwd"] > 0
    assert_same_values_and_grads(got, want, rtol=1e-9, atol=1e-9)
    restored = unpatch(twin)
    assert len(restored) == len(report.patched)
    with DdsaOpCounter() as counter:
        again = net_grads(twin, x)
    assert not counter.counts
    assert_same_values_and_grads(again, want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- on a GPU
def _cuda_grads(net: nn.Module, x: torch.Tensor):
    out, gx, grads = net_grads(net, x)
    return out.double().cpu(), gx.double().cpu(), {n: g.double().cpu() for n, g in grads.items()}


def _relative_error(a, b) -> float:
    """Largest error of (out, grad x, every grad) of ``a`` against ``b``, relative to each tensor's scale."""
    pairs = [(a[0], b[0]), (a[1], b[1])] + [(a[2][n], b[2][n]) for n in b[2]]
    return max(float((p - q).abs().max()) / max(float(q.abs().max()), 1e-12) for p, q in pairs)


@pytest.mark.gpu
@pytest.mark.parametrize("family", published_nets.FAMILIES)
def test_cuda_model_float32_values_and_gradients(family, monkeypatch):
    # TF32 convolutions would make both runs differ from each other by ~1e-3 for no fault of the kernels
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    net = _net(family).float().cuda().train()
    twin = copy.deepcopy(net)
    report = patch(twin)
    assert report.patched and not report.skipped, str(report)
    assert all(res and "unusable" not in res[0] for res in report.resolved.values()), report.resolved
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)).cuda()
    want = _cuda_grads(net, x)
    with DdsaOpCounter() as counter:
        got = _cuda_grads(twin, x)
    assert counter.counts["ddsa::dual_attention_fwd"] > 0 and counter.counts["ddsa::dual_attention_bwd"] > 0
    assert _relative_error(got, want) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("family", published_nets.FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_model_under_autocast_no_less_accurate_than_unpatched(family, dtype):
    """Under autocast both the patched and the unpatched network round to ``dtype``; measured against the
    float64 CPU network, the patched one's error may not exceed twice the unpatched one's."""
    net = _net(family).train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=F64)
    exact = net_grads(net, x)
    plain = copy.deepcopy(net).float().cuda()
    fused = copy.deepcopy(plain)
    patch(fused)
    errors = []
    for model in (plain, fused):
        with torch.autocast("cuda", dtype=dtype):
            errors.append(_relative_error(_cuda_grads(model, x.float().cuda()), exact))
    assert errors[1] <= 2 * errors[0] + 1e-3, errors
