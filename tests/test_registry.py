"""The registry's table and the package's namespaces: one spec per op, each op's "reference" a backend of
its own (never the oracle the tests compare it with), "eager" the ``eager_<op>`` baseline, the user API
in ``ddsa_kernels`` and the oracles / baselines in ``ddsa_kernels.testing``; the unfused reference
backends of the three feed-forward ops against their float64 oracles, with broken variants rejected."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ddsa_kernels
from ddsa_kernels import _registry, testing
from ddsa_kernels.ops.gated_ffn import reference as gated_reference
from ddsa_kernels.ops.mixed_scale_ffn import reference as mixed_reference

OPS = ("dual_attention", "channel_norm", "depthwise_conv", "depthwise_chain", "depthwise_chain_mlp", "gated_ffn",
       "mixed_scale_ffn")
TOL = dict(rtol=1e-10, atol=1e-10)


def test_one_spec_per_op_with_a_valid_auto_order_and_fallback():
    assert set(_registry.OPS) == set(OPS)
    for op, spec in _registry.OPS.items():
        assert {"reference", "eager"} <= set(spec.names), op
        assert spec.fallback in spec.names
        for device_type, order in spec.auto_order.items():
            assert order and set(order) <= set(spec.names), (op, device_type)


@pytest.mark.parametrize("op", OPS)
def test_reference_and_eager_backends_are_not_the_oracle(op):
    oracle = getattr(testing, f"naive_{op}")
    reference = _registry.implementation(op, "reference")
    eager = _registry.implementation(op, "eager")
    assert reference.__name__ == f"ddsa_kernels.ops.{op}.reference"
    assert reference.forward is not oracle
    assert eager.forward is getattr(testing, f"eager_{op}")
    assert not _registry.is_fused("eager", op=op)


def test_user_namespace_holds_no_oracles_baselines_or_registry_internals():
    public = set(ddsa_kernels.__all__)
    assert set(OPS) | {"patch", "unpatch", "PatchReport", "available_backends", "build_info",
                       "tune_cpu_memory", "ddsa_topk", "drsformer_topk", "restormer_topk"} <= public
    assert not [n for n in public if n.startswith(("naive_", "eager_", "reference_"))]
    assert not public & {"check_backend_name", "resolve_backend", "is_fused"}
    assert all(hasattr(ddsa_kernels, n) for n in public)
    assert {f"naive_{op}" for op in OPS} | {f"eager_{op}" for op in OPS} <= set(testing.__all__)
    assert all(hasattr(testing, n) for n in testing.__all__)


def _mixed_inputs(ks: tuple[int, int, int, int], bias: bool) -> list:
    gen = torch.Generator().manual_seed(sum(ks) + bias)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    maybe = rnd if bias else (lambda *shape: None)
    h, c = 3, 5
    return [rnd(2, c, 11, 9), rnd(2 * h, c, 1, 1), maybe(2 * h), rnd(2 * h, 1, ks[0], ks[0]), maybe(2 * h),
            rnd(2 * h, 1, ks[1], ks[1]), maybe(2 * h), rnd(h, 2, ks[2], ks[2]), maybe(h),
            rnd(h, 2, ks[3], ks[3]), maybe(h), rnd(4, 2 * h, 1, 1), maybe(4)]


@pytest.mark.parametrize("ks", [(3, 5, 3, 5), (5, 3, 7, 1), (1, 1, 3, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_mixed_scale_reference_backend_matches_the_oracle_with_gradients(ks, bias):
    args = [t if t is None else t.requires_grad_() for t in _mixed_inputs(ks, bias)]
    leaves = [t for t in args if t is not None]
    got = ddsa_kernels.mixed_scale_ffn(*args, backend="reference")
    want = testing.naive_mixed_scale_ffn(*args)
    torch.testing.assert_close(got, want, **TOL)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, b, **TOL)


def test_gated_reference_backend_matches_the_oracle():
    gen = torch.Generator().manual_seed(1)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    args = [rnd(2, 6, 10, 7), rnd(8, 6, 1, 1), rnd(8), rnd(8, 1, 5, 5), rnd(8), rnd(3, 4, 1, 1), None]
    torch.testing.assert_close(ddsa_kernels.gated_ffn(*args, backend="reference"), testing.naive_gated_ffn(*args),
                               **TOL)


def _one_sided_stack(weights, biases):
    """Broken: the smaller kernel padded on one side only, so its taps move one pixel off centre."""
    k = max(w.shape[-1] for w in weights)
    padded = [F.pad(w, [0, k - w.shape[-1], 0, k - w.shape[-1]]) for w in weights]
    bias = [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases)]
    return torch.cat(padded), torch.cat(bias)


def _tanh_gated_forward(u, w_dw, b_dw=None):
    """Broken: the tanh approximation of GELU instead of the exact one."""
    a, g = gated_reference.conv.forward(u, w_dw, b_dw).chunk(2, dim=1)
    return F.gelu(a, approximate="tanh") * g


@pytest.mark.parametrize("module,name,broken,op", [
    (mixed_reference, "_stack", _one_sided_stack, "mixed_scale_ffn"),
    (gated_reference, "gated_forward", _tanh_gated_forward, "gated_ffn"),
])
def test_broken_reference_variants_are_rejected_by_the_same_tolerance(monkeypatch, module, name, broken, op):
    if op == "mixed_scale_ffn":
        args = _mixed_inputs((3, 5, 3, 5), True)
        want = testing.naive_mixed_scale_ffn(*args)
    else:
        gen = torch.Generator().manual_seed(1)
        rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
        args = [rnd(2, 6, 10, 7), rnd(8, 6, 1, 1), rnd(8), rnd(8, 1, 5, 5), rnd(8), rnd(3, 4, 1, 1), None]
        want = testing.naive_gated_ffn(*args)
    op_fn = getattr(ddsa_kernels, op)
    torch.testing.assert_close(op_fn(*args, backend="reference"), want, **TOL)
    monkeypatch.setattr(module, name, broken)
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        torch.testing.assert_close(op_fn(*args, backend="reference"), want, **TOL)
