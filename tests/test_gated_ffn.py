"""``ddsa_kernels.gated_ffn`` (Restormer's GDFN: 1×1 → depth-wise → GELU gate → 1×1) and its middle
``gated_depthwise``: the banded CPU inference kernel and the fused middle's forward and backward against a
float64 oracle written here (einsum 1×1, shifted-sum depth-wise convolution, erf GELU), itself checked
against Restormer's module structure built from ``nn.Conv2d``; broken variants of the oracle that the same
tolerances must reject; band, halo and kernel-size edge cases; float32 rounding; thread-count
independence; strided inputs; gradients on every backend; which path ``auto`` takes; input errors;
opcheck and torch.compile."""
from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddsa_kernels import gated_depthwise, gated_ffn
from ddsa_kernels.testing import eager_gated_ffn
from ddsa_kernels.ops.gated_ffn import MIN_FUSED_PIXELS

from extension_expected import cpu_backend_required
from op_checks import (PROJECTION_ERRORS_HEAD, PROJECTION_ERRORS_TAIL, assert_bad_input_named, assert_compiled_grads,
                       assert_compiled_inference, assert_low_precision_takes_torch_ops, maps_around_the_fused_threshold,
                       per_thread_count, ran, requiring_grad, set_arg)

F64 = torch.float64
HAVE_CPU = cpu_backend_required("gated_ffn")  # a missing but buildable extension fails, never skips
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="C++ extension not built here on purpose")
BACKENDS = ["auto", "eager", "reference"] + (["cpu"] if HAVE_CPU else [])
TIGHT = dict(rtol=1e-12, atol=1e-12)  # float64 forward
GRAD = dict(rtol=1e-10, atol=1e-10)  # float64 gradients


# ----------------------------------------------------------------------------------------------- the oracle
def _pointwise(x, w, b):
    out = torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], x)
    return out if b is None else out + b[:, None, None]


def _depthwise(u, w, b, shift: int = 0):
    """Σ_ij w[c, i, j] · u[h+i−R, w+j−R] with zero padding, from shifted slices; ``shift`` moves the output
    that many columns (a deliberately broken variant)."""
    k = w.shape[-1]
    r = k // 2
    height, width = u.shape[-2:]
    padded = F.pad(u, (r, r, r, r))
    out = torch.zeros_like(u)
    for i in range(k):
        for j in range(k):
            out = out + w[:, 0, i, j][:, None, None] * padded[..., i:i + height, j:j + width]
    if b is not None:
        out = out + b[:, None, None]
    return torch.roll(out, shift, dims=-1) if shift else out


def _gelu(a, kind: str = "erf"):
    if kind == "tanh":
        return 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
    return 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))


def oracle_middle(u, w_dw, b_dw, *, gelu: str = "erf", swap: bool = False, dw_bias: bool = True, shift: int = 0):
    d = _depthwise(u, w_dw, b_dw if dw_bias else None, shift)
    a, g = d.chunk(2, dim=1)
    if swap:
        a, g = g, a
    return _gelu(a, gelu) * g


def oracle(x, w_in, b_in, w_dw, b_dw, w_out, b_out, **broken):
    return _pointwise(oracle_middle(_pointwise(x, w_in, b_in), w_dw, b_dw, **broken), w_out, b_out)


BROKEN = {"tanh GELU": dict(gelu="tanh"), "swapped halves": dict(swap=True),
          "no dw bias": dict(dw_bias=False), "one-pixel shift": dict(shift=1)}


def _inputs(b: int, c: int, h: int, w: int, hidden: int, k: int = 3, c_out: Optional[int] = None, bias: bool = True,
            dtype: torch.dtype = F64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)

    c_out = c_out or c
    return [rnd(b, c, h, w), rnd(2 * hidden, c, 1, 1, scale=c ** -0.5), rnd(2 * hidden) if bias else None,
            rnd(2 * hidden, 1, k, k, scale=1.5 / k), rnd(2 * hidden) if bias else None,
            rnd(c_out, hidden, 1, 1, scale=hidden ** -0.5), rnd(c_out) if bias else None]


def _banded(args, band: int):
    return torch.ops.ddsa.gated_ffn_fwd(*args, "cpu", band)


def _rejects(got, wrong, **tol) -> bool:
    try:
        torch.testing.assert_close(got, wrong, **tol)
    except AssertionError:
        return True
    return False


class _RestormerFeedForward(nn.Module):
    """Restormer's FeedForward, written from its description: project_in, dwconv, chunk, F.gelu, project_out."""

    def __init__(self, dim: int, factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * factor)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


def _module_args(m: _RestormerFeedForward):
    return (m.project_in.weight, m.project_in.bias, m.dwconv.weight, m.dwconv.bias, m.project_out.weight,
            m.project_out.bias)


@pytest.mark.parametrize("bias", [True, False])
def test_oracle_and_every_backend_equal_the_restormer_module(bias):
    torch.manual_seed(0)
    m = _RestormerFeedForward(6, 2.66, bias).double()
    x = torch.randn(2, 6, 9, 11, dtype=F64)
    want = m(x)
    torch.testing.assert_close(oracle(x, *_module_args(m)), want, **TIGHT)
    for backend in BACKENDS:  # called as a patched module would call it, with and without gradients
        torch.testing.assert_close(gated_ffn(x, *_module_args(m), backend=backend), want, **TIGHT)
        with torch.no_grad():
            torch.testing.assert_close(gated_ffn(x, *_module_args(m), backend=backend), want, **TIGHT)


# -------------------------------------------------------------------------------------- banded inference kernel
@needs_cpu
@pytest.mark.parametrize("shape,band", [
    ((1, 4, 37, 29, 6, 3), 8),    # rows not a multiple of the band
    ((2, 5, 40, 7, 3, 3), 1),     # one-row bands: every halo row comes from the kept rows
    ((1, 3, 17, 9, 4, 5), 3),     # 5×5 with bands narrower than the two halos
    ((1, 3, 19, 10, 2, 7), 2),    # 7×7, band smaller than the halo
    ((1, 3, 2, 11, 2, 5), 16),    # fewer rows than the halo: the image's own edges everywhere
    ((1, 2, 1, 6, 3, 3), 4),      # a single row
    ((1, 2, 5, 1, 3, 3), 2),      # a single column
    ((2, 6, 21, 13, 3, 1), 4),    # 1×1 depth-wise kernel: no halo
    ((3, 2, 11, 17, 5, 3), 64),   # one band per image, odd width
])
@pytest.mark.parametrize("bias", [True, False])
def test_banded_kernel_matches_the_float64_oracle(shape, band, bias):
    b, c, h, w, hidden, k = shape
    args = _inputs(b, c, h, w, hidden, k, c_out=c + 1, bias=bias)
    torch.testing.assert_close(_banded(args, band), oracle(*args), **TIGHT)


@needs_cpu
@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_variants_are_rejected_by_the_same_tolerances(name):
    args = _inputs(1, 4, 23, 19, 5, seed=7)
    got = _banded(args, 4)
    torch.testing.assert_close(got, oracle(*args), **TIGHT)
    assert _rejects(got, oracle(*args, **BROKEN[name]), **TIGHT)
    # the float32 tolerance of test_float32_error_is_at_rounding_level rejects it too
    assert _relative_error(got, oracle(*args, **BROKEN[name])) > 2e-6
    # and so does the gradient tolerance, through the middle op
    u = _pointwise(args[0], args[1], args[2]).requires_grad_(True)
    g = torch.randn(u.shape[0], u.shape[1] // 2, *u.shape[2:], dtype=F64, generator=torch.Generator().manual_seed(1))
    du = torch.autograd.grad(gated_depthwise(u, args[3], args[4], backend="cpu"), u, g)[0]
    torch.testing.assert_close(du, torch.autograd.grad(oracle_middle(u, args[3], args[4]), u, g)[0], **GRAD)
    assert _rejects(du, torch.autograd.grad(oracle_middle(u, args[3], args[4], **BROKEN[name]), u, g)[0], **GRAD)


def _relative_error(got, want) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


@needs_cpu
def test_float32_error_is_at_rounding_level():
    args = _inputs(1, 16, 33, 40, 42, seed=1)
    want = oracle(*args)
    f32 = [a.float() if a is not None else None for a in args]
    assert _relative_error(_banded(f32, 16), want) < 2e-6
    assert _relative_error(gated_ffn(*f32, backend="cpu"), want) < 2e-6
    # torch's own float32 block is no closer
    assert _relative_error(eager_gated_ffn(*f32), want) < 2e-6


@needs_cpu
def test_float32_gelu_over_its_whole_range():
    # a 1×1 depth-wise kernel of ones and g = 1 leave gelu(a) itself
    a = torch.linspace(-12, 12, 100001)
    u = torch.stack([a, torch.ones_like(a)])[None, :, None, :]
    w = torch.ones(2, 1, 1, 1)
    got = gated_depthwise(u, w, None, backend="cpu")[0, 0, 0].double()
    want = 0.5 * a.double() * torch.special.erfc(-a.double() / math.sqrt(2))  # no cancellation in the tail
    rel = (got - want).abs() / want.abs()
    assert float(rel[a.abs() <= 4].max()) < 1e-6
    assert float(rel.max()) < 1e-5  # down to gelu(−12) ≈ −2e-32
    # torch's own float32 GELU is far coarser there: the bound above is not a loose one
    assert float(((F.gelu(a).double() - want).abs() / want.abs())[a.abs() <= 4].max()) > 1e-4
    special = gated_depthwise(torch.tensor([[[[float("nan"), float("inf"), 0.0, -40.0]], [[1.0] * 4]]]), w, None,
                              backend="cpu").flatten()
    assert torch.isnan(special[0]) and special[1] == float("inf") and special[2] == 0 and special[3] == 0


@needs_cpu
def test_result_does_not_depend_on_the_thread_count():
    args = _inputs(2, 8, 64, 20, 12, dtype=torch.float32, seed=2)
    u = _pointwise(args[0], args[1], args[2]).requires_grad_(True)
    g = torch.randn(2, 12, 64, 20, generator=torch.Generator().manual_seed(3))

    def run():
        y = gated_depthwise(u, args[3], args[4], backend="cpu")
        return (_banded(args, 16), y, *torch.autograd.grad(y, u, g))

    results = per_thread_count(run, (1, max(2, torch.get_num_threads()), 3))
    for other in results[1:]:
        torch.testing.assert_close(other[0], results[0][0], rtol=1e-6, atol=1e-6)  # GEMM blocking may differ
        for a, b in zip(other[1:], results[0][1:]):
            assert torch.equal(a, b)


@needs_cpu
def test_weight_gradients_do_not_depend_on_the_thread_count():
    u, w, b = _middle_inputs(2, 7, 31, 17, 3, dtype=torch.float32, seed=4)
    g = torch.randn(2, 7, 31, 17, generator=torch.Generator().manual_seed(5))

    def run():
        leaves = [t.detach().clone().requires_grad_(True) for t in (u, w, b)]
        return torch.autograd.grad(gated_depthwise(*leaves, backend="cpu"), leaves, g)

    grads = per_thread_count(run, (1, max(2, torch.get_num_threads())))
    for a, b_ in zip(*grads):
        assert torch.equal(a, b_)


@needs_cpu
def test_non_contiguous_and_channels_last_input():
    args = _inputs(2, 6, 18, 12, 4, seed=3)
    wide = torch.randn(2, 12, 18, 12, dtype=F64)
    args[0] = wide[:, ::2]  # every other channel: a strided view
    want = oracle(*args)
    torch.testing.assert_close(gated_ffn(*args, backend="cpu"), want, **TIGHT)
    x_cl = args[0].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gated_ffn(x_cl, *args[1:], backend="cpu"), want, **TIGHT)
    # the middle on a channel slice of a larger map, and on a channels-last map
    u = torch.randn(2, 12, 9, 7, dtype=F64)
    w = torch.randn(8, 1, 3, 3, dtype=F64)
    for view in (u[:, 2:10], u[:, :8].contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(gated_depthwise(view, w, None, backend="cpu"), oracle_middle(view, w, None), **TIGHT)


# ------------------------------------------------------------------------------------------------- gradients
def _middle_inputs(b, hidden, h, w, k, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 2 * hidden, h, w, generator=gen, dtype=F64).to(dtype),
            (torch.randn(2 * hidden, 1, k, k, generator=gen, dtype=F64) * 1.5 / k).to(dtype),
            torch.randn(2 * hidden, generator=gen, dtype=F64).to(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_of_every_input_match_autograd_of_the_oracle(backend, bias):
    args = [a.requires_grad_(True) if a is not None else None for a in _inputs(2, 4, 9, 7, 3, bias=bias, seed=4)]
    z = gated_ffn(*args, backend=backend)
    want = oracle(*args)
    torch.testing.assert_close(z, want, **TIGHT)
    leaves = [a for a in args if a is not None]
    g = torch.randn_like(want)
    for got, exp in zip(torch.autograd.grad(z, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(got, exp, **GRAD)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 3, 9, 7, 3), (1, 2, 1, 1, 3), (1, 4, 6, 5, 5), (2, 2, 3, 8, 7), (1, 3, 5, 4, 1),
                                   (1, 2, 1, 9, 3)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False])
def test_gated_depthwise_values_and_gradients(backend, shape, bias):
    u, w, b = _middle_inputs(*shape)
    leaves = [t.requires_grad_(True) for t in ((u, w, b) if bias else (u, w))]
    y = gated_depthwise(*leaves, *([] if bias else [None]), backend=backend)
    want = oracle_middle(*leaves, *([] if bias else [None]))
    torch.testing.assert_close(y, want, **TIGHT)
    g = torch.randn_like(want)
    for got, exp in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(got, exp, **GRAD)


@needs_cpu
def test_float32_gradients_at_rounding_level():
    u, w, b = _middle_inputs(2, 6, 19, 23, 3, seed=6)
    g = torch.randn(2, 6, 19, 23, dtype=F64, generator=torch.Generator().manual_seed(7))
    want_leaves = [t.clone().requires_grad_(True) for t in (u, w, b)]
    want = torch.autograd.grad(oracle_middle(*want_leaves), want_leaves, g)
    leaves = [t.float().requires_grad_(True) for t in (u, w, b)]
    got = torch.autograd.grad(gated_depthwise(*leaves, backend="cpu"), leaves, g.float())
    for a, e in zip(got, want):
        assert a.dtype == torch.float32
        assert _relative_error(a, e) < 5e-6


# ---------------------------------------------------------------------------------------------- dispatching


@needs_cpu
def test_auto_runs_the_kernels_on_large_maps_only():
    side = int(MIN_FUSED_PIXELS ** 0.5)
    large, small = maps_around_the_fused_threshold(_inputs, MIN_FUSED_PIXELS, small_height=side - 1)
    with torch.no_grad():
        assert ran(lambda: gated_ffn(*large), "gated_ffn_fwd")
        assert not ran(lambda: gated_ffn(*small), "ddsa::")  # small maps: torch's ops
        assert torch.equal(gated_ffn(*small), eager_gated_ffn(*small))
        assert ran(lambda: gated_ffn(*small, backend="cpu"), "gated_ffn_fwd")  # named: always the kernels
        u = torch.randn(1, 4, side - 1, side)
        assert not ran(lambda: gated_depthwise(u, large[3]), "ddsa::")
        assert ran(lambda: gated_depthwise(u, large[3], backend="cpu"), "gated_depthwise_fwd")
        assert ran(lambda: gated_depthwise(torch.randn(1, 4, side, side), large[3]), "gated_depthwise_fwd")
    # with gradients: F.conv2d around the fused middle, forward and backward
    x = large[0].clone().requires_grad_(True)
    assert not ran(lambda: gated_ffn(x, *large[1:]), "gated_ffn_fwd")
    assert ran(lambda: gated_ffn(x, *large[1:]).sum().backward(), "gated_depthwise_bwd")
    # low precision and autocast take torch's ops, bitwise as the eager baseline
    assert_low_precision_takes_torch_ops(gated_ffn, eager_gated_ffn, large, ["ddsa::"])


def test_registry_orders():
    from ddsa_kernels._registry import OPS, resolve_backend

    assert OPS["gated_ffn"].auto_order == {"cuda": ("eager",), "cpu": ("cpu", "eager")}
    assert resolve_backend("auto", "cuda", torch.float32, op="gated_ffn") == "eager"
    assert resolve_backend("auto", "cpu", torch.bfloat16, op="gated_ffn") == "eager"
    if HAVE_CPU:
        assert resolve_backend("auto", "cpu", torch.float32, op="gated_ffn") == "cpu"


# --------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change,message", [
    *PROJECTION_ERRORS_HEAD,
    (set_arg(1, lambda t: t[:-1]), "even number"),
    (set_arg(3, lambda t: t[:-2]), "w_dw must have shape"),
    (set_arg(3, torch.zeros(6, 1, 2, 2, dtype=F64)), "2×2 kernel"),
    (set_arg(3, torch.zeros(6, 1, 9, 9, dtype=F64)), "9×9 kernel"),
    *PROJECTION_ERRORS_TAIL,
    (set_arg(1, lambda t: t.to("meta")), "w_in is on meta but x is on cpu"),
])
def test_bad_inputs_are_named(change, message):
    assert_bad_input_named(gated_ffn, _inputs(1, 4, 6, 5, 3), change, message)


def test_bad_middle_inputs_are_named():
    u, w, b = _middle_inputs(1, 3, 5, 4, 3)
    with pytest.raises(ValueError, match="even number"):
        gated_depthwise(u[:, :5], w[:5], b[:5])
    with pytest.raises(ValueError, match="w_dw must have shape"):
        gated_depthwise(u, w[:4], b)
    with pytest.raises(ValueError, match="b_dw must have shape"):
        gated_depthwise(u, w, b[:2])
    with pytest.raises(ValueError, match="u must have shape"):
        gated_depthwise(u[0], w, b)
    if HAVE_CPU:
        with pytest.raises(RuntimeError, match="cannot run these tensors"):
            gated_depthwise(u.bfloat16(), w.bfloat16(), b.bfloat16(), backend="cpu")


# --------------------------------------------------------------------------------------- registration / compile
@needs_cpu
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck_of_the_registered_ops(bias):
    args = _inputs(2, 3, 7, 6, 2, bias=bias)
    torch.library.opcheck(torch.ops.ddsa.gated_ffn_fwd.default, (*args, "cpu", 4))
    u, w, b = _middle_inputs(2, 2, 6, 5, 3)
    u.requires_grad_(True)
    w.requires_grad_(True)
    b = b.requires_grad_(True) if bias else None
    torch.library.opcheck(torch.ops.ddsa.gated_depthwise_fwd.default, (u, w, b, "cpu"))
    g = torch.randn(2, 2, 6, 5, dtype=F64)
    torch.library.opcheck(torch.ops.ddsa.gated_depthwise_bwd.default, (g, u.detach(), w.detach(),
                                                                        None if b is None else b.detach(), "cpu"))


@needs_cpu
def test_torch_compile_fullgraph_inference_and_training():
    assert_compiled_inference(gated_ffn, _inputs(1, 4, 130, 128, 3, dtype=torch.float32))

    def train(x, *weights):  # the fused middle's forward and backward custom ops inside the graph
        return gated_ffn(x, *weights, backend="cpu").sin()

    assert_compiled_grads(train, requiring_grad(*_inputs(2, 3, 9, 8, 2, seed=9)), lambda *a: oracle(*a).sin(), **GRAD)


# --------------------------------------------------------------------------------------------------- benchmark
@needs_cpu
def test_bench_writes_every_method_and_they_agree(tmp_path, one_thread):
    import json

    from ddsa_bench.ops import gated_ffn as bench_gated_ffn

    bench_gated_ffn.main(["--shapes", "1,4,9,7,3", "2,3,8,6,2", "--rounds", "2", "--min-run-time", "0.01",
                          "--out", str(tmp_path), *one_thread])
    data = json.loads((tmp_path / "gated_ffn.json").read_text())
    assert [row["shape"] for row in data["rows"]] == [[1, 4, 9, 7, 3], [2, 3, 8, 6, 2]]
    for row in data["rows"]:
        assert set(row["fwd"]) == {"eager", "middle", "cpu"} and set(row["fwdbwd"]) == {"eager", "middle"}
        assert max(row["max_abs_diff_fwd"].values()) < 1e-5 and max(row["max_abs_diff_grad"].values()) < 1e-5
        assert all(r["median_ms"] > 0 for r in (*row["fwd"].values(), *row["fwdbwd"].values()))
    md = (tmp_path / "gated_ffn.md").read_text()
    assert "| 2×3×8×6, 2·2 hidden |" in md and "### Training step" in md
    with pytest.raises(SystemExit):
        bench_gated_ffn.main(["--shapes", "1,4,9,7", "--out", str(tmp_path)])
