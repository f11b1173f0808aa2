"""The CUDA-capable backends (``triton``, ``cuda``) on a GPU: the edge cases and layouts that only
a compiled kernel can get wrong, each against the float64 oracle with the accuracy rule of
tests/op_cases.py. Every test is marked ``gpu`` and skips without a CUDA device; a backend that is
not available skips with its reason (a missing CUDA build is failed loudly by
test_cuda_extension_built_where_it_can_be below)."""
import os
import shutil

import pytest
import torch

from ddsa_kernels import _registry, build_info, ddsa_topk, drsformer_topk, dual_attention
from ddsa_kernels.testing import naive_dual_attention

import op_cases
from op_cases import F64, error_scales, make_inputs, params, run

pytestmark = pytest.mark.gpu
GPU_BACKENDS = ("triton", "cuda")


@pytest.fixture(params=GPU_BACKENDS)
def backend(request):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    why = build_info("dual_attention").get(request.param)
    if why != "available":
        pytest.skip(f"backend {request.param} not available: {why}")
    return request.param


def cuda_build_possible() -> tuple[bool, str]:
    """Whether this machine could build the CUDA kernels: a CUDA torch and nvcc (PATH or
    CUDA_HOME), and DDSA_NO_EXTENSION not set."""
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("DDSA_NO_EXTENSION") == "1":
        return False, "DDSA_NO_EXTENSION=1 was set deliberately"
    if torch.version.cuda is None:
        return False, "torch is a CPU build"
    if shutil.which("nvcc") is None and not (CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))):
        return False, "no nvcc on PATH or under CUDA_HOME"
    return True, ""


def test_cuda_extension_built_where_it_can_be():
    """On a GPU machine with a CUDA torch and nvcc, a missing CUDA extension is a failure, not a
    silent skip of every CUDA test."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    possible, why = cuda_build_possible()
    if not possible:
        pytest.skip(f"no CUDA build expected here: {why}")
    assert build_info("dual_attention")["cuda"] == "available", (
        "a CUDA build was possible (CUDA torch, nvcc) but the cuda backend is missing: "
        f"{build_info('dual_attention')['cuda']}; set DDSA_NO_EXTENSION=1 to run without it deliberately")


def check(backend, *args, **kwargs):
    return op_cases.check_case(*args, backend=backend, device="cuda", **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("channels", [48, 96])
def test_qkv_views_at_storage_offset_one_and_odd_n(backend, dtype, channels):
    """q, k, v chunks of one qkv tensor whose storage starts one element in: no row is 16-byte
    aligned, so vector loads must be off; N = 4099 is odd (a partial last tile)."""
    topk = ddsa_topk(channels)
    temperature, weights = params(2, len(topk))
    check(backend, *make_inputs(1, 2, channels, 4099, seed=21), temperature, weights, topk,
          dtype=dtype, layout="qkv_shifted")


@pytest.mark.parametrize("pixels", [1, 2, 4099])
def test_tiny_n_uses_summand_scale(backend, pixels):
    """N = 1: dq and dk are pure cancellation (0 in exact arithmetic)."""
    topk = drsformer_topk(16)
    temperature, weights = params(2, len(topk))
    check(backend, *make_inputs(2, 2, 16, pixels, seed=22), temperature, weights, topk, layout="qkv")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_against_fp32_accumulating_baseline(backend, dtype):
    topk = ddsa_topk(48)
    temperature, weights = params(2, len(topk))
    check(backend, *make_inputs(2, 2, 48, 3000, seed=23), temperature, weights, topk, dtype=dtype, layout="qkv")


def test_fp16_dot_products_beyond_fp16_range(backend):
    """q kᵀ and ‖q‖² overflow fp16 (> 65504) but not fp32: accumulation must be fp32."""
    q64, k64, v64 = make_inputs(1, 2, 48, 3000, seed=14)
    q64, k64 = 30.0 * q64, 30.0 * k64 + 20.0
    q16, k16 = q64.half().double(), k64.half().double()
    assert (q16 @ k16.transpose(-1, -2)).abs().max() > 65504
    assert q16.square().sum(-1).max() > 65504
    topk = ddsa_topk(48)
    temperature, weights = params(2, len(topk))
    check(backend, q64, k64, v64, temperature, weights, topk, dtype=torch.float16)


def test_zero_and_tiny_rows(backend):
    """All-zero rows and rows with 0 < ‖row‖ < eps follow F.normalize's max(‖x‖, eps) rule."""
    q64, k64, v64 = make_inputs(1, 2, 48, 300, seed=9)
    q64[0, 0, 3] = 0.0
    q64[0, 0, 7] *= 1e-14
    k64[0, 0, 5] = 0.0
    k64[0, 1, 9] *= 1e-14
    assert 0 < q64[0, 0, 7].norm() < 1e-12 and 0 < k64[0, 1, 9].norm() < 1e-12
    topk = ddsa_topk(48)
    temperature, weights = params(2, len(topk))
    got, _, _ = check(backend, q64, k64, v64, temperature, weights, topk)
    assert all(torch.isfinite(g).all() for g in got)


@pytest.mark.parametrize("tau", [1e4, 1e-4])
def test_extreme_temperatures(backend, tau):
    """τ = 1e4 makes the softmax nearly one-hot and amplifies every rounding of q̂k̂ᵀ 10⁴-fold (the
    fp32 reference's own error is then ~1e-3 and the rule compares noise with noise at large C·N):
    small C and N, as in the Triton tests, keep it a test of overflow and saturation."""
    topk = ddsa_topk(16)
    _, weights = params(1, len(topk))
    check(backend, *make_inputs(2, 1, 16, 37, seed=12), torch.full((1,), tau, dtype=F64), weights, topk)


def test_ties_at_the_threshold_are_all_kept(backend):
    """k rows drawn from a pool of 3 integer vectors: exact scores with 3 tie groups per row."""
    q64, k64, v64 = op_cases.tie_inputs(1, 2, 48, 37)
    topk = (1, 5, 17, 33)
    temperature, weights = params(2, len(topk))
    check(backend, q64, k64, v64, temperature, weights, topk)
    probs = _registry.implementation("dual_attention", backend).forward(
        *(t.to("cuda", torch.float32) for t in (q64, k64, v64)), temperature.float().cuda(), weights.float().cuda(),
        topk, 1e-12)[1].cpu()
    op_cases.assert_ties_kept(probs, q64, k64, temperature, topk)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(backend, dtype):
    q, k, v = (t.to("cuda", dtype).requires_grad_() for t in make_inputs(1, 2, 16, 37, seed=18))
    temperature = torch.ones(2, device="cuda", requires_grad=True)
    weights = torch.full((2,), 0.2, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.ddsa.dual_attention_fwd.default,
                          (q, k, v, temperature, weights, [0, 11], 1e-12, backend))


def test_torch_compile_fullgraph(backend):
    q, k, v = (t.to("cuda", torch.float16).requires_grad_() for t in make_inputs(1, 2, 48, 1000, seed=19))
    temperature = torch.tensor([0.7, 1.4], device="cuda", requires_grad=True)
    weights = torch.tensor([0.3, 0.6], device="cuda", requires_grad=True)
    topk = ddsa_topk(48)

    def f(q, k, v, t, w):
        return dual_attention(q, k, v, t, w, topk, backend=backend).float().square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    inputs = (q, k, v, temperature, weights)
    got = torch.autograd.grad(compiled(*inputs), inputs)
    want = torch.autograd.grad(f(*inputs), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same kernels, eager and compiled
    torch._dynamo.reset()


def test_more_than_2_31_elements_in_total(backend):
    """B·H·C·N > 2³¹ elements (fp16, C = 48, N = 4097, B = 10 922): per-(b, h) base offsets
    overflow int32. Memory: q = k = v one 4 GiB tensor, out (reused as the upstream gradient),
    dq, dk, dv: 5 × 4 GiB = 20 GiB plus O(B·C²) statistics — fits a 24 GB GPU. The backend's
    forward and backward are called directly (autograd would add a 4 GiB sum of dq + dk + dv);
    slices at the start, the middle and the end are checked against the reference per slice."""
    channels, pixels = 48, 4097
    batch = 2**31 // (channels * pixels) + 1
    free, _ = torch.cuda.mem_get_info()
    need = 5 * batch * channels * pixels * 2 + 2**30
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    assert batch * channels * pixels > 2**31
    impl = _registry.implementation("dual_attention", backend)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, 1, channels, pixels, device="cuda", dtype=torch.float16, generator=gen)
    temperature, weights = torch.tensor([1.3], device="cuda"), torch.tensor([0.4, 0.6], device="cuda")
    keep = (0, channels * 7 // 10)
    topk = ddsa_topk(channels)
    out, probs, gram, norms = impl.forward(x, x, x, temperature, weights, keep, 1e-12)
    dq, dk, dv, d_temp, d_w = impl.backward(out, x, x, x, temperature, weights, probs, gram, norms, keep, 1e-12)
    assert torch.isfinite(d_temp).all() and torch.isfinite(d_w).all()
    for b in (0, 1, batch // 2, batch - 2, batch - 1):
        xs = x[b:b + 1]
        go = out[b:b + 1]
        got = [out[b:b + 1], dq[b:b + 1], dk[b:b + 1], dv[b:b + 1]]
        base = run(lambda q, k, v, t, w: naive_dual_attention(q, k, v, t, w, topk), xs, xs, xs,
                   temperature, weights, go)
        args64 = [t.detach().cpu().to(F64) for t in (xs, xs, xs, temperature, weights, go)]
        oracle = run(lambda q, k, v, t, w: naive_dual_attention(q, k, v, t, w, topk), *args64)
        scales = error_scales(oracle, *args64, topk)
        op_cases.assert_accuracy_rule(got, base[:4], oracle[:4], scales[:4], torch.float16, backend)
