"""``ddsa_kernels.depthwise_chain_mlp`` (1×1 → depth-wise ReLU chain → 1×1): the fused CPU inference kernel
against the float64 oracle (channel contractions around the chain's shifted-sum oracle) over band sizes,
image edges and kernel sizes; the differentiable path against autograd of the oracle; which path
``auto`` takes; input errors; opcheck and torch.compile; the patched SEFN at a size that fuses."""
from __future__ import annotations

import copy
from typing import Optional

import pytest
import torch

from ddsa_kernels import build_info, depthwise_chain_mlp, patch
from ddsa_kernels.testing import eager_depthwise_chain_mlp, naive_depthwise_chain_mlp
from ddsa_kernels.ops.depthwise_chain_mlp import MIN_FUSED_PIXELS

from conv_oracles import chain_mlp_oracle
from extension_expected import cpu_backend_required
from op_checks import (PROJECTION_ERRORS_HEAD, PROJECTION_ERRORS_TAIL, assert_bad_input_named,
                       assert_compiled_inference, assert_low_precision_takes_torch_ops, maps_around_the_fused_threshold,
                       per_thread_count, ran, set_arg)

F64 = torch.float64
HAVE_CPU = cpu_backend_required("depthwise_chain_mlp")  # missing but buildable: the tests run and fail
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="C++ extension not built")


def _inputs(b: int, c: int, h: int, w: int, hidden: int, n: int = 3, k: int = 3, c_out: Optional[int] = None,
            bias: bool = True, dtype: torch.dtype = F64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)

    c_out = c_out or c
    return (rnd(b, c, h, w), rnd(n * hidden, c, 1, 1, scale=c ** -0.5), rnd(n * hidden) if bias else None,
            rnd(hidden, 1, k, k, scale=1 / k), rnd(hidden) if bias else None,
            rnd(c_out, n * hidden, 1, 1, scale=(n * hidden) ** -0.5), rnd(c_out) if bias else None)


def _fused(args, band: int):
    return torch.ops.ddsa.depthwise_chain_mlp_fwd(*args, "cpu", band)


@needs_cpu
@pytest.mark.parametrize("shape,band", [
    ((1, 4, 37, 29, 6, 3, 3), 8),    # rows not a multiple of the band
    ((2, 5, 40, 7, 3, 3, 3), 5),     # several batch images, band smaller than the halo twice over
    ((1, 3, 17, 9, 4, 3, 3), 1),     # one-row bands: every halo row comes from the kept rows
    ((1, 3, 3, 11, 2, 3, 3), 16),    # fewer rows than the halo: the image's own edges everywhere
    ((1, 2, 1, 6, 3, 3, 3), 4),      # a single row
    ((1, 3, 20, 13, 2, 2, 5), 6),    # two links, 5×5
    ((1, 3, 19, 10, 2, 1, 7), 3),    # one link, 7×7
    ((2, 6, 21, 11, 3, 4, 1), 4),    # 1×1 depth-wise kernel: no halo
])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_kernel_matches_the_float64_oracle(shape, band, bias):
    b, c, h, w, hidden, n, k = shape
    args = _inputs(b, c, h, w, hidden, n, k, c_out=c + 1, bias=bias)
    want = naive_depthwise_chain_mlp(*args)
    torch.testing.assert_close(_fused(args, band), want, rtol=1e-12, atol=1e-12)


@needs_cpu
def test_float32_error_is_at_rounding_level():
    args = _inputs(1, 16, 33, 40, 42, seed=1)
    want = naive_depthwise_chain_mlp(*args)
    got = _fused([a.float() if a is not None else None for a in args], 16).double()
    assert float((got - want).abs().max() / want.abs().max()) < 2e-6


@needs_cpu
def test_result_does_not_depend_on_the_thread_count():
    args = _inputs(1, 8, 64, 20, 12, dtype=torch.float32, seed=2)
    one, many = per_thread_count(lambda: _fused(args, 16), (1, max(2, torch.get_num_threads())))
    torch.testing.assert_close(one, many, rtol=1e-6, atol=1e-6)


@needs_cpu
def test_non_contiguous_input():
    args = list(_inputs(2, 6, 18, 12, 4, seed=3))
    wide = torch.randn(2, 12, 18, 12, dtype=F64)
    args[0] = wide[:, ::2]  # every other channel: a strided view
    want = naive_depthwise_chain_mlp(*args)
    torch.testing.assert_close(depthwise_chain_mlp(*args, backend="cpu"), want, rtol=1e-12, atol=1e-12)
    x_cl = args[0].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(depthwise_chain_mlp(x_cl, *args[1:], backend="cpu"), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["auto", "eager", "reference"] + (["cpu"] if HAVE_CPU else []))
def test_gradients_match_autograd_of_the_oracle(backend):
    args = [a.requires_grad_(True) for a in _inputs(2, 4, 9, 7, 3, seed=4)]
    z = depthwise_chain_mlp(*args, backend=backend)
    want = chain_mlp_oracle(*args)  # F.conv2d in a loop written here: not the "reference" backend itself
    torch.testing.assert_close(z, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    got_grads = torch.autograd.grad(z, args, g)
    want_grads = torch.autograd.grad(want, args, g)
    for got, exp in zip(got_grads, want_grads):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10)


def _ran_fused_kernel(fn) -> bool:
    return ran(fn, "depthwise_chain_mlp_fwd")


@needs_cpu
def test_auto_fuses_large_maps_without_gradients_only():
    large, small = maps_around_the_fused_threshold(_inputs, MIN_FUSED_PIXELS)
    with torch.no_grad():
        assert _ran_fused_kernel(lambda: depthwise_chain_mlp(*large))
        assert not _ran_fused_kernel(lambda: depthwise_chain_mlp(*small))
        assert _ran_fused_kernel(lambda: depthwise_chain_mlp(*small, backend="cpu"))  # named: always fused
    x = large[0].clone().requires_grad_(True)
    assert not _ran_fused_kernel(lambda: depthwise_chain_mlp(x, *large[1:]))
    # low precision and autocast take torch's ops, bitwise as the eager baseline
    assert_low_precision_takes_torch_ops(depthwise_chain_mlp, eager_depthwise_chain_mlp, large,
                                         ["depthwise_chain_mlp_fwd"])


@pytest.mark.parametrize("change,message", [
    *PROJECTION_ERRORS_HEAD,
    (set_arg(1, lambda t: t[:-1]), "not a multiple of w_dw"),
    (set_arg(3, torch.zeros(3, 1, 2, 2, dtype=F64)), "2×2 kernel"),
    *PROJECTION_ERRORS_TAIL,
])
def test_bad_inputs_are_named(change, message):
    assert_bad_input_named(depthwise_chain_mlp, _inputs(1, 4, 6, 5, 3), change, message)


@needs_cpu
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck_of_the_registered_op(bias):
    args = _inputs(2, 3, 7, 6, 2, bias=bias)
    torch.library.opcheck(torch.ops.ddsa.depthwise_chain_mlp_fwd.default, (*args, "cpu", 4))


@needs_cpu
def test_torch_compile_fullgraph_traces_the_op():
    assert_compiled_inference(depthwise_chain_mlp, _inputs(1, 4, 130, 128, 3, dtype=torch.float32))


@needs_cpu
def test_patched_sefn_fuses_at_inference_and_equals_the_authors_block():
    from family_arch import SEFN

    torch.manual_seed(0)
    block = SEFN(8, 2.66, bias=True).double().eval()
    fused = copy.deepcopy(block)
    assert patch(fused).counts.get("feed_forward:sefn") == 1
    side = int(MIN_FUSED_PIXELS ** 0.5)
    x = torch.randn(1, 8, side, side + 3, dtype=F64)
    with torch.no_grad():
        assert _ran_fused_kernel(lambda: fused(x))
        torch.testing.assert_close(fused(x), block(x), rtol=1e-10, atol=1e-10)
