"""Dilated depth-wise convolution (``depthwise_conv(..., dilation=d)``): every backend against torch's own
``F.conv2d(x, w, b, padding=d·(K // 2), dilation=d, groups=C)`` and its autograd in float64, float32
rounding, strided inputs, the registered ops, compile, bad dilations, and broken variants that the same
tolerance must reject."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddsa_kernels import depthwise_conv
from ddsa_kernels.testing import naive_depthwise_conv
from ddsa_kernels.ops.depthwise_conv import reference as reference_backend

from extension_expected import cpu_backends
from op_checks import assert_compiled_value_and_grad, assert_thread_count_independent, requiring_grad
from test_depthwise_conv import _inputs, _value_and_grads

F64 = torch.float64
FUSED = cpu_backends("depthwise_conv")  # "cpu" stays when the extension is missing but buildable: it fails
ALL = [*FUSED, "eager"]
DILATIONS = (1, 2, 3)
KERNELS = (1, 3, 5, 7)
TOL64 = dict(rtol=1e-10, atol=1e-10)


def _oracle(x, w, b, d):
    return F.conv2d(x, w, b, padding=d * (w.shape[-1] // 2), dilation=d, groups=x.shape[1])


def _maps(k, d):
    """(H, W): two maps larger than the dilated kernel's reach d·(K // 2) (the second with a wide interior
    for the vectorised loops), one smaller than it on both sides, and one smaller in height only."""
    reach = d * (k // 2)
    small = max(1, reach - 1)
    return [(11, 13), (23, 41), (small, max(1, reach - 2)), (small, 2 * reach + 5)]


CASES = [(d, k, hw) for d in DILATIONS for k in KERNELS for hw in _maps(k, d)]


def _assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for g, e in zip(got, want):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e, **tol)


def _fp32_tol(want):
    """Tolerance for a float32 result against its float64 value: ~1e-6 relative to the largest magnitude."""
    return dict(rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("d,k,hw", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_naive_oracle_matches_torch(d, k, hw):
    x, w, b = _inputs(2, 3, *hw, k)
    torch.testing.assert_close(naive_depthwise_conv(x, w, b, dilation=d), _oracle(x, w, b, d), **TOL64)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("d,k,hw", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("backend", ALL)
def test_float64_values_and_gradients_against_torch(backend, d, k, hw, with_bias):
    x, w, b = _inputs(2, 3, *hw, k, bias=with_bias)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    want = _value_and_grads(lambda *a: _oracle(*a, d), x, w, b, grad)
    got = _value_and_grads(lambda *a: depthwise_conv(*a, dilation=d, backend=backend), x, w, b, grad)
    _assert_all_close(got, want, **TOL64)


@pytest.mark.parametrize("k", (3, 5, 7))
@pytest.mark.parametrize("backend", FUSED)
def test_float32_at_rounding_level(backend, k):
    d = 2
    x, w, b = _inputs(2, 8, 37, 41, k)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    want = _value_and_grads(lambda *a: _oracle(*a, d), x, w, b, grad)
    got = _value_and_grads(lambda *a: depthwise_conv(*a, dilation=d, backend=backend), x.float(), w.float(),
                           b.float(), grad)
    torch32 = _value_and_grads(lambda *a: _oracle(*a, d), x.float(), w.float(), b.float(), grad)
    for g, t, e in zip(got, torch32, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, **_fp32_tol(e))
        # no worse than torch's own float32 convolution, up to a few roundings of the result's scale
        scale = e.abs().max().item()
        assert (g.double() - e).abs().max() <= 4 * (t.double() - e).abs().max() + 1e-6 * scale


@pytest.mark.parametrize("backend", FUSED)
def test_non_contiguous_inputs(backend):
    d, k = 2, 5
    x, w, b = _inputs(2, 4, 12, 14, k)
    want = _oracle(x, w, b, d)
    variants = {
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "every_other_column": torch.stack([x, -x], dim=-1).flatten(-2)[..., ::2],
        "transposed_twice": x.transpose(2, 3).contiguous().transpose(2, 3),
        "channel_slice": torch.cat([-x, x], dim=1)[:, 4:],
    }
    for name, v in variants.items():
        assert not v.is_contiguous(), name
        torch.testing.assert_close(depthwise_conv(v, w, b, dilation=d, backend=backend), want, **TOL64, msg=name)
    # a channel slice of a wider map, and y.sum()'s gradient, which arrives as an expanded (stride 0) tensor
    wide = torch.cat([x, 2 * x], dim=1).requires_grad_(True)
    (g,) = torch.autograd.grad(depthwise_conv(wide[:, 4:], w, b, dilation=d, backend=backend).sum(), wide)
    ref = wide.detach().clone().requires_grad_(True)
    (want_g,) = torch.autograd.grad(_oracle(ref[:, 4:], w, b, d).sum(), ref)
    torch.testing.assert_close(g, want_g, **TOL64)


@pytest.mark.skipif("cpu" not in FUSED, reason="C++ extension not built here on purpose")
def test_cpu_kernel_independent_of_thread_count():
    x, w, _ = _inputs(2, 12, 21, 17, 5, dtype=torch.float32)
    assert_thread_count_independent(lambda *a: depthwise_conv(*a, dilation=3, backend="cpu"),
                                    [x.requires_grad_(True), w.requires_grad_(True)])


# ---- deliberately broken variants: the tolerances above must reject each of them ----------------------


def _ignores_dilation(x, w, b, d):
    return depthwise_conv(x, w, b, dilation=1, backend="eager")


def _padding_k_over_2(x, w, b, d):
    # a kernel that pads K // 2 instead of d·(K // 2) on the top-left and fills up to "same" on the right:
    # every tap reads (d − 1)·(K // 2) pixels too far down and right
    r, reach = w.shape[-1] // 2, d * (w.shape[-1] // 2)
    return F.conv2d(F.pad(x, (r, 2 * reach - r, r, 2 * reach - r)), w, b, dilation=d, groups=x.shape[1])


def _tap_one_pixel_off(x, w, b, d):
    # the tap right of the centre, (K // 2, K // 2 + 1), reads one column further right than it should
    r = w.shape[-1] // 2
    y = _oracle(x, w, b, d)
    tap = w[:, 0, r, r + 1].view(1, -1, 1, 1)
    one = torch.zeros_like(w)
    one[:, 0, r, r + 1] = 1
    right = F.pad(x, (0, 1))[..., 1:]  # right[..., w] = x[..., w + 1], zero past the edge
    return y + tap * (_oracle(right, one, None, d) - _oracle(x, one, None, d))


BROKEN = {"ignores_dilation": _ignores_dilation, "padding_k_over_2": _padding_k_over_2,
          "tap_one_pixel_off": _tap_one_pixel_off}


# the last two maps are smaller than the dilated kernel's reach d·(K // 2)
@pytest.mark.parametrize("d,k,hw", [(2, 3, (11, 13)), (3, 5, (11, 13)), (2, 7, (5, 4)), (2, 5, (3, 3))],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("name", BROKEN)
def test_broken_variants_are_rejected(name, d, k, hw):
    x, w, b = _inputs(2, 3, *hw, k)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    want = _value_and_grads(lambda *a: _oracle(*a, d), x, w, b, grad)
    broken = _value_and_grads(lambda *a: BROKEN[name](*a, d), x, w, b, grad)
    with pytest.raises(AssertionError):
        _assert_all_close(broken, want, **TOL64)
    # also outside the float32 tolerance: the value alone tells them apart
    with pytest.raises(AssertionError):
        torch.testing.assert_close(broken[0], want[0], **_fp32_tol(want[0]))


def test_backward_that_ignores_dilation_is_rejected():
    d, k = 2, 3
    x, w, b = _inputs(2, 3, 9, 10, k)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    _, want_dx, want_dw = _value_and_grads(lambda x_, w_, b_: _oracle(x_, w_, b_, d), x, w, None, g)
    good = reference_backend.backward(g, x, w, d)[:2]
    bad = reference_backend.backward(g, x, w, 1)[:2]
    _assert_all_close(good, (want_dx, want_dw), **TOL64)
    with pytest.raises(AssertionError):
        _assert_all_close(bad, (want_dx, want_dw), **TOL64)


# ---- registration, compile, errors --------------------------------------------------------------------


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_opcheck_of_registered_ops_with_dilation(backend, with_bias):
    x, w, b = requiring_grad(*_inputs(2, 3, 7, 6, 3, bias=with_bias))
    torch.library.opcheck(torch.ops.ddsa.depthwise_conv_fwd.default, (x, w, b, backend, 2))
    torch.library.opcheck(torch.ops.ddsa.depthwise_conv_fwd.default, (x, w, b, backend), {"dilation": 3})
    g = torch.randn_like(x)
    torch.library.opcheck(torch.ops.ddsa.depthwise_conv_bwd.default, (g, x.detach(), w.detach(), backend, 2))


@pytest.mark.parametrize("backend", FUSED)
def test_torch_compile_fullgraph_with_dilation(backend):
    x, w, b = _inputs(1, 4, 9, 8, 5, dtype=torch.float32)
    x.requires_grad_(True)

    assert_compiled_value_and_grad(lambda t: depthwise_conv(t, w, b, dilation=2, backend=backend).sin(), x,
                                   want_fn=lambda t: _oracle(t, w, b, 2).sin())


@pytest.mark.parametrize("dilation,message", [
    (0, "dilation must be an int >= 1, got 0"),
    (-2, "dilation must be an int >= 1, got -2"),
    (2.0, "got 2.0 of type float"),
    (True, "got True of type bool"),
    ((2, 2), r"got \(2, 2\) of type tuple"),
    (None, "got None of type NoneType"),
])
@pytest.mark.parametrize("backend", ["auto", *ALL])
def test_bad_dilation_names_the_problem(backend, dilation, message):
    x, w, b = _inputs(1, 3, 5, 5, 3)
    with pytest.raises(ValueError, match=message):
        depthwise_conv(x, w, b, dilation=dilation, backend=backend)
    with pytest.raises(ValueError, match=message):
        naive_depthwise_conv(x, w, b, dilation=dilation)


def test_bad_dilation_under_autocast_names_the_problem():
    x, w, b = _inputs(1, 3, 5, 5, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="dilation must be"):
        depthwise_conv(x, w, b, dilation=0)


def test_autocast_runs_torch_dilated_convolution():
    x, w, b = _inputs(1, 4, 9, 9, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_conv(x, w, b, dilation=2)
        want = F.conv2d(x, w, b, padding=2, dilation=2, groups=4)
    assert y.dtype == want.dtype and torch.equal(y, want)


@pytest.mark.skipif("cpu" not in FUSED, reason="C++ extension not built here on purpose")
def test_extension_refuses_bad_dilation():
    from ddsa_kernels import _C

    x, w, _ = _inputs(1, 2, 4, 4, 3)
    with pytest.raises(RuntimeError, match="dilation must be an integer >= 1"):
        _C.depthwise_conv_forward_cpu(x, w, None, 0)
    with pytest.raises(RuntimeError, match="dilation must be an integer >= 1"):
        _C.depthwise_conv_backward_cpu(x, x, w, -1)


def test_benchmark_times_dilated_shapes(tmp_path):
    import json

    from ddsa_bench.ops import depthwise_conv as bench_depthwise_conv

    bench_depthwise_conv.main(["--shapes", "1,3,9,8", "1,2,11,10,5,2", "--rounds", "1", "--min-run-time", "0.01",
                               "--threads", str(torch.get_num_threads()), "--out", str(tmp_path)])
    data = json.loads((tmp_path / "depthwise_conv.json").read_text())
    assert [(r["shape"], r["kernel"], r["dilation"]) for r in data["rows"]] == [([1, 3, 9, 8], 3, 1),
                                                                                ([1, 2, 11, 10], 5, 2)]
    for row in data["rows"]:
        assert max(row["max_abs_diff_fwd"].values()) < 1e-5
    md = (tmp_path / "depthwise_conv.md").read_text()
    assert "| 1×3×9×8 | forward |" in md and "| 1×2×11×10 | 5×5 | 2 | forward+backward |" in md
    for bad in ("1,2,11,10,4,2", "1,2,11,10,5", "1,2,11,10,5,0"):
        with pytest.raises(SystemExit):
            bench_depthwise_conv.main(["--shapes", bad, "--out", str(tmp_path)])


@pytest.mark.skipif("cpu" not in FUSED, reason="C++ extension not built here on purpose")
@pytest.mark.parametrize("k,d,grad,fused", [(3, 2, False, True), (5, 2, False, False), (7, 2, False, False),
                                            (5, 2, True, True), (7, 1, False, True), (5, 3, True, True)])
def test_auto_takes_torch_for_dilated_large_kernels_at_inference(k, d, grad, fused):
    """auto: the cpu kernel everywhere except the forward-only dilated 5×5 / 7×7, where torch's is faster."""
    x = torch.randn(1, 4, 12, 13, requires_grad=grad)
    w = torch.randn(4, 1, k, k)
    with torch.profiler.profile() as prof, torch.set_grad_enabled(grad):
        y = depthwise_conv(x, w, dilation=d)
    names = {e.key for e in prof.key_averages()}
    assert ("ddsa::depthwise_conv_fwd" in names) == fused, names
    torch.testing.assert_close(y, F.conv2d(x, w, padding=d * (k // 2), dilation=d, groups=4), rtol=1e-5, atol=1e-5)
