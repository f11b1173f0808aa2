"""The depth-wise convolution op: every backend against float64 autograd of the naive shifted-sum
formula (itself checked against torch's convolution), registration, compile, module and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddsa_kernels import DepthwiseConv2d, depthwise_conv
from ddsa_kernels.testing import naive_depthwise_conv

from extension_expected import cpu_backends
from op_checks import (assert_compiled_value_and_grad, assert_cpu_auto_order, assert_float32_close_to_float64,
                       assert_thread_count_independent, assert_value_and_grads_match, requiring_grad, value_and_grads)

F64 = torch.float64
FUSED = cpu_backends("depthwise_conv")  # "cpu" stays when the extension is missing but buildable: it fails
ALL = [*FUSED, "eager"]
# (B, C, H, W, K): odd sides, maps narrower than the kernel, one pixel, 1×1 kernels
SHAPES = [(2, 5, 9, 7, 3), (1, 3, 1, 1, 3), (2, 4, 2, 3, 5), (1, 2, 6, 5, 7), (2, 3, 5, 4, 1), (1, 4, 3, 2, 3),
          (1, 6, 17, 33, 3), (3, 2, 4, 11, 5), (1, 2, 4, 3, 3), (2, 3, 1, 8, 3)]


def _inputs(b, c, h, w, k, dtype=F64, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=F64).to(dtype)
    weight = torch.randn(c, 1, k, k, generator=gen, dtype=F64).to(dtype)
    bias_t = torch.randn(c, generator=gen, dtype=F64).to(dtype) if bias else None
    return x, weight, bias_t


def _value_and_grads(fn, x, weight, bias, grad):
    return value_and_grads(fn, (x, weight, bias), grad)


def test_naive_oracle_equals_torch_convolution():
    x, w, b = _inputs(2, 4, 7, 6, 5)
    torch.testing.assert_close(naive_depthwise_conv(x, w, b), F.conv2d(x, w, b, padding=2, groups=4),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", ALL)
def test_float64_values_and_gradients(backend, shape, with_bias):
    x, w, b = _inputs(*shape, bias=with_bias)
    grad = torch.randn(shape[:4], generator=torch.Generator().manual_seed(9), dtype=F64)
    assert_value_and_grads_match(lambda *a: depthwise_conv(*a, backend=backend), naive_depthwise_conv, (x, w, b),
                                 grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", FUSED)
def test_float32_close_to_float64(backend):
    x, w, b = _inputs(2, 8, 19, 23, 3)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    # sums of up to 2·19·23 products for the weight gradient: relative error ~1e-6 of the sum's scale
    assert_float32_close_to_float64(lambda *a: depthwise_conv(*a, backend=backend), naive_depthwise_conv, (x, w, b),
                                    grad)


@pytest.mark.parametrize("backend", FUSED)
def test_strided_and_channels_last_inputs(backend):
    x, w, b = _inputs(2, 6, 9, 10, 3)
    want = naive_depthwise_conv(x, w, b)
    cl = x.contiguous(memory_format=torch.channels_last)
    sliced = torch.cat([x, x], dim=3)[:, :, :, ::2]  # every other column of a wider map
    torch.testing.assert_close(depthwise_conv(cl, w, b, backend=backend), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(depthwise_conv(sliced, w, b, backend=backend),
                               naive_depthwise_conv(sliced.contiguous(), w, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", FUSED)
def test_channel_slice_of_a_larger_map_and_expanded_gradient(backend):
    # the feed-forward blocks convolve chunks of a wider map: per-batch strides larger than C·H·W
    x, w, b = _inputs(3, 4, 6, 7, 3)
    wide = torch.cat([x, 2 * x], dim=1).requires_grad_(True)
    piece = wide[:, 4:]
    assert not piece.is_contiguous()
    y = depthwise_conv(piece, w, b, backend=backend)
    torch.testing.assert_close(y, naive_depthwise_conv(2 * x, w, b), rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(y.sum(), wide)  # y.sum()'s gradient arrives as an expanded (stride 0) tensor
    ref = wide.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad(naive_depthwise_conv(ref[:, 4:], w, b).sum(), ref)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def test_empty_batch():
    x, w, b = _inputs(0, 3, 4, 4, 3)
    for backend in ALL:
        assert depthwise_conv(x, w, b, backend=backend).shape == (0, 3, 4, 4)


@pytest.mark.skipif("cpu" not in FUSED, reason="C++ extension not built")
def test_cpu_kernel_independent_of_thread_count():
    x, w, _ = _inputs(2, 12, 21, 17, 3, dtype=torch.float32)
    assert_thread_count_independent(lambda *a: depthwise_conv(*a, backend="cpu"),
                                    [x.requires_grad_(True), w.requires_grad_(True)])


def test_auto_picks_cpu_kernel_then_eager():
    assert_cpu_auto_order("depthwise_conv", FUSED)


def test_autocast_runs_torch_convolution_in_low_precision():
    x, w, b = _inputs(1, 4, 6, 6, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_conv(x, w, b)
        want = F.conv2d(x, w, b, padding=1, groups=4)
    assert y.dtype == want.dtype and torch.equal(y, want)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck_of_registered_ops(backend, with_bias):
    x, w, b = requiring_grad(*_inputs(2, 3, 5, 6, 3, bias=with_bias))
    torch.library.opcheck(torch.ops.ddsa.depthwise_conv_fwd.default, (x, w, b, backend))
    g = torch.randn_like(x)
    torch.library.opcheck(torch.ops.ddsa.depthwise_conv_bwd.default, (g, x.detach(), w.detach(), backend))


def test_torch_compile_fullgraph_traces_the_op():
    x, w, b = _inputs(1, 4, 8, 8, 3, dtype=torch.float32)
    x.requires_grad_(True)

    assert_compiled_value_and_grad(lambda t: depthwise_conv(t, w, b).sin(), x)


def test_module_is_a_drop_in_conv2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6).double()
    ours = DepthwiseConv2d(6, 5).double()
    assert list(ours.state_dict()) == list(conv.state_dict())
    ours.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 7, 9, dtype=F64)
    torch.testing.assert_close(ours(x), conv(x), rtol=1e-12, atol=1e-12)
    assert "backend='auto'" in repr(ours)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DepthwiseConv2d(4, 4)


@pytest.mark.parametrize("make,message", [
    (lambda: (torch.randn(2, 3, 4), torch.randn(3, 1, 3, 3), None), r"x must have shape \(B, C, H, W\)"),
    (lambda: (torch.randn(1, 3, 4, 4), torch.randn(4, 1, 3, 3), None), r"weight must have shape \(C, 1, K, K\)"),
    (lambda: (torch.randn(1, 3, 4, 4), torch.randn(3, 2, 3, 3), None), r"weight must have shape"),
    (lambda: (torch.randn(1, 3, 4, 4), torch.randn(3, 1, 4, 4), None), r"4×4 kernel"),
    (lambda: (torch.randn(1, 3, 4, 4), torch.randn(3, 1, 9, 9), None), r"9×9 kernel"),
    (lambda: (torch.randn(1, 3, 4, 4), torch.randn(3, 1, 3, 3, dtype=F64), None), r"weight has dtype torch.float64"),
    (lambda: (torch.randn(1, 3, 4, 4), torch.randn(3, 1, 3, 3), torch.randn(4)), r"bias must have shape \(C,\)"),
    (lambda: (torch.ones(1, 3, 4, 4, dtype=torch.int64), torch.ones(3, 1, 3, 3, dtype=torch.int64), None),
     r"x has dtype torch.int64"),
])
def test_bad_inputs_name_the_problem(make, message):
    x, w, b = make()
    with pytest.raises(ValueError, match=message):
        depthwise_conv(x, w, b)


def test_unavailable_backend_for_dtype_is_refused():
    x, w, _ = _inputs(1, 2, 4, 4, 3, dtype=torch.bfloat16)
    if "cpu" not in FUSED:
        pytest.skip("C++ extension not built")
    with pytest.raises(RuntimeError, match="cannot run these tensors"):
        depthwise_conv(x, w, backend="cpu")
