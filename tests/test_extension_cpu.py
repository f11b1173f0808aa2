"""The compiled "cpu" backend (ddsa_kernels._C, csrc/cpu) against independent oracles: autograd
of ``naive_dual_attention`` in float64, the "reference" backend's statistics, and for
fp16/bf16 the flash-attention rule (error ≤ 2× a plain same-precision computation's error)."""
import subprocess
import sys

import pytest
import torch

from ddsa_kernels import build_info, ddsa_topk, dual_attention
from ddsa_kernels.testing import naive_dual_attention

from ddsa_kernels.ops.dual_attention import reference as reference_backend
from ddsa_kernels._registry import resolve_backend

import op_cases
from extension_expected import cpu_backend_required
from op_cases import NAMES, branch_set_case, over_branch_sets, run_with_topk
from op_checks import per_thread_count

_REASON = build_info("dual_attention").get("cpu", "unknown")
if _REASON == "available":
    from ddsa_kernels import _C
# Skipped only where no build was possible; a missing-but-buildable extension fails these tests.
requires_cpu = pytest.mark.skipif(not cpu_backend_required(), reason=f"compiled cpu backend not available: {_REASON}")


def make_inputs(batch, heads, channels, pixels, dtype=torch.float64, n_branches=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, heads, 3 * channels, pixels, generator=gen, dtype=torch.float64).to(dtype)
    q, k, v = qkv.chunk(3, dim=2)  # non-contiguous views, as in the model
    temperature = (torch.rand(heads, generator=gen, dtype=torch.float64) * 2 + 0.25).requires_grad_()
    weights = (torch.rand(n_branches, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), temperature, weights


def upstream(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def cpu_op(q, k, v, t, w, topk):
    return dual_attention(q, k, v, t, w, topk, backend="cpu")


@requires_cpu
@over_branch_sets
def test_float64_values_and_all_grads_match_autograd_oracle(channels, pixels, branches):
    inputs, topk, g = branch_set_case(channels, pixels, branches, make_inputs, upstream)
    got = run_with_topk(cpu_op, inputs, topk, g)
    want = run_with_topk(naive_dual_attention, inputs, topk, g)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda m: f"{name}: {m}")


@requires_cpu
@pytest.mark.parametrize("shape", [(1, 1, 48, 1000), (2, 3, 16, 37), (1, 2, 96, 2500)])
def test_float32_values_and_grads_close_to_float64_oracle(shape):
    topk = ddsa_topk(shape[2])
    inputs64 = make_inputs(*shape)
    inputs32 = [x.detach().float().requires_grad_() for x in inputs64]
    g = upstream(shape)
    got = run_with_topk(cpu_op, inputs32, topk, g)
    want = run_with_topk(naive_dual_attention, inputs64, topk, g)
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == torch.float32, name
        scale = b.abs().max().clamp_min(1e-3)
        assert (a.double() - b).abs().max() <= 1e-5 * scale, name


@requires_cpu
def test_statistics_match_reference_backend():
    q, k, v, t, w = (x.detach() for x in make_inputs(2, 3, 48, 700))
    keep = (0, 33, 1, 48)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    got = _C.forward_cpu(q, k, v, t, w, list(keep), 1e-12)
    want = reference_backend.forward(q, k, v, t, w, keep, 1e-12)
    for name, a, b in zip(("out", "probs", "gram", "norms"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


@requires_cpu
@pytest.mark.parametrize("shape", [(1, 1, 8, 9000), (4, 5, 16, 3000)])
def test_both_work_splits_match_oracle(shape):
    # (1, 1, 8, 9000): C=8 uses tiles of 2048 pixels, so N is split into chunks whose partial
    # Gram matrices and norms are reduced after the sweep. (4, 5, ...): B·H ≥ 16, every (b, h)
    # runs all its sweeps on one thread.
    inputs = make_inputs(*shape)
    g = upstream(shape)
    topk = (None, shape[2] // 2)
    for a, b in zip(run_with_topk(cpu_op, inputs, topk, g), run_with_topk(naive_dual_attention, inputs, topk, g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@requires_cpu
@pytest.mark.parametrize("which", ["q", "k"])
def test_zero_rows_follow_normalize_eps_rule(which):
    q, k, v, t, w = make_inputs(2, 2, 16, 40)
    with torch.no_grad():
        (q if which == "q" else k)[1, 0, 3].zero_()
        (q if which == "q" else k)[0, 1, 0].zero_()
    g = upstream(q.shape)
    got = run_with_topk(cpu_op, (q, k, v, t, w), (None, 11), g)
    want = run_with_topk(naive_dual_attention, (q, k, v, t, w), (None, 11), g)
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@requires_cpu
def test_ties_at_threshold_are_all_kept():
    # Duplicate k rows make duplicate score columns, so a row's k-th largest value is tied.
    q, k, v, t, w = make_inputs(1, 1, 8, 23)
    with torch.no_grad():
        k[0, 0, 3] = k[0, 0, 1]
        k[0, 0, 4] = k[0, 0, 1]
    scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).transpose(-2, -1)
    threshold = scores.topk(2, dim=-1).values[..., -1:]
    assert ((scores >= threshold).sum(-1) > 2).any(), "the test data must contain a tie at the threshold"
    g = upstream(q.shape)
    for topk in ((2,), (None, 2)):
        ww = w[: len(topk)]
        got = run_with_topk(cpu_op, (q, k, v, t, ww), topk, g)
        want = run_with_topk(naive_dual_attention, (q, k, v, t, ww), topk, g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@requires_cpu
def test_strided_layouts_and_expanded_grad():
    gen = torch.Generator().manual_seed(5)
    B, H, C, N = 2, 3, 16, 50
    # q with B and H swapped in memory, k with N not unit-stride, v a plain view.
    q = torch.randn(H, B, C, N, generator=gen, dtype=torch.float64).transpose(0, 1).requires_grad_()
    k = torch.randn(B, H, N, C, generator=gen, dtype=torch.float64).transpose(2, 3).requires_grad_()
    v = torch.randn(B, H, C, 2 * N, generator=gen, dtype=torch.float64)[..., ::2].requires_grad_()
    t = torch.rand(H, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.rand(2, generator=gen, dtype=torch.float64).requires_grad_()
    inputs = (q, k, v, t, w)
    # out.sum() hands the backward an expanded gradient (all strides 0).
    got = torch.autograd.grad(cpu_op(*inputs, (None, 9)).sum(), inputs)
    want = torch.autograd.grad(naive_dual_attention(*inputs, (None, 9)).sum(), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@requires_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pixels", [1, 300])
def test_low_precision_error_within_twice_fp32_accumulating_baseline(dtype, pixels):
    """Baseline: the reference backend on the same fp16/bf16 tensors, accumulating in fp32 (an
    all-fp16 run would be inaccurate enough to let an fp16-accumulating kernel pass)."""
    topk = ddsa_topk(48)
    temperature, weights = op_cases.params(2, len(topk))
    op_cases.check_case(*op_cases.make_inputs(2, 2, 48, pixels, seed=4), temperature, weights, topk,
                        backend="cpu", device="cpu", dtype=dtype, layout="qkv")


@requires_cpu
def test_fp16_products_that_overflow_fp16_accumulate_in_fp32():
    gen = torch.Generator().manual_seed(3)
    q = (torch.rand(1, 1, 8, 4096, generator=gen) * 20 + 50).half()
    k = (torch.rand(1, 1, 8, 4096, generator=gen) * 20 + 50).half()
    v = torch.randn(1, 1, 8, 4096, generator=gen).half()
    t, w = torch.tensor([3.0]), torch.tensor([0.3, 0.7])
    out = cpu_op(q, k, v, t, w, (None, 5))
    ref = naive_dual_attention(q.double(), k.double(), v.double(), t.double(), w.double(), (None, 5))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


@requires_cpu
@pytest.mark.parametrize("shape", [(1, 2, 48, 5000), (4, 4, 16, 700)])
def test_bitwise_deterministic_across_runs_and_thread_counts(shape):
    inputs = make_inputs(*shape, dtype=torch.float32)
    g = upstream(inputs[0].shape)
    threads = torch.get_num_threads()
    results = per_thread_count(lambda: run_with_topk(cpu_op, inputs, ddsa_topk(shape[2]), g), (threads, 1, 3, threads))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@requires_cpu
def test_auto_backend_picks_cpu_for_every_cpu_dtype():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert resolve_backend("auto", torch.device("cpu"), dtype, op="dual_attention") == "cpu"


@requires_cpu
def test_cuda_backend_reason_is_explained():
    info = build_info("dual_attention")["cuda"]
    if not _C.has_cuda():
        assert "built without CUDA" in info
    elif not torch.cuda.is_available():
        assert "no CUDA device" in info


@requires_cpu
class TestKernelArgumentErrors:
    def inputs(self):
        return [x.detach().float() for x in make_inputs(1, 2, 8, 10)]

    def test_keep_count_above_channels(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(RuntimeError, match=r"keep\[1\]=9 is outside 0..C"):
            _C.forward_cpu(q, k, v, t, w, [0, 9], 1e-12)

    def test_weights_count(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(RuntimeError, match="weights has 2 values for 3 branches"):
            _C.forward_cpu(q, k, v, t, w, [0, 3, 4], 1e-12)

    def test_shape_mismatch(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(RuntimeError, match="v has shape"):
            _C.forward_cpu(q, k, v[..., :5], t, w, [0, 3], 1e-12)

    def test_saved_statistics_shape(self):
        q, k, v, t, w = self.inputs()
        out, probs, gram, norms = _C.forward_cpu(q, k, v, t, w, [0, 3], 1e-12)
        with pytest.raises(RuntimeError, match=r"probs must have shape \(B, H, n_branches, C, C\)"):
            _C.backward_cpu(out, q, k, v, t, w, probs[:, :, :1], gram, norms, [0, 3], 1e-12)


def test_missing_extension_is_explained_not_raised():
    # A process in which importing ddsa_kernels._C fails (as when it was never compiled).
    code = (
        "import sys; sys.modules['ddsa_kernels._C'] = None\n"
        "import torch, ddsa_kernels\n"
        "from ddsa_kernels._registry import resolve_backend\n"
        "info = ddsa_kernels.build_info('dual_attention')\n"
        "print(info['cpu']); print(resolve_backend('auto', torch.device('cpu'), torch.float32, op='dual_attention'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    reason, auto = result.stdout.strip().splitlines()[-2:]
    assert "not built" in reason and "pip install --no-build-isolation" in reason
    assert auto == "reference"


@requires_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_of_registered_op_on_cpu_backend(dtype):
    q, k, v, t, w = make_inputs(2, 2, 8, 21, dtype=dtype)
    args = (q, k, v, t.detach().float().requires_grad_(), w.detach().float().requires_grad_(), [0, 5], 1e-12, "cpu")
    torch.library.opcheck(torch.ops.ddsa.dual_attention_fwd.default, args)
