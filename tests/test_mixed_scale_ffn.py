"""``ddsa_kernels.mixed_scale_ffn`` (DRSformer's mixed-scale feed-forward): the banded CPU inference kernel
and the fused depth-wise middle (forward and backward) against a float64 oracle written here from the
block's formulas; image and band edges, kernel sizes, biases, float32, thread counts, strides; gradients
of every input on every backend; which path ``auto`` takes; input errors; opcheck and torch.compile; and
broken variants of the block that the same tolerance rejects."""
from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F

from ddsa_kernels import mixed_scale_ffn
from ddsa_kernels.testing import eager_mixed_scale_ffn, naive_mixed_scale_ffn
from ddsa_kernels.ops.mixed_scale_ffn import MIN_FUSED_PIXELS, mixed_scale_middle

from extension_expected import cpu_backend_required
from op_checks import (assert_bad_input_named, assert_bench_row, assert_compiled_grads, assert_compiled_inference,
                       assert_low_precision_takes_torch_ops, maps_around_the_fused_threshold, per_thread_count, ran,
                       requiring_grad, set_arg)

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
HAVE_CPU = cpu_backend_required("mixed_scale_ffn")  # a missing but buildable extension fails, never skips
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="C++ extension not built here on purpose")
BACKENDS = ["auto", "eager", "reference"] + (["cpu"] if HAVE_CPU else [])
Tensor = torch.Tensor


def _inputs(b: int, c: int, h: int, w: int, hidden: int, ks=(3, 5, 3, 5), c_out: Optional[int] = None,
            bias: bool = True, dtype: torch.dtype = F64, seed: int = 0) -> list[Optional[Tensor]]:
    """x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)

    k3, k5, k3_1, k5_1 = ks
    c_out = c_out or c
    two_h = 2 * hidden
    maybe = (lambda *shape: rnd(*shape, scale=0.3)) if bias else (lambda *shape: None)
    return [rnd(b, c, h, w), rnd(two_h, c, 1, 1, scale=c ** -0.5), maybe(two_h),
            rnd(two_h, 1, k3, k3, scale=1 / k3), maybe(two_h), rnd(two_h, 1, k5, k5, scale=1 / k5), maybe(two_h),
            rnd(hidden, 2, k3_1, k3_1, scale=1 / k3_1), maybe(hidden),
            rnd(hidden, 2, k5_1, k5_1, scale=1 / k5_1), maybe(hidden),
            rnd(c_out, two_h, 1, 1, scale=two_h ** -0.5), maybe(c_out)]


# ----------------------------------------------------------------------------- the oracle, from the formulas
def _conv(planes: Tensor, taps: Tensor, shift: int = 0) -> Tensor:
    """Σ_ij taps[i, j] · planes[..., y + i − R, x + j − R + shift], zero outside the image: (B, H, W) → (B, H, W)."""
    k = taps.shape[-1]
    r = k // 2
    height, width = planes.shape[-2:]
    pad = r + abs(shift)
    padded = F.pad(planes, (pad, pad, pad, pad))
    out = torch.zeros_like(planes)
    for i in range(k):
        for j in range(k):
            top, left = pad + i - r, pad + j - r + shift
            out = out + taps[i, j] * padded[..., top:top + height, left:left + width]
    return out


def _oracle(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out, *, swap_halves=False,
            far_pairs=False, relu: Callable[[Tensor], Tensor] = torch.relu, shift=0) -> Tensor:
    """The block plane by plane. The keywords break it on purpose: swap_halves chunks the 3×3 branch the
    wrong way round, far_pairs lets output j read channels j and j + h instead of 2j and 2j + 1, relu
    replaces the activations, shift moves the 5×5 branch's first convolution one pixel sideways."""
    two_h = w_in.shape[0]
    h = two_h // 2
    zero = lambda n: torch.zeros(n, dtype=x.dtype)  # noqa: E731
    b_in, b3, b5 = (zero(two_h) if b is None else b for b in (b_in, b3, b5))
    b3_1, b5_1 = (zero(h) if b is None else b for b in (b3_1, b5_1))
    u = torch.einsum("oc,bchw->bohw", w_in[:, :, 0, 0], x) + b_in[:, None, None]
    s3 = [relu(_conv(u[:, c], w3[c, 0]) + b3[c]) for c in range(two_h)]
    s5 = [relu(_conv(u[:, c], w5[c, 0], shift) + b5[c]) for c in range(two_h)]
    first3, second3 = (s3[h:], s3[:h]) if swap_halves else (s3[:h], s3[h:])
    x1, x2 = first3 + s5[:h], second3 + s5[h:]  # cat(x1_3, x1_5), cat(x2_3, x2_5)
    pick = (lambda j: (j, j + h)) if far_pairs else (lambda j: (2 * j, 2 * j + 1))
    p = [relu(sum(_conv(x1[i], w3_1[j, g]) for g, i in enumerate(pick(j))) + b3_1[j]) for j in range(h)]
    q = [relu(sum(_conv(x2[i], w5_1[j, g]) for g, i in enumerate(pick(j))) + b5_1[j]) for j in range(h)]
    m = torch.stack(p + q, dim=1)
    z = torch.einsum("oc,bchw->bohw", w_out[:, :, 0, 0], m)
    return z if b_out is None else z + b_out[:, None, None]


def _fused(args, band: int) -> Tensor:
    return torch.ops.ddsa.mixed_scale_ffn_fwd(*args, "cpu", band)


# ----------------------------------------------------------------------------- values
def test_oracle_equals_the_authors_torch_formulation():
    args = _inputs(2, 3, 9, 8, 3, seed=11)
    torch.testing.assert_close(eager_mixed_scale_ffn(*args), _oracle(*args), **TOL)
    torch.testing.assert_close(naive_mixed_scale_ffn(*args), _oracle(*args), **TOL)


@needs_cpu
@pytest.mark.parametrize("shape,band", [
    ((1, 4, 37, 29, 5), 8),     # rows not a multiple of the band
    ((2, 3, 40, 7, 3), 3),      # several images, a band shorter than the halo (4 rows)
    ((1, 3, 17, 9, 4), 1),      # one-row bands: every halo row is carried over
    ((1, 3, 3, 11, 2), 16),     # fewer rows than the halo: the image's own edges everywhere
    ((1, 2, 1, 6, 3), 4),       # a single row
    ((1, 2, 6, 1, 2), 4),       # a single column
    ((2, 3, 9, 3, 3), 2),       # fewer columns than the 5×5 kernels' reach on either side
    ((1, 5, 23, 13, 1), 7),     # h = 1, odd width
])
@pytest.mark.parametrize("bias", [True, False])
def test_banded_kernel_matches_the_float64_oracle(shape, band, bias):
    b, c, h, w, hidden = shape
    args = _inputs(b, c, h, w, hidden, c_out=c + 1, bias=bias)
    torch.testing.assert_close(_fused(args, band), _oracle(*args), rtol=1e-12, atol=1e-12)


@needs_cpu
@pytest.mark.parametrize("ks", [(3, 5, 5, 3), (1, 7, 3, 1), (7, 1, 1, 7), (5, 5, 5, 5), (1, 1, 1, 1)])
def test_other_kernel_sizes(ks):
    args = _inputs(2, 3, 19, 12, 3, ks=ks, seed=5)
    want = _oracle(*args)
    torch.testing.assert_close(_fused(args, 5), want, rtol=1e-12, atol=1e-12)
    leaves = [a.requires_grad_(True) if a is not None else None for a in args]
    z = mixed_scale_ffn(*leaves, backend="cpu")
    torch.testing.assert_close(z, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(z)
    inputs = [a for a in leaves if a is not None]
    for got, exp in zip(torch.autograd.grad(z, inputs, g), torch.autograd.grad(_oracle(*leaves), inputs, g)):
        torch.testing.assert_close(got, exp, **TOL)


@needs_cpu
def test_float32_error_is_at_rounding_level():
    args = _inputs(1, 16, 33, 40, 21, seed=1)
    want = _oracle(*args)
    args32 = [a.float() if a is not None else None for a in args]
    scale = want.abs().max()
    assert float((_fused(args32, 16).double() - want).abs().max() / scale) < 2e-6
    z = mixed_scale_ffn(*args32, backend="cpu")  # grad mode: the middle op between two F.conv2d
    assert z.dtype == torch.float32
    assert float((z.double() - want).abs().max() / scale) < 2e-6


@needs_cpu
def test_result_does_not_depend_on_the_thread_count():
    args = _inputs(2, 8, 40, 20, 6, dtype=torch.float32, seed=2)
    u = torch.randn(2, 12, 40, 20, generator=torch.Generator().manual_seed(3), requires_grad=True)
    weights = [a.requires_grad_(True) for a in args[3:11]]
    g = torch.randn(2, 12, 40, 20, generator=torch.Generator().manual_seed(4))

    def run():
        with torch.no_grad():
            z = _fused(args, 8)
        m = mixed_scale_middle(u, *weights, backend="cpu")
        return (z, m.detach(), *torch.autograd.grad(m, [u, *weights], g))

    one, many = per_thread_count(run, (1, max(2, torch.get_num_threads())))
    torch.testing.assert_close(one[0], many[0], rtol=1e-6, atol=1e-6)  # the GEMMs' blocking may differ
    for a, b in zip(one[1:], many[1:]):  # the middle: same per-plane work, a fixed reduction order
        assert torch.equal(a, b)


@needs_cpu
def test_non_contiguous_input():
    args = _inputs(2, 6, 18, 12, 4, seed=3)
    args[0] = torch.randn(2, 12, 18, 12, dtype=F64)[:, ::2]  # every other channel: a strided view
    want = _oracle(*args)
    torch.testing.assert_close(mixed_scale_ffn(*args, backend="cpu"), want, rtol=1e-12, atol=1e-12)
    x_cl = args[0].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mixed_scale_ffn(x_cl, *args[1:], backend="cpu"), want, rtol=1e-12, atol=1e-12)
    u = torch.randn(2, 8, 18, 12, dtype=F64).transpose(2, 3).contiguous().transpose(2, 3)  # H and W strides swapped
    torch.testing.assert_close(mixed_scale_middle(u, *args[3:11], backend="cpu"),
                               mixed_scale_middle(u.contiguous(), *args[3:11], backend="eager"), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_of_every_input_match_autograd_of_the_oracle(backend, bias):
    args = [a.requires_grad_(True) if a is not None else None for a in _inputs(2, 3, 9, 7, 3, bias=bias, seed=4)]
    inputs = [a for a in args if a is not None]
    z = mixed_scale_ffn(*args, backend=backend)
    want = _oracle(*args)
    torch.testing.assert_close(z, want, **TOL)
    g = torch.randn_like(want)
    got_grads = torch.autograd.grad(z, inputs, g)
    want_grads = torch.autograd.grad(want, inputs, g)
    assert len(got_grads) == (13 if bias else 7)
    for got, exp in zip(got_grads, want_grads):
        torch.testing.assert_close(got, exp, **TOL)


@needs_cpu
def test_middle_gradcheck():
    args = _inputs(1, 2, 5, 6, 2, seed=6)
    u = torch.randn(1, 4, 5, 6, dtype=F64, requires_grad=True)
    weights = [a.requires_grad_(True) for a in args[3:11]]
    assert torch.autograd.gradcheck(lambda *t: mixed_scale_middle(*t, backend="cpu"), (u, *weights))


# ----------------------------------------------------------------------------- broken variants
BROKEN = {
    "a3/b3 halves swapped": dict(swap_halves=True),
    "pairs j and j + h": dict(far_pairs=True),
    "missing ReLU": dict(relu=lambda t: t),
    "one-pixel shift": dict(shift=1),
}


@needs_cpu
@pytest.mark.parametrize("name", BROKEN)
def test_broken_variants_are_rejected_by_the_same_tolerance(name):
    args = _inputs(1, 4, 12, 11, 4, seed=7)
    good = _oracle(*args)
    bad = _oracle(*args, **BROKEN[name])
    for got in (_fused(args, 4), mixed_scale_ffn(*args, backend="reference")):
        torch.testing.assert_close(got, good, rtol=1e-12, atol=1e-12)
        with pytest.raises(AssertionError):
            torch.testing.assert_close(got, bad, rtol=1e-12, atol=1e-12)
    # the gradients tell them apart too
    leaves = [a.requires_grad_(True) for a in args]
    g = torch.randn_like(good)
    got_dx = torch.autograd.grad(mixed_scale_ffn(*leaves, backend="cpu"), leaves[0], g)[0]
    torch.testing.assert_close(got_dx, torch.autograd.grad(_oracle(*leaves), leaves[0], g)[0], **TOL)
    bad_dx = torch.autograd.grad(_oracle(*leaves, **BROKEN[name]), leaves[0], g)[0]
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got_dx, bad_dx, **TOL)


# ----------------------------------------------------------------------------- dispatch
def _ran(fn, op: str) -> bool:
    return ran(fn, op, suffix=True)


@needs_cpu
def test_auto_takes_the_banded_kernel_for_large_maps_without_gradients_only():
    large, small = maps_around_the_fused_threshold(_inputs, MIN_FUSED_PIXELS)
    with torch.no_grad():
        assert _ran(lambda: mixed_scale_ffn(*large), "mixed_scale_ffn_fwd")
        assert not _ran(lambda: mixed_scale_ffn(*small), "mixed_scale_ffn_fwd")
        assert _ran(lambda: mixed_scale_ffn(*small), "mixed_scale_ffn_mid_fwd")
        assert _ran(lambda: mixed_scale_ffn(*small, backend="cpu"), "mixed_scale_ffn_fwd")  # named: always banded
    x = large[0].clone().requires_grad_(True)
    assert not _ran(lambda: mixed_scale_ffn(x, *large[1:]), "mixed_scale_ffn_fwd")
    assert _ran(lambda: mixed_scale_ffn(x, *large[1:]).sum().backward(), "mixed_scale_ffn_mid_bwd")
    # low precision and autocast take torch's ops (neither kernel), bitwise as the eager baseline
    assert_low_precision_takes_torch_ops(mixed_scale_ffn, eager_mixed_scale_ffn, large,
                                         ["mixed_scale_ffn_fwd", "mixed_scale_ffn_mid_fwd"])


def test_registry_order():
    from ddsa_kernels._registry import OPS, resolve_backend

    assert OPS["mixed_scale_ffn"].auto_order == {"cuda": ("eager",), "cpu": ("cpu", "eager")}
    assert OPS["mixed_scale_ffn"].fallback == "eager"
    assert resolve_backend("auto", "cpu", torch.float32, op="mixed_scale_ffn") == ("cpu" if HAVE_CPU else "eager")
    assert resolve_backend("auto", "cpu", torch.bfloat16, op="mixed_scale_ffn") == "eager"
    assert resolve_backend("auto", "meta", torch.float32, op="mixed_scale_ffn") == "eager"


def test_meta_tensors_take_the_eager_path_and_keep_shapes():
    args = [a.to("meta") for a in _inputs(2, 3, 9, 7, 4, c_out=5, dtype=torch.float32)]
    assert mixed_scale_ffn(*args).shape == (2, 5, 9, 7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_auto_runs_torch_ops_and_matches_the_oracle():
    args = _inputs(2, 3, 9, 7, 4, seed=9)
    got = mixed_scale_ffn(*[a.cuda() for a in args])
    torch.testing.assert_close(got.cpu(), _oracle(*args), **TOL)
    with pytest.raises(RuntimeError, match="cannot run these tensors"):
        mixed_scale_ffn(*[a.cuda() for a in args], backend="cpu")


@pytest.mark.parametrize("change,message", [
    (set_arg(0, lambda t: t[:, :, 0]), "x must have shape"),
    (set_arg(1, lambda t: t[:, :-1]), "w_in must have shape"),
    (set_arg(1, lambda t: t[:-1]), "even number 2h"),
    (set_arg(3, lambda t: t[:-1]), r"w3 must have shape \(6, 1, K, K\)"),
    (set_arg(5, lambda t: torch.zeros(6, 1, 4, 4, dtype=F64)), "w5 has a 4×4 kernel"),
    (set_arg(5, lambda t: torch.zeros(6, 1, 9, 9, dtype=F64)), "w5 has a 9×9 kernel"),
    (set_arg(7, lambda t: t[:, :1]), r"w3_1 must have shape \(3, 2, K, K\)"),
    (set_arg(9, lambda t: t[:, :, :, :-1]), r"w5_1 must have shape \(3, 2, K, K\)"),
    (set_arg(11, lambda t: t[:, :-1]), "w_out must have shape"),
    (set_arg(2, lambda t: t[:-1]), "b_in must have shape"),
    (set_arg(4, lambda t: t[:-1]), "b3 must have shape"),
    (set_arg(6, lambda t: t[:-1]), "b5 must have shape"),
    (set_arg(8, lambda t: t[:-1]), "b3_1 must have shape"),
    (set_arg(10, lambda t: t[:-1]), "b5_1 must have shape"),
    (set_arg(12, lambda t: t[:-1]), "b_out must have shape"),
    (set_arg(7, lambda t: t.float()), "w3_1 has dtype torch.float32 but x has dtype torch.float64"),
    (set_arg(0, lambda t: t.long()), "x has dtype torch.int64"),
    (set_arg(9, lambda t: t.to("meta")), "w5_1 is on meta but x is on cpu"),
    (set_arg(11, "w"), "w_out must be a torch.Tensor"),
])
def test_bad_inputs_are_named(change, message):
    assert_bad_input_named(mixed_scale_ffn, _inputs(1, 4, 6, 5, 3), change, message)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend='cuda' is not a known backend"):
        mixed_scale_ffn(*_inputs(1, 2, 4, 4, 1), backend="cuda")


# ----------------------------------------------------------------------------- registration
@needs_cpu
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck_of_the_registered_ops(bias):
    args = _inputs(2, 3, 7, 6, 2, bias=bias)
    torch.library.opcheck(torch.ops.ddsa.mixed_scale_ffn_fwd.default, (*args, "cpu", 4))
    u = torch.randn(2, 4, 7, 6, dtype=F64, requires_grad=True)
    weights = [a.requires_grad_(True) if a is not None else None for a in args[3:11]]
    torch.library.opcheck(torch.ops.ddsa.mixed_scale_ffn_mid_fwd.default, (u, *weights, "cpu"))
    m = torch.ops.ddsa.mixed_scale_ffn_mid_fwd(u.detach(), *[w.detach() if w is not None else None for w in weights],
                                               "cpu")
    torch.library.opcheck(torch.ops.ddsa.mixed_scale_ffn_mid_bwd.default,
                          (torch.randn_like(m), u.detach(), m, *[w.detach() if w is not None else None for w in weights],
                           "cpu"))


@needs_cpu
def test_torch_compile_fullgraph_inference_and_training():
    assert_compiled_inference(mixed_scale_ffn, _inputs(1, 4, 130, 128, 3, dtype=torch.float32))
    assert_compiled_grads(lambda *a: mixed_scale_ffn(*a).sin(), requiring_grad(*_inputs(2, 3, 9, 8, 2, seed=8)),
                          lambda *a: _oracle(*a).sin(), **TOL)


# ----------------------------------------------------------------------------- benchmark script
def test_bench_writes_every_method(tmp_path, one_thread):
    import json

    from ddsa_bench.ops import mixed_scale_ffn as bench_mixed_scale_ffn

    result = bench_mixed_scale_ffn.main(["--shapes", "1,3,9,7", "2,2,6,5", "--rounds", "2", "--min-run-time",
                                         "0.01", "--out", str(tmp_path), *one_thread])
    data = json.loads((tmp_path / "mixed_scale_ffn.json").read_text())
    assert [r["shape"] for r in data["rows"]] == [[1, 3, 9, 7], [2, 2, 6, 5]] == [r["shape"] for r in result["rows"]]
    methods = {"eager"} | ({"middle", "cpu"} if data["build_info"]["cpu"] == "available" else set())
    one, batch = data["rows"]
    assert one["hidden"] == int(3 * 2.66) and set(one["fwd"]) == methods and "fwdbwd" not in one
    assert set(batch["fwdbwd"]) == methods - {"middle"}
    for row in data["rows"]:
        assert_bench_row(row, methods, "eager")
    md = (tmp_path / "mixed_scale_ffn.md").read_text()
    assert "| 1×3×9×7, 2·7 hidden | inference |" in md and "| 2×2×6×5, 2·5 hidden | forward+backward |" in md
    with pytest.raises(SystemExit):
        bench_mixed_scale_ffn.main(["--shapes", "1,4,9", "--out", str(tmp_path)])


def test_equals_the_published_block_called_with_its_own_parameters():
    family_arch = pytest.importorskip("family_arch")
    msfn_class = getattr(family_arch, "MSFN", None)
    if msfn_class is None:
        pytest.skip("tests/family_arch.py has no MSFN stand-in")
    torch.manual_seed(0)
    for bias in (True, False):
        block = msfn_class(6, 2.66, bias).double().eval()
        params = [block.project_in.weight, block.project_in.bias, block.dwconv3x3.weight, block.dwconv3x3.bias,
                  block.dwconv5x5.weight, block.dwconv5x5.bias, block.dwconv3x3_1.weight, block.dwconv3x3_1.bias,
                  block.dwconv5x5_1.weight, block.dwconv5x5_1.bias, block.project_out.weight, block.project_out.bias]
        x = torch.randn(2, 6, 11, 10, dtype=F64)
        want = block(x)
        for backend in BACKENDS:
            torch.testing.assert_close(mixed_scale_ffn(x, *params, backend=backend), want, **TOL)  # with gradients
            with torch.no_grad():  # "cpu" and "auto": the banded kernel
                torch.testing.assert_close(mixed_scale_ffn(x, *params, backend=backend), want, **TOL)
