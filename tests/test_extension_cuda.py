"""The compiled "cuda" backend (csrc/cuda) against the float64 autograd oracle
(``naive_dual_attention``) and, for fp16/bf16, the flash-attention rule against the reference
run in the same dtype with fp32 accumulation (tests/op_cases.py). Needs a GPU and an extension
built with CUDA; skips with the reason otherwise, except where a CUDA build was possible
(tests/test_gpu_op.py::test_cuda_extension_built_where_it_can_be then fails loudly)."""
import pytest
import torch

from ddsa_kernels import build_info, ddsa_topk, dual_attention
from ddsa_kernels.testing import naive_dual_attention

import op_cases
from op_cases import NAMES as GRAD_NAMES, as64, branch_set_case, over_branch_sets, run_with_topk

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _cuda_backend():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    why = build_info("dual_attention").get("cuda")
    if why != "available":
        pytest.skip(f"cuda backend not available: {why}")


def make_inputs(batch, heads, channels, pixels, dtype=torch.float32, n_branches=2, seed=0, device="cuda"):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, heads, 3 * channels, pixels, generator=gen, dtype=torch.float64)
    q, k, v = (t.to(device=device, dtype=dtype).requires_grad_() for t in qkv.chunk(3, dim=2))
    temperature = (torch.rand(heads, generator=gen, dtype=torch.float64) * 2 + 0.25).to(device).requires_grad_()
    weights = (torch.rand(n_branches, generator=gen, dtype=torch.float64) + 0.1).to(device).requires_grad_()
    return q, k, v, temperature, weights


def cuda_op(q, k, v, t, w, topk):
    return dual_attention(q, k, v, t, w, topk, backend="cuda")


def upstream(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).cuda()


def assert_close_to_oracle(got, want, rel, inputs, topk, grad_out):
    """max|got − want| ≤ rel · scale per tensor, with op_cases' scales: the largest |oracle| value,
    and for dq and dk the size of their summands (at N = 1 they are pure cancellation); at least
    1e-2. dτ and dw are fp32 sums over B·H·C² products whose terms cancel too (at N = 1 most of
    them): they get 5× ``rel``."""
    args64 = [x.detach().cpu().double() for x in (*inputs, grad_out)]
    scales = op_cases.error_scales([w.detach().cpu() for w in want], *args64, topk)
    for name, a, b, scale in zip(GRAD_NAMES, got, want, scales):
        assert a.shape == b.shape, name
        err = (a.double() - b).abs().max().item()
        bound = (5 * rel if name in ("dtemperature", "dweights") else rel) * max(scale, 1e-2)
        assert err <= bound, (name, err, scale)


@over_branch_sets
def test_float32_values_and_all_grads_match_float64_oracle(channels, pixels, branches):
    inputs, topk, g = branch_set_case(channels, pixels, branches, make_inputs, upstream)
    got = run_with_topk(cuda_op, inputs, topk, g)
    want = run_with_topk(naive_dual_attention, as64(inputs), topk, g)
    assert got[0].dtype == torch.float32
    assert_close_to_oracle(got, want, 2e-5, inputs, topk, g)


@pytest.mark.parametrize("shape", [(1, 1, 48, 150_000), (1, 2, 96, 20_000), (2, 1, 128, 3000)])
def test_long_rows_split_over_blocks(shape):
    topk = ddsa_topk(shape[2])
    inputs = make_inputs(*shape)
    g = upstream(shape)
    assert_close_to_oracle(run_with_topk(cuda_op, inputs, topk, g), run_with_topk(naive_dual_attention, as64(inputs), topk, g), 5e-5,
                           inputs, topk, g)


def test_more_than_128_channels_is_refused_and_auto_picks_another_backend():
    """The kernels hold C×C tiles of at most 128 rows per block: backend="cuda" refuses C = 160 with
    the limit in the message (the registry's check, and the extension's own for direct calls), and
    "auto" runs such tensors on another backend, still matching the oracle."""
    from ddsa_kernels._registry import resolve_backend
    from ddsa_kernels.ops.dual_attention.extension import CUDA

    inputs = make_inputs(1, 1, 160, 300)
    with pytest.raises(RuntimeError, match=r"at most C=128 channels, got C=160"):
        cuda_op(*inputs, (None, 112))
    q, k, v, t, w = (x.detach() for x in inputs)
    with pytest.raises(RuntimeError, match="at most 128"):
        CUDA.forward(q, k, v, t, w, (0, 112), 1e-12)
    picked = resolve_backend("auto", q.device, q.dtype, channels=160, op="dual_attention")
    assert picked != "cuda"
    assert resolve_backend("auto", q.device, q.dtype, channels=128, op="dual_attention") in ("triton", "cuda")
    temperature, weights = op_cases.params(1, 2)
    op_cases.check_case(*op_cases.make_inputs(1, 1, 160, 300, seed=3), temperature, weights, (None, 112),
                        backend="auto", device="cuda")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 2, 48, 300), (1, 1, 96, 4097)])
def test_low_precision_error_within_twice_fp32_accumulating_baseline(dtype, shape):
    """Baseline: the reference backend on the same fp16/bf16 tensors, which accumulates in fp32;
    a plain all-fp16 run would be so inaccurate that an fp16-accumulating kernel passed too."""
    topk = ddsa_topk(shape[2])
    temperature, weights = op_cases.params(shape[1], len(topk))
    op_cases.check_case(*op_cases.make_inputs(*shape, seed=3), temperature, weights, topk, backend="cuda",
                        device="cuda", dtype=dtype, layout="qkv")


@pytest.mark.parametrize("which", ["q", "k"])
def test_zero_rows_follow_normalize_eps_rule(which):
    q, k, v, t, w = make_inputs(2, 2, 16, 40)
    with torch.no_grad():
        (q if which == "q" else k)[1, 0, 3].zero_()
    g = upstream(q.shape)
    got = run_with_topk(cuda_op, (q, k, v, t, w), (None, 11), g)
    for a in got:
        assert torch.isfinite(a).all()
    assert_close_to_oracle(got, run_with_topk(naive_dual_attention, as64((q, k, v, t, w)), (None, 11), g), 2e-5,
                           (q, k, v, t, w), (None, 11), g)


def test_ties_at_threshold_are_all_kept():
    q, k, v, t, w = make_inputs(1, 1, 8, 23)
    with torch.no_grad():
        k[0, 0, 3] = k[0, 0, 1]
        k[0, 0, 4] = k[0, 0, 1]
    g = upstream(q.shape)
    got = run_with_topk(cuda_op, (q, k, v, t, w[:1]), (2,), g)
    want = run_with_topk(naive_dual_attention, as64((q, k, v, t, w[:1])), (2,), g)
    assert_close_to_oracle(got, want, 2e-5, (q, k, v, t, w[:1]), (2,), g)


def test_strided_layouts_and_expanded_grad():
    gen = torch.Generator().manual_seed(5)
    B, H, C, N = 2, 3, 16, 50
    q = torch.randn(H, B, C, N, generator=gen).cuda().transpose(0, 1).requires_grad_()
    k = torch.randn(B, H, N, C, generator=gen).cuda().transpose(2, 3).requires_grad_()
    v = torch.randn(B, H, C, 2 * N, generator=gen).cuda()[..., ::2].requires_grad_()
    t = torch.rand(H, generator=gen).cuda().requires_grad_()
    w = torch.rand(2, generator=gen).cuda().requires_grad_()
    inputs = (q, k, v, t, w)
    got = torch.autograd.grad(cuda_op(*inputs, (None, 9)).sum(), inputs)
    ref_inputs = as64(inputs)  # one set of float64 leaves for the forward and the grad
    want = torch.autograd.grad(naive_dual_attention(*ref_inputs, (None, 9)).sum(), ref_inputs)
    for a, b in zip(got, want):
        assert (a.double() - b).abs().max() <= 2e-5 * b.abs().max().clamp_min(1e-2)


def test_bitwise_deterministic():
    inputs = make_inputs(1, 2, 48, 70_000)
    g = upstream(inputs[0].shape)
    first = run_with_topk(cuda_op, inputs, ddsa_topk(48), g)
    second = run_with_topk(cuda_op, inputs, ddsa_topk(48), g)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_auto_backend_is_the_first_available_cuda_backend_in_auto_order():
    """Which backend "auto" prefers on CUDA is decided from measurements (the auto order): assert only
    that it picks the first available one of that order, and that it is a CUDA-capable one."""
    from ddsa_kernels import available_backends
    from ddsa_kernels._registry import resolve_backend
    from ddsa_kernels._registry import OPS

    cuda_backends = available_backends("cuda", op="dual_attention")
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        first = next(b for b in OPS["dual_attention"].auto_order["cuda"] if b in cuda_backends)
        picked = resolve_backend("auto", torch.device("cuda"), dtype, channels=48, op="dual_attention")
        assert picked == first
        assert picked in ("triton", "cuda")
