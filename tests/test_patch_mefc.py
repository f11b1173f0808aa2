"""``patch`` on DRSformer's MEFC (the published ``subnet``, from the stand-in of its file): the rewrite without
the concatenation equals the module's own forward and gradients in float64, really drops the concatenation,
keeps exactness where a branch cannot be folded, and leaves alone what it does not recognise."""
from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import published_nets
from ddsa_kernels import patch

from net_checks import assert_same_values_and_grads, net_grads

F64 = torch.float64
drs = published_nets.arch_module("drsformer")


class AtenCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


def _subnet(channels: int = 6, steps: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = drs.subnet(channels, steps=steps).to(F64)
    with torch.no_grad():  # operation weights off their near-uniform start, so a swapped branch shows
        for p in net.parameters():
            p.uniform_(-1.0, 1.0)
    return net


def _x(channels: int = 6, side: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, channels, side, side + 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_values_and_every_gradient_match_the_own_forward():
    net = _subnet()
    want = net_grads(net, _x())
    twin = copy.deepcopy(net)
    report = patch(twin)
    assert report.counts.get("mefc:drsformer") == 1 and not report.skipped, str(report)
    assert report.resolved["mefc:drsformer"] == ["torch"]
    assert_same_values_and_grads(net_grads(twin, _x()), want, rtol=1e-10, atol=1e-10)


def test_the_concatenation_and_the_folded_convolutions_are_gone():
    net = _subnet(steps=2).eval()
    twin = copy.deepcopy(net)
    patch(net, mefc=False)  # the depth-wise convolutions patched in both
    patch(twin)
    with AtenCounter() as plain, torch.no_grad():
        net(_x())
    with AtenCounter() as fused, torch.no_grad():
        twin(_x())
    assert plain.counts["aten::cat"] == 2 and fused.counts["aten::cat"] == 0
    # one product per branch; gone per operation layer: the output 1×1 and the last 1×1 of the 7 conv branches
    assert fused.counts["aten::bmm"] + fused.counts["aten::baddbmm_"] == 2 * len(drs.Operations)
    assert plain.counts["aten::convolution"] - fused.counts["aten::convolution"] == 2 * len(drs.Operations)


def test_a_branch_with_a_biased_last_conv_is_not_folded_and_stays_exact():
    net = _subnet()
    layer = net.layers[1]._ops[0]
    layer._ops[1].op[-1] = nn.Conv2d(6, 6, 1, bias=True).to(F64)  # sep_conv_3x3 ending in a biased 1×1
    layer._out[0] = nn.Conv2d(6 * len(drs.Operations), 6, 1, bias=True).to(F64)  # and a biased output conv
    want = net_grads(net, _x())
    twin = copy.deepcopy(net)
    assert patch(twin).counts.get("mefc:drsformer") == 1
    assert_same_values_and_grads(net_grads(twin, _x()), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("change,reason", [
    (lambda net: setattr(net.layers[1]._ops[0], "_out", nn.Sequential(nn.Conv2d(48, 5, 1), nn.ReLU())),
     "_out[0] is Conv2d(48→5"),
    (lambda net: net.layers.append(nn.Identity()), "not (attention, group) pairs"),
    (lambda net: setattr(net.layers[1]._ops[1], "_out", nn.Sequential(nn.Conv2d(48, 6, 1, bias=False), nn.PReLU())),
     "activation has parameters"),
])
def test_what_it_does_not_recognise_is_skipped_with_the_reason(change, reason):
    net = _subnet()
    change(net)
    report = patch(net)
    assert "mefc:drsformer" not in report.counts
    assert any(path == "" and reason in why for path, why in report.skipped), str(report)


def test_a_changed_forward_fails_the_behaviour_check():
    class Doubled(drs.subnet):  # a fork whose MEFC doubles its output: structure as published, math not
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    report = patch(Doubled(6, steps=2).to(F64))
    assert "mefc:drsformer" not in report.counts
    assert any("differs from the fused mefc:drsformer" in why for _, why in report.skipped), str(report)


def test_mefc_false_leaves_it_alone():
    net = _subnet()
    report = patch(net, mefc=False)
    assert "mefc:drsformer" not in report.counts and "forward" not in net.__dict__
    assert report.counts  # its depth-wise convolutions are still patched
