"""The channel LayerNorm op on every backend available here (the reference included), against
float64 autograd of F.layer_norm over the channels (WithBias) and of the bias-free formula written
in tests/conv_oracles.py.

Backends: "reference" and "cpu" on CPU tensors, "triton" on CPU under the Triton interpreter
(conftest sets TRITON_INTERPRET=1 without a GPU; small shapes) or on CUDA, "cuda" on CUDA.

Low-precision rule (as tests/test_triton.py): for every output and gradient,
    max|backend − oracle| ≤ 2 · max|plain formula in the same dtype − oracle| + atol · scale,
where the oracle is the float64 formula on the very same (rounded) inputs and scale the largest
|oracle| value of that tensor.
"""
from __future__ import annotations

import os

import pytest
import torch

from ddsa_kernels import ChannelNorm, build_info, channel_norm
from ddsa_kernels.testing import eager_channel_norm, naive_channel_norm
from ddsa_kernels._registry import available_backends, resolve_backend

from conv_oracles import channel_norm_oracle
from extension_expected import cpu_backend_required

F64 = torch.float64
ATOL = {torch.float32: 1e-5, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
OP = "channel_norm"


def _backends():
    """(backend, device) pairs runnable here."""
    out = []
    for name in ("reference", "cpu", "triton", "cuda"):
        for device in ("cpu", "cuda"):
            if device == "cuda" and not torch.cuda.is_available():
                continue
            if name in available_backends(device, op=OP):
                out.append((name, device))
            elif name == "cpu" and device == "cpu" and cpu_backend_required(OP):
                out.append((name, device))  # missing but buildable: its tests run and fail with the reason
    return out


BACKENDS = _backends()
IDS = [f"{n}-{d}" for n, d in BACKENDS]
FUSED = [(n, d) for n, d in BACKENDS if n != "reference"]


def _slow_interpreter(name: str, device: str) -> bool:
    return name == "triton" and device == "cpu"


def make_inputs(batch, channels, height, width, *, seed=0, offset=0.0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=gen, dtype=F64) * 1.5 + offset
    w = torch.rand(channels, generator=gen, dtype=F64) + 0.5
    b = torch.randn(channels, generator=gen, dtype=F64) if bias else None
    dy = torch.randn(batch, channels, height, width, generator=gen, dtype=F64)
    return x, w, b, dy


def run(fn, x, w, b, dy):
    """(y, dx, dw, db) of ``fn(x, w, b)`` by autograd (db None without bias), detached."""
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(*leaves)
    y.backward(dy)
    return [y.detach()] + [t.grad if t is not None else None for t in leaves]


def oracle(x, w, b, dy, subtract_mean, eps=1e-5):
    """Float64 autograd of F.layer_norm over the channels (WithBias) or of the bias-free formula
    written in tests/conv_oracles.py, on the same (rounded) inputs: not the package's own function."""
    to64 = [t.detach().cpu().to(F64) if t is not None else None for t in (x, w, b, dy)]
    return run(lambda a, c, d: channel_norm_oracle(a, c, d, eps, subtract_mean=subtract_mean), *to64)


def lay_out(x, layout, dtype, device):
    """x in ``dtype`` on ``device`` with the given memory layout (same values)."""
    if layout == "contiguous":
        return x.to(device=device, dtype=dtype)
    if layout == "channel_slice":  # channels of a bigger tensor, as a chunk of a qkv-like map
        big = torch.cat([x[:, :1], x, x[:, :2]], dim=1).to(device=device, dtype=dtype)
        return big[:, 1:1 + x.shape[1]]
    if layout == "transposed_hw":  # a (B, C, W, H) tensor seen transposed: stride 1 along H
        return x.transpose(2, 3).contiguous().to(device=device, dtype=dtype).transpose(2, 3)
    if layout == "channels_last":
        return x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    raise ValueError(layout)


def check_against_oracle(name, device, x64, w64, b64, dy64, subtract_mean, *, dtype=torch.float32,
                         layout="contiguous"):
    x = lay_out(x64, layout, dtype, device)
    w = w64.to(device=device, dtype=dtype)
    b = b64.to(device=device, dtype=dtype) if b64 is not None else None
    dy = dy64.to(device=device, dtype=dtype)
    got = run(lambda a, c, d: channel_norm(a, c, d, subtract_mean=subtract_mean, backend=name), x, w, b, dy)
    want = oracle(x, w, b, dy, subtract_mean)
    names = ("y", "dx", "dw", "db")
    assert got[0].dtype == dtype and got[0].shape == x.shape
    if dtype == F64:
        for i, n in enumerate(names):
            if want[i] is None:
                assert got[i] is None
                continue
            torch.testing.assert_close(got[i].cpu(), want[i], rtol=1e-10, atol=1e-10, msg=n)
        return
    base = run(lambda a, c, d: naive_channel_norm(a, c, d, subtract_mean=subtract_mean), x, w, b, dy)
    for i, n in enumerate(names):
        if want[i] is None:
            assert got[i] is None, f"{n}: gradient of a missing bias"
            continue
        g = got[i].cpu().to(F64)
        assert got[i].dtype == base[i].dtype, f"{n}: dtype {got[i].dtype} != {base[i].dtype}"
        assert torch.isfinite(g).all(), f"{n}: non-finite values from {name}"
        scale = want[i].abs().max().item()
        err = (g - want[i]).abs().max().item()
        base_err = (base[i].cpu().to(F64) - want[i]).abs().max().item()
        assert err <= 2 * base_err + ATOL[dtype] * scale, (
            f"{name} {n} ({dtype}, {layout}): error {err:.3e} > 2 × plain {base_err:.3e} + atol·scale")


# ---------------------------------------------------------------------------------------------
# values and gradients against the float64 oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("channels", [3, 48, 96, 384])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_values_and_grads_float32(name, device, channels, subtract_mean):
    shapes = [(2, 7, 5), (1, 37, 1)] if not _slow_interpreter(name, device) else [(2, 7, 5)]
    for batch, height, width in shapes:
        x, w, b, dy = make_inputs(batch, channels, height, width, offset=2.0, bias=subtract_mean)
        check_against_oracle(name, device, x, w, b, dy, subtract_mean)


@pytest.mark.parametrize("name,device", [(n, d) for n, d in BACKENDS if n in ("reference", "cpu")])
@pytest.mark.parametrize("channels", [3, 48, 384])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_values_and_grads_float64(name, device, channels, subtract_mean):
    x, w, b, dy = make_inputs(3, channels, 7, 5, offset=-1.0, bias=subtract_mean)
    check_against_oracle(name, device, x, w, b, dy, subtract_mean, dtype=F64)


@pytest.mark.parametrize("name,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("layout", ["channel_slice", "transposed_hw", "channels_last"])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_strided_inputs(name, device, layout, subtract_mean):
    x, w, b, dy = make_inputs(2, 48, 7, 5, seed=3, bias=subtract_mean)
    check_against_oracle(name, device, x, w, b, dy, subtract_mean, layout=layout)


@pytest.mark.parametrize("name,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("channels", [3, 48, 384])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_low_precision_error_is_within_twice_plain_formula_error(name, device, dtype, channels, subtract_mean):
    x, w, b, dy = make_inputs(2, channels, 7, 5, seed=5, offset=1.0, bias=subtract_mean)
    check_against_oracle(name, device, x, w, b, dy, subtract_mean, dtype=dtype)


@pytest.mark.parametrize("name,device", BACKENDS, ids=IDS)
def test_three_dim_input_is_a_map_of_one_column(name, device):
    x, w, b, dy = make_inputs(2, 48, 37, 1, seed=7)
    x3, dy3 = x.squeeze(-1).to(device=device, dtype=torch.float32), dy.squeeze(-1).to(device=device)
    w32, b32 = w.to(device=device, dtype=torch.float32), b.to(device=device, dtype=torch.float32)
    got = run(lambda a, c, d: channel_norm(a, c, d, backend=name), x3, w32, b32, dy3.float())
    want = run(lambda a, c, d: channel_norm_oracle(a, c, d), x3.double().cpu(), w, b, dy3.double().cpu())
    assert got[0].shape == x3.shape
    for g, r in zip(got, want):
        torch.testing.assert_close(g.cpu().double(), r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_zero_variance_pixels(name, device, dtype, subtract_mean):
    """Pixels constant over the channels: y = b exactly (with the mean), gradients finite."""
    x, w, b, dy = make_inputs(2, 48, 5, 3, seed=9, bias=subtract_mean)
    x[0, :, 1, 2] = 1.25
    x[1, :, 4, 0] = -3.0
    x[1, :, 0, :] = 0.0
    xs = x.to(device=device, dtype=dtype)
    ws = w.to(device=device, dtype=dtype)
    bs = b.to(device=device, dtype=dtype) if b is not None else None
    got = run(lambda a, c, d: channel_norm(a, c, d, subtract_mean=subtract_mean, backend=name), xs, ws, bs,
              dy.to(device=device, dtype=dtype))
    for t in got:
        if t is not None:
            assert torch.isfinite(t).all()
    y = got[0]
    if subtract_mean:
        for bb, hh, ww in ((0, 1, 2), (1, 4, 0), (1, 0, 1)):
            assert torch.equal(y[bb, :, hh, ww], bs), "a constant pixel must give y = b"
    else:
        assert torch.equal(y[1, :, 0, :], torch.zeros_like(y[1, :, 0, :]))
    if dtype == torch.float32:
        check_against_oracle(name, device, x, w, b, dy, subtract_mean)


@pytest.mark.parametrize("name,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("spread", [1e-3, 1e-5])
@pytest.mark.parametrize("channels", [48, 300])  # 300: the Triton kernels' channel-chunked branch
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_near_constant_pixels_far_from_zero(name, device, spread, channels, subtract_mean):
    """Pixels at 2 ± spread: x − μ keeps only a few bits, so an inexact mean shifts every x̂ of the pixel
    and (rstd ≈ 1/√eps) the bias-free dx by ~rstd³·|μ error|; no backend may do worse than the formula."""
    x, w, b, dy = make_inputs(2, channels, 3, 5, seed=13, bias=subtract_mean)
    x = 2.0 + spread * x
    check_against_oracle(name, device, x, w, b, dy, subtract_mean)


# ---------------------------------------------------------------------------------------------
# determinism, registration, compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,device", FUSED, ids=[f"{n}-{d}" for n, d in FUSED])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_runs_are_bitwise_deterministic(name, device, subtract_mean):
    x, w, b, dy = make_inputs(3, 48, 9, 7, seed=11, bias=subtract_mean)
    args = [t.to(device=device, dtype=torch.float32) if t is not None else None for t in (x, w, b, dy)]
    fn = lambda a, c, d: channel_norm(a, c, d, subtract_mean=subtract_mean, backend=name)  # noqa: E731
    first, second = run(fn, *args), run(fn, *args)
    for p, q in zip(first, second):
        assert (p is None and q is None) or torch.equal(p, q)


def test_cpu_results_do_not_depend_on_thread_count():
    if not cpu_backend_required(OP):
        pytest.skip("cpu backend not built and not buildable here")
    x, w, b, dy = make_inputs(2, 96, 40, 33, seed=13)
    args = [t.float() for t in (x, w, b, dy)]
    fn = lambda a, c, d: channel_norm(a, c, d, backend="cpu")  # noqa: E731
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(fn, *args)
        torch.set_num_threads(3)
        three = run(fn, *args)
    finally:
        torch.set_num_threads(threads)
    for p, q in zip(one, three):
        assert torch.equal(p, q)


def _opcheck_backends():
    return [(n, d) for n, d in BACKENDS if not _slow_interpreter(n, d)]


@pytest.mark.parametrize("name,device", _opcheck_backends(), ids=[f"{n}-{d}" for n, d in _opcheck_backends()])
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck_of_registered_ops(name, device, with_bias):
    x, w, b, dy = make_inputs(2, 8, 3, 5, seed=15, bias=with_bias)
    x, w, dy = (t.float().to(device) for t in (x, w, dy))
    b = b.float().to(device).requires_grad_() if b is not None else None
    x.requires_grad_()
    w.requires_grad_()
    torch.library.opcheck(torch.ops.ddsa.channel_norm_fwd.default, (x, w, b, 1e-5, True, name))
    _, mean, rstd = torch.ops.ddsa.channel_norm_fwd(x.detach(), w.detach(), None, 1e-5, True, name)
    for subtract_mean in (True, False):
        torch.library.opcheck(torch.ops.ddsa.channel_norm_bwd.default,
                              (dy, x.detach(), w.detach(), mean, rstd, subtract_mean, name))


def test_torch_compile_fullgraph_traces_the_op():
    x, w, b, dy = make_inputs(2, 48, 7, 5, seed=17)
    x, w, b = (t.float() for t in (x, w, b))

    def f(x, w, b):
        return channel_norm(x, w, b) * 2.0 + channel_norm(x, w, subtract_mean=False)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    eager = run(f, x, w, b, dy.float())
    traced = run(compiled, x, w, b, dy.float())
    for p, q in zip(eager, traced):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_eager_baseline_matches_oracle():
    x, w, b, _ = make_inputs(2, 48, 7, 5, seed=19)
    for subtract_mean, bias in ((True, b), (True, None), (False, None)):
        torch.testing.assert_close(eager_channel_norm(x, w, bias, subtract_mean=subtract_mean),
                                   channel_norm_oracle(x, w, bias, subtract_mean=subtract_mean),
                                   rtol=1e-12, atol=1e-12)
    name = resolve_backend("eager", "cpu", torch.float64, channels=48, op=OP)
    assert name == "eager"
    torch.testing.assert_close(channel_norm(x, w, b, backend="eager"), channel_norm_oracle(x, w, b))


def test_saved_tensors_are_the_input_and_per_pixel_statistics():
    x, w, b, _ = make_inputs(2, 48, 7, 5, seed=21)
    x, w, b = (t.float().requires_grad_() for t in (x, w, b))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(tuple(t.shape)) or t, lambda t: t):
        channel_norm(x, w, b, backend="reference")
    assert sorted(sizes) == sorted([tuple(x.shape), (48,), (2, 7, 5), (2, 7, 5)])


def test_auto_backend_on_cpu():
    expected = "cpu" if "cpu" in available_backends("cpu", op=OP) else "reference"
    assert resolve_backend("auto", "cpu", torch.float32, channels=48, op=OP) == expected
    info = build_info(OP)
    assert set(info) == {"reference", "triton", "cpu", "cuda", "eager"}
    assert all(isinstance(v, str) and v for v in info.values())


def test_module_parameters_and_variants():
    m = ChannelNorm(48)
    assert torch.equal(m.weight, torch.ones(48)) and torch.equal(m.bias, torch.zeros(48))
    x = torch.randn(2, 48, 4, 3)
    torch.testing.assert_close(m(x), channel_norm_oracle(x, m.weight, m.bias))
    free = ChannelNorm(48, bias=False, subtract_mean=False)
    assert free.bias is None and [n for n, _ in free.named_parameters()] == ["weight"]
    torch.testing.assert_close(free(x), channel_norm_oracle(x, free.weight, None, subtract_mean=False))
    with pytest.raises(ValueError, match="bias"):
        ChannelNorm(48, subtract_mean=False)


# ---------------------------------------------------------------------------------------------
# errors name the bad argument
# ---------------------------------------------------------------------------------------------


class TestErrors:
    def setup_method(self):
        self.x = torch.randn(2, 4, 3, 3)
        self.w = torch.ones(4)
        self.b = torch.zeros(4)

    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
            channel_norm(self.x[0, 0], self.w, self.b)

    def test_weight_length(self):
        with pytest.raises(ValueError, match=r"weight must have shape \(C,\) with C=4"):
            channel_norm(self.x, torch.ones(5), self.b)

    def test_bias_length(self):
        with pytest.raises(ValueError, match=r"bias must have shape \(C,\)"):
            channel_norm(self.x, self.w, torch.zeros(3))

    def test_integer_dtype(self):
        with pytest.raises(ValueError, match="x has dtype torch.int64"):
            channel_norm(self.x.long(), self.w, self.b)

    def test_weight_bias_dtype_mismatch(self):
        with pytest.raises(ValueError, match="bias has dtype torch.float64 but weight has dtype torch.float32"):
            channel_norm(self.x, self.w, self.b.double())

    def test_device_mismatch(self):
        with pytest.raises(ValueError, match="weight is on meta but x is on cpu"):
            channel_norm(self.x, self.w.to("meta"), None)

    def test_bias_with_bias_free_variant(self):
        with pytest.raises(ValueError, match="bias must be None when subtract_mean=False"):
            channel_norm(self.x, self.w, self.b, subtract_mean=False)

    @pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), "1e-5"])
    def test_bad_eps(self, eps):
        with pytest.raises(ValueError, match="eps must be a positive float"):
            channel_norm(self.x, self.w, self.b, eps)

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
            channel_norm(self.x, [1.0] * 4)

    def test_unknown_backend(self):
        with pytest.raises(ValueError, match="backend='fast' is not a known backend"):
            channel_norm(self.x, self.w, self.b, backend="fast")

    def test_unsupported_backend(self):
        if torch.cuda.is_available():
            pytest.skip("the cuda backend may run here")
        with pytest.raises(RuntimeError, match="backend='cuda'"):
            channel_norm(self.x, self.w, self.b, backend="cuda")


@pytest.mark.parametrize("channels,block_c", [(48, 16), (5, 2), (96, 32)])
@pytest.mark.parametrize("subtract_mean", [True, False], ids=["withbias", "biasfree"])
def test_triton_channel_chunks_match_reference_backend(channels, block_c, subtract_mean):
    """The chunked (C > registers) path of the Triton kernels, forced at small C."""
    if not any(n == "triton" for n, _ in BACKENDS):
        pytest.skip("triton backend not available")
    from ddsa_kernels.ops.channel_norm import reference as ref_backend
    from ddsa_kernels.ops.channel_norm import triton as triton_backend

    device = "cpu" if INTERPRET else "cuda"
    x, w, b, dy = make_inputs(2, channels, 7, 5, seed=23, offset=3.0, bias=subtract_mean)
    x = lay_out(x, "channel_slice", torch.float32, device)
    w, dy = w.float().to(device), dy.float().to(device)
    b = b.float().to(device) if b is not None else None
    got_f = triton_backend.forward(x, w, b, 1e-5, subtract_mean, block_c=block_c)
    want_f = ref_backend.forward(x.double(), w.double(), b.double() if b is not None else None, 1e-5, subtract_mean)
    got_b = triton_backend.backward(dy, x, w, got_f[1], got_f[2], subtract_mean, block_c=block_c)
    want_b = ref_backend.backward(dy.double(), x.double(), w.double(), want_f[1], want_f[2], subtract_mean)
    for g, r in zip((*got_f, *got_b), (*want_f, *want_b)):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-5)
