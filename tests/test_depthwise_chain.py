"""The depth-wise ReLU chain op (SEFN's y_i = relu(d(y_{i-1} + x_i))): every backend against float64
autograd of the naive chain (itself checked against a chain of torch convolutions written here),
registration, compile, thread-count independence, the model's SEFN and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddsa_kernels import depthwise_chain
from ddsa_kernels.testing import naive_depthwise_chain

from extension_expected import cpu_backends
from op_checks import (assert_compiled_value_and_grad, assert_cpu_auto_order, assert_float32_close_to_float64,
                       assert_thread_count_independent, assert_value_and_grads_match, value_and_grads)

F64 = torch.float64
FUSED = cpu_backends("depthwise_chain")  # "cpu" stays when the extension is missing but buildable: it fails
ALL = [*FUSED, "eager"]
# (B, n, C, H, W, K): SEFN's n = 3, other chain lengths, odd sides, one-pixel and one-row maps, K 1 to 7
SHAPES = [(2, 3, 5, 9, 7, 3), (1, 3, 4, 1, 1, 3), (2, 2, 3, 6, 5, 5), (1, 1, 2, 4, 3, 3), (2, 4, 3, 5, 4, 1),
          (1, 3, 2, 6, 5, 7), (1, 3, 6, 17, 33, 3), (2, 3, 2, 1, 8, 3)]


def _inputs(b, n, c, h, w, k, dtype=F64, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n * c, h, w, generator=gen, dtype=F64).to(dtype)
    weight = torch.randn(c, 1, k, k, generator=gen, dtype=F64).to(dtype)
    bias_t = torch.randn(c, generator=gen, dtype=F64).to(dtype) if bias else None
    return x, weight, bias_t


def _value_and_grads(fn, x, weight, bias, grad):
    return value_and_grads(fn, (x, weight, bias), grad)


def _torch_chain(x, w, b):
    """SEFN as IDT-DDSA writes it (three groups), with torch's convolution."""
    c, k = w.shape[0], w.shape[-1]
    d = lambda t: F.conv2d(t, w, b, padding=k // 2, groups=c)  # noqa: E731
    x1, x2, x3 = x.chunk(3, dim=1)
    y1 = F.relu(d(x1))
    y2 = F.relu(d(y1 + x2))
    y3 = F.relu(d(y2 + x3))
    return torch.cat([y1, y2, y3], dim=1)


def test_naive_oracle_equals_the_authors_chain_of_torch_convolutions():
    x, w, b = _inputs(2, 3, 4, 7, 6, 5)
    grad = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    for got, want in zip(_value_and_grads(naive_depthwise_chain, x, w, b, grad),
                         _value_and_grads(_torch_chain, x, w, b, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", ALL)
def test_float64_values_and_gradients(backend, shape, with_bias):
    x, w, b = _inputs(*shape, bias=with_bias)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    assert_value_and_grads_match(lambda *a: depthwise_chain(*a, backend=backend), naive_depthwise_chain, (x, w, b),
                                 grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", FUSED)
def test_float32_close_to_float64(backend):
    x, w, b = _inputs(2, 3, 8, 19, 23, 3)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    # three chained convolutions, weight gradients summed over 3·2·19·23 products
    assert_float32_close_to_float64(lambda *a: depthwise_chain(*a, backend=backend), naive_depthwise_chain, (x, w, b),
                                    grad)


@pytest.mark.parametrize("backend", FUSED)
def test_relu_boundary_and_nan_follow_torch(backend):
    # zero pre-activations (ReLU's gradient at 0 is 0 in torch) and a NaN that spreads through the chain
    x, w, _ = _inputs(1, 3, 2, 5, 6, 3)
    x[:, 2:4] = 0.0  # group 2 of the chain gets y1 + 0
    zero_w = w.clone()
    zero_w[1] = 0.0  # channel 1: every pre-activation is exactly 0
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    want = _value_and_grads(_torch_chain, x, zero_w, None, grad)
    got = _value_and_grads(lambda *a: depthwise_chain(*a, backend=backend), x, zero_w, None, grad)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(got[0][:, 1::2]) == 0 and torch.count_nonzero(got[1][:, 1::2]) == 0
    x_nan = x.clone()
    x_nan[0, 0, 2, 3] = float("nan")
    with torch.no_grad():
        torch.testing.assert_close(depthwise_chain(x_nan, w, backend=backend), _torch_chain(x_nan, w, None),
                                   rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("backend", FUSED)
def test_channel_slice_and_channels_last_inputs(backend):
    # SEFN's input is a whole conv output, but any strides must work: a channel slice of a wider map
    # (per-batch stride larger than n·C·H·W) and a channels-last copy
    x, w, b = _inputs(2, 3, 4, 6, 7, 3)
    wide = torch.cat([x, x[:, :5]], dim=1)[:, :12]
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    want = _value_and_grads(naive_depthwise_chain, x, w, b, grad)
    for variant in (wide, x.contiguous(memory_format=torch.channels_last)):
        got = _value_and_grads(lambda *a: depthwise_chain(*a, backend=backend), variant, w, b, grad)
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_empty_batch():
    x, w, b = _inputs(0, 3, 3, 4, 4, 3)
    for backend in ALL:
        assert depthwise_chain(x, w, b, backend=backend).shape == (0, 9, 4, 4)


@pytest.mark.skipif("cpu" not in FUSED, reason="C++ extension not built")
def test_cpu_kernel_independent_of_thread_count():
    x, w, b = _inputs(2, 3, 12, 21, 17, 3, dtype=torch.float32)
    assert_thread_count_independent(lambda *a: depthwise_chain(*a, backend="cpu"),
                                    [t.requires_grad_(True) for t in (x, w, b)])


def test_auto_picks_cpu_kernel_then_eager():
    assert_cpu_auto_order("depthwise_chain", FUSED)


def test_autocast_runs_torch_ops_in_low_precision():
    x, w, b = _inputs(1, 3, 4, 6, 6, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_chain(x, w, b)
        want = _torch_chain(x, w, b)
    assert y.dtype == want.dtype == torch.bfloat16 and torch.equal(y, want)
    # as in SEFN under autocast: x is the bfloat16 output of the 1×1 conv, the weight stays float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_chain(x.bfloat16(), w, b)
        want = _torch_chain(x.bfloat16(), w, b)
    assert y.dtype == torch.bfloat16 and torch.equal(y, want)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck_of_registered_ops(backend, with_bias):
    x, w, b = _inputs(2, 3, 3, 5, 6, 3, bias=with_bias)
    leaves = [t.requires_grad_(True) for t in (x, w, b) if t is not None]
    torch.library.opcheck(torch.ops.ddsa.depthwise_chain_fwd.default, (x, w, b, backend))
    with torch.no_grad():
        y = depthwise_chain(x, w, b, backend=backend)
    g = torch.randn_like(x)
    torch.library.opcheck(torch.ops.ddsa.depthwise_chain_bwd.default, (g, x.detach(), y, w.detach(), backend))
    assert leaves


def test_torch_compile_fullgraph_traces_the_op():
    x, w, b = _inputs(1, 3, 4, 8, 8, 3, dtype=torch.float32)
    x.requires_grad_(True)

    assert_compiled_value_and_grad(lambda t: depthwise_chain(t, w, b).sin(), x)


def test_model_sefn_equals_the_authors_formulation():
    from ddsa_model.blocks import SEFN

    torch.manual_seed(0)
    block = SEFN(8, 2.66).double()
    x = torch.randn(2, 8, 9, 7, dtype=F64)
    gate_in = block.project_out(_torch_chain(block.conv_in(x), block.dwconv.weight, None))
    torch.testing.assert_close(block(x), block.gate(gate_in), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make,message", [
    (lambda: (torch.randn(2, 6, 4), torch.randn(3, 1, 3, 3), None), r"x must have shape \(B, n·C, H, W\)"),
    (lambda: (torch.randn(1, 7, 4, 4), torch.randn(3, 1, 3, 3), None), r"7 channels, not a multiple of .*C=3"),
    (lambda: (torch.randn(1, 6, 4, 4), torch.randn(3, 2, 3, 3), None), r"weight must have shape \(C, 1, K, K\)"),
    (lambda: (torch.randn(1, 6, 4, 4), torch.randn(3, 1, 4, 4), None), r"4×4 kernel"),
    (lambda: (torch.randn(1, 6, 4, 4), torch.randn(3, 1, 3, 3, dtype=F64), None), r"weight has dtype torch.float64"),
    (lambda: (torch.randn(1, 6, 4, 4), torch.randn(3, 1, 3, 3), torch.randn(6)), r"bias must have shape \(C,\)"),
    (lambda: (torch.ones(1, 6, 4, 4, dtype=torch.int64), torch.ones(3, 1, 3, 3, dtype=torch.int64), None),
     r"x has dtype torch.int64"),
])
def test_bad_inputs_name_the_problem(make, message):
    x, w, b = make()
    with pytest.raises(ValueError, match=message):
        depthwise_chain(x, w, b)


def test_unavailable_backend_for_dtype_is_refused():
    if "cpu" not in FUSED:
        pytest.skip("C++ extension not built")
    x, w, _ = _inputs(1, 3, 2, 4, 4, 3, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="cannot run these tensors"):
        depthwise_chain(x, w, backend="cpu")
