"""``ddsa_kernels.patch`` never silently changes a fork whose math differs: size- and mode-dependent
forwards, forwards with extra arguments, a class that overrides ``__call__``; ``verify="first-call"``
catches what the patch-time check cannot see; a compiled model is re-traced after ``patch``."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import published_nets
from ddsa_kernels import patch, unpatch
from ddsa_kernels.patch import attention as attention_rule, patched_kind
from published_nets import forks, idt_ddsa_arch
from test_patch_published import DdsaOpCounter

F64 = torch.float64


def _randomised(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("attn", "attn1", "temperature")):
                p.uniform_(0.3, 1.7)
    return module


def _x(side: int, channels: int = 8, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, side, side + 3, generator=torch.Generator().manual_seed(1))


class LiteralThresholdAttention(forks.WindowedAttention):
    """Mode- and size-dependent with the threshold as a literal in ``forward`` (no attribute says it):
    windows of 48 px in eval mode on images wider than 96 px."""

    def forward(self, x):
        if not self.training and x.shape[-1] > 96:
            return self.windowed(x, 48)
        return self.windowed(x, 10**6)


class BatchDependentAttention(forks.WindowedAttention):
    """Windowed attention (8 px) only for batches of four or more: nothing about the module's attributes,
    sizes or mode shows it, so the patch-time check cannot see it; the first real call does."""

    def forward(self, x):
        return self.windowed(x, 8 if x.shape[0] >= 4 else 10**6)


class ScaledAttention(idt_ddsa_arch.Attention):
    """An extra keyword argument without an extra submodule."""

    def forward(self, x, scale: float = 1.0):
        return super().forward(x) * scale


class CallOverride(idt_ddsa_arch.Attention):
    def __call__(self, x):
        return super().__call__(x) * 2


@pytest.mark.parametrize("make,mode,side,reason", [
    (lambda: forks.WindowedAttention(8, 2, window_size=32), "train", 60, "differs from the fused attention:ddsa"),
    (lambda: forks.EvalWindowedAttention(8, 2, eval_window=64), "eval", 100, "in eval mode"),
    (lambda: LiteralThresholdAttention(8, 2), "eval", 120, "in eval mode"),
    (lambda: ScaledAttention(8, 2, False), "train", 16, "its forward takes (x, scale=1.0)"),
    (lambda: CallOverride(8, 2, False), "train", 16, "CallOverride overrides nn.Module.__call__"),
    (lambda: forks.PriorAttention(8, 2), "train", 16, "unknown submodules ['prior_proj']"),
])
def test_forks_that_differ_are_skipped_with_the_reason(make, mode, side, reason):
    fork = _randomised(make()).train(mode == "train")
    model = nn.Sequential(fork)
    x = _x(side)
    with torch.no_grad():
        want = model(x)
        # the oracle of the claim: at this size and mode the fork really differs from global attention
        if not isinstance(fork, (ScaledAttention, CallOverride, forks.PriorAttention)):
            plain = idt_ddsa_arch.Attention(8, 2, False)
            plain.load_state_dict(fork.state_dict())
            assert (plain(x) - want).abs().max() > 1e-4
    report = patch(model, depthwise_conv=False)
    assert not report.patched and [p for p, _ in report.skipped] == ["0"]
    assert reason in report.skipped[0][1], report.skipped[0][1]
    with torch.no_grad():
        assert torch.equal(model(x), want)


def test_a_network_with_a_prior_attention_still_runs_and_the_rest_is_patched():
    torch.manual_seed(0)
    net = forks.PriorNet(dim=8, num_heads=2)
    img = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        want = net(img)
    report = patch(net)
    kinds = {m.kind for _, m in report.patched}
    assert kinds == {"layer_norm", "feed_forward", "depthwise_conv"}
    assert sorted(p for p, _ in report.skipped) == ["blocks.0.attn", "blocks.1.attn"]
    assert "skipped 2× (blocks.0.attn, blocks.1.attn)" in str(report)
    with torch.no_grad():
        torch.testing.assert_close(net(img), want, rtol=1e-5, atol=1e-6)


def test_first_call_unpatches_a_fork_the_static_check_cannot_see():
    model = nn.Sequential(_randomised(BatchDependentAttention(8, 2)))
    report = patch(model, depthwise_conv=False, verify="first-call")
    assert [m.label for _, m in report.patched] == ["attention:ddsa"]  # the static check passed it
    x = _x(16, batch=4)
    with torch.no_grad():
        want = type(model[0]).forward(model[0], x)
    with pytest.warns(RuntimeWarning, match=r"0 \(attention:ddsa\) differs from its own forward"):
        got = model(x)
    assert patched_kind(model[0]) is None and "forward" not in model[0].__dict__
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_first_call_keeps_a_matching_module_and_then_runs_plain():
    model = nn.Sequential(_randomised(idt_ddsa_arch.Attention(8, 2, False)))
    patch(model, depthwise_conv=False, verify="first-call")
    x = _x(16, batch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train()(x)
        assert model[0].forward.func is not attention_rule.forward  # eval mode not seen yet
        with torch.no_grad():
            model.eval()(x)
    assert model[0].forward.func is attention_rule.forward
    assert patched_kind(model[0]) == "attention:ddsa"
    with DdsaOpCounter() as counter, torch.no_grad():
        model(x)
    assert counter.counts["ddsa::dual_attention_fwd"] == 1


def test_verify_rejects_unknown_values():
    with pytest.raises(ValueError, match="verify must be"):
        patch(nn.Sequential(), verify="always")


def test_patch_of_an_already_compiled_model_retraces_and_unpatch_restores():
    torch.manual_seed(0)
    net = published_nets.build("restormer", "tiny")
    x = torch.randn(1, 3, 16, 16)
    want_out = net(x)
    compiled = torch.compile(net, backend="aot_eager")
    compiled(x)  # traced unpatched
    report = patch(compiled)
    assert report.patched and not report.skipped
    with DdsaOpCounter() as counter:
        out = compiled(x)
    assert counter.counts["ddsa::dual_attention_fwd"] > 0  # the new forwards run, not the stale graph
    torch.testing.assert_close(out, want_out, rtol=1e-4, atol=1e-5)
    F.l1_loss(out, torch.zeros_like(out)).backward()
    unpatch(compiled)
    with DdsaOpCounter() as counter:
        again = compiled(x)
    assert not counter.counts
    torch.testing.assert_close(again, want_out, rtol=1e-5, atol=1e-6)
