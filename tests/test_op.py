"""The public op, its registration and autograd, on the reference backend (oracles: autograd of
``naive_dual_attention`` in float64 and a loop-by-loop NumPy implementation)."""
import pytest
import torch

from ddsa_kernels import (
    DualSelfAttentionCore,
    available_backends,
    build_info,
    ddsa_topk,
    drsformer_topk,
    dual_attention,
    restormer_topk,
)
from ddsa_kernels.testing import eager_dual_attention, naive_dual_attention
import op_cases
from op_oracle import numpy_dual_attention

BRANCH_SETS = {
    "ddsa": ddsa_topk,
    "drsformer": drsformer_topk,
    "restormer": restormer_topk,
    "keep1_and_C": lambda c: (1, c),
}


def make_inputs(batch, heads, channels, pixels, dtype=torch.float64, n_branches=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, heads, 3 * channels, pixels, generator=gen, dtype=dtype)
    q, k, v = qkv.chunk(3, dim=2)  # non-contiguous views, as in the model
    temperature = (torch.rand(heads, 1, 1, generator=gen, dtype=dtype) * 2 + 0.25).requires_grad_()
    weights = (torch.rand(n_branches, generator=gen, dtype=dtype) + 0.1).requires_grad_()
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), temperature, weights


def grads(out, inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("branches", list(BRANCH_SETS))
@pytest.mark.parametrize("shape", [(1, 1, 8, 1), (2, 3, 16, 37), (1, 2, 48, 200)])
def test_reference_matches_numpy_loops(branches, shape):
    topk = BRANCH_SETS[branches](shape[2])
    q, k, v, t, w = make_inputs(*shape, n_branches=len(topk))
    out = naive_dual_attention(q, k, v, t, w, topk)
    expected = numpy_dual_attention(q.detach(), k.detach(), v.detach(), t.detach(), w.detach(), topk)
    torch.testing.assert_close(out.detach(), torch.from_numpy(expected), rtol=1e-12, atol=1e-12)


def test_reference_gradcheck():
    q, k, v, t, w = make_inputs(1, 2, 6, 9)
    assert torch.autograd.gradcheck(
        lambda *x: naive_dual_attention(*x, topk=(None, 4)), (q, k, v, t, w), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("branches", list(BRANCH_SETS))
@pytest.mark.parametrize("shape", [(1, 1, 8, 1), (2, 4, 16, 37), (1, 1, 48, 1000), (2, 1, 96, 37)])
def test_op_values_and_grads_match_autograd_of_reference(branches, shape):
    topk = BRANCH_SETS[branches](shape[2])
    inputs = make_inputs(*shape, n_branches=len(topk))
    out = dual_attention(*inputs, topk, backend="reference")
    ref = naive_dual_attention(*inputs, topk)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads(out, inputs), grads(ref, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_op_gradcheck_through_custom_op():
    q, k, v, t, w = make_inputs(2, 1, 5, 7)
    assert torch.autograd.gradcheck(
        lambda *x: dual_attention(*x, topk=(None, 3), backend="reference"), (q, k, v, t, w), eps=1e-6, atol=1e-7
    )


def test_temperature_shapes_h_and_h11_agree():
    q, k, v, t, w = make_inputs(1, 3, 8, 20)
    a = dual_attention(q, k, v, t, w, (None, 5))
    b = dual_attention(q, k, v, t.detach().reshape(3), w, (None, 5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    (gt,) = torch.autograd.grad(a.sum(), t)
    assert gt.shape == (3, 1, 1)


def test_ties_at_threshold_are_all_kept():
    # Duplicate k rows make duplicate score columns: a row's k-th largest value is tied.
    q, k, v, t, w = (x.detach() for x in make_inputs(1, 1, 6, 11))
    k = k.clone()
    k[0, 0, 3] = k[0, 0, 1]
    k[0, 0, 4] = k[0, 0, 1]
    topk = (2,)
    out = dual_attention(q, k, v, t, w[:1], topk, backend="reference")
    expected = numpy_dual_attention(q, k, v, t, w[:1], topk)
    torch.testing.assert_close(out, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).transpose(-2, -1)
    threshold = scores.topk(2, dim=-1).values[..., -1:]
    assert ((scores >= threshold).sum(-1) > 2).any(), "the test data must contain a tie at the threshold"


@pytest.mark.parametrize("which", ["q", "k"])
def test_zero_rows_follow_normalize_eps_rule(which):
    q, k, v, t, w = make_inputs(1, 2, 8, 30)
    with torch.no_grad():
        (q if which == "q" else k)[0, 1, 2].zero_()
    out = dual_attention(q, k, v, t, w, (None, 5))
    ref = naive_dual_attention(q, k, v, t, w, (None, 5))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    got, want = grads(out, (q, k, v, t, w)), grads(ref, (q, k, v, t, w))
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("tau", [1e-4, 1e4])
def test_extreme_temperatures_stay_finite(tau):
    q, k, v, _, w = make_inputs(2, 1, 16, 50)
    t = torch.full((1,), tau, dtype=torch.float64, requires_grad=True)
    out = dual_attention(q, k, v, t, w, (None, 11))
    ref = naive_dual_attention(q, k, v, t, w, (None, 11))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads(out, (q, k, v, t, w)), grads(ref, (q, k, v, t, w))):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_fp16_products_that_overflow_fp16_accumulate_in_fp32():
    # Each q·k product over N is 4096 * 60 * 60 ≈ 1.5e7, far above fp16's max (65504).
    channels, pixels = 8, 4096
    gen = torch.Generator().manual_seed(3)
    q = (torch.rand(1, 1, channels, pixels, generator=gen) * 20 + 50).half()
    k = (torch.rand(1, 1, channels, pixels, generator=gen) * 20 + 50).half()
    v = torch.randn(1, 1, channels, pixels, generator=gen).half()
    t, w = torch.tensor([3.0]), torch.tensor([0.3, 0.7])
    out = dual_attention(q, k, v, t, w, (None, 5))
    ref = naive_dual_attention(q.double(), k.double(), v.double(), t.double(), w.double(), (None, 5))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_is_within_twice_the_fp32_accumulating_baseline(dtype):
    """backend="auto" in fp16/bf16, values and all gradients, under tests/op_cases.py's rule: the
    baseline is the reference on the same low-precision tensors accumulating in fp32 (an all-fp16
    eager run is so inaccurate that an fp16-accumulating kernel would pass against it)."""
    topk = ddsa_topk(48)
    temperature, weights = op_cases.params(2, len(topk))
    op_cases.check_case(*op_cases.make_inputs(2, 2, 48, 300, seed=4), temperature, weights, topk,
                        backend="auto", device="cpu", dtype=dtype, layout="qkv")


def test_eager_baseline_matches_reference_without_ties():
    q, k, v, t, _ = make_inputs(2, 2, 16, 64)
    for topk in (ddsa_topk(16), drsformer_topk(16), restormer_topk(16)):
        w_ = torch.linspace(0.1, 0.9, len(topk), dtype=torch.float64)
        torch.testing.assert_close(
            eager_dual_attention(q, k, v, t, w_, topk), naive_dual_attention(q, k, v, t, w_, topk)
        )


def test_saved_tensors_beyond_qkv_are_quadratic_in_channels():
    batch, heads, channels, pixels = 2, 3, 16, 4096
    q, k, v, t, w = make_inputs(batch, heads, channels, pixels, dtype=torch.float32)
    saved = []

    def pack(x):
        saved.append(x)
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = dual_attention(q, k, v, t, w, ddsa_topk(channels))
    inputs = {x.untyped_storage().data_ptr() for x in (q, k, v)}
    extra = sum(x.numel() for x in saved if x.untyped_storage().data_ptr() not in inputs)
    assert extra <= 8 * batch * heads * channels * channels
    assert extra < batch * heads * channels * pixels / 10
    out.sum().backward()
    assert q.grad is not None and t.grad.shape == t.shape


def test_runs_are_bitwise_deterministic():
    results = []
    for _ in range(2):
        inputs = make_inputs(2, 2, 48, 333, dtype=torch.float32)
        out = dual_attention(*inputs, ddsa_topk(48))
        results.append((out, *grads(out, inputs)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_opcheck_of_registered_op():
    q, k, v, t, w = make_inputs(2, 2, 8, 21, dtype=torch.float32)
    args = (q, k, v, t.detach().reshape(2).requires_grad_(), w, [0, 5], 1e-12, "reference")
    torch.library.opcheck(torch.ops.ddsa.dual_attention_fwd.default, args)


def test_torch_compile_fullgraph_traces_the_op():
    q, k, v, t, w = make_inputs(1, 2, 8, 40, dtype=torch.float32)

    def f(q, k, v, t, w):
        return dual_attention(q * 2, k, v, t, w, (None, 5)).sin()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v, t, w)
    torch.testing.assert_close(out, f(q, k, v, t, w))
    for a, b in zip(grads(out, (q, k, v, t, w)), grads(f(q, k, v, t, w), (q, k, v, t, w))):
        torch.testing.assert_close(a, b)


def test_module_owns_authors_initialisation():
    core = DualSelfAttentionCore(heads=2, channels=16, topk=ddsa_topk(16))
    assert core.temperature.shape == (2, 1, 1) and torch.all(core.temperature == 1)
    assert core.weights.shape == (2,) and torch.all(core.weights == 0.2)
    q, k, v, _, _ = make_inputs(1, 2, 16, 25, dtype=torch.float32)
    out = core(q, k, v)
    ref = naive_dual_attention(q, k, v, core.temperature, core.weights, core.topk)
    torch.testing.assert_close(out, ref)


def test_keep_counts_use_integer_arithmetic():
    assert ddsa_topk(48) == (None, 33) and ddsa_topk(96) == (None, 67)
    assert drsformer_topk(48) == (24, 32, 36, 38)
    # floating point would get C = 90 wrong: int(0.7 * 90) == 62, but 7 * 90 / 10 == 63.
    assert ddsa_topk(90) == (None, 63) and int(0.7 * 90) == 62


class TestErrors:
    def inputs(self):
        q, k, v, t, w = make_inputs(1, 2, 8, 10, dtype=torch.float32)
        return [x.detach() for x in (q, k, v, t, w)]

    def test_wrong_rank(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match=r"q must have shape \(B, H, C, N\)"):
            dual_attention(q[0], k[0], v[0], t, w, (None, 3))

    def test_mismatched_shape(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match="k has shape"):
            dual_attention(q, k[..., :5], v, t, w, (None, 3))

    def test_mismatched_dtype(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match="v has dtype"):
            dual_attention(q, k, v.double(), t, w, (None, 3))

    def test_integer_dtype(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match="q has dtype torch.int64"):
            dual_attention(q.long(), k.long(), v.long(), t, w, (None, 3))

    def test_mismatched_device(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match="v is on meta"):
            dual_attention(q, k, v.to("meta"), t, w, (None, 3))

    @pytest.mark.parametrize("bad", [0, 9, -1])
    def test_keep_count_outside_range(self, bad):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match=rf"topk\[1\]={bad} is outside 1..C"):
            dual_attention(q, k, v, t, w, (None, bad))

    def test_keep_count_not_int(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match=r"topk\[1\] must be None"):
            dual_attention(q, k, v, t, w, (None, 0.7))

    def test_wrong_number_of_weights(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
            dual_attention(q, k, v, t, w, (None, 3, 4))

    def test_wrong_temperature_shape(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match="temperature must have shape"):
            dual_attention(q, k, v, t.reshape(2)[:1], w, (None, 3))

    def test_unknown_backend(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(ValueError, match="backend='nope' is not a known backend"):
            dual_attention(q, k, v, t, w, (None, 3), backend="nope")

    def test_unavailable_or_unsupported_backend(self):
        q, k, v, t, w = self.inputs()
        with pytest.raises(RuntimeError, match="backend='cuda'"):
            dual_attention(q, k, v, t, w, (None, 3), backend="cuda")


def test_build_info_explains_every_backend():
    info = build_info("dual_attention")
    assert info["reference"] == "available"
    for name in ("triton", "cpu", "cuda"):
        assert name in info and info[name]
        assert (info[name] == "available") == (name in available_backends(op="dual_attention"))


def test_build_info_covers_every_op():
    """Without an op, one entry per op of the registry, each naming every backend of that op."""
    from ddsa_kernels._registry import OPS

    info = build_info()
    assert set(info) == set(OPS) >= {"dual_attention", "channel_norm", "depthwise_conv", "depthwise_chain",
                                     "depthwise_chain_mlp", "gated_ffn", "mixed_scale_ffn"}
    for op, backends in info.items():
        assert backends == build_info(op)
        assert set(backends) == set(OPS[op].names)
        assert backends["eager"] == "available"


def test_registry_helpers_need_the_op():
    """No silent default op: leaving it out is a TypeError, an unknown one a ValueError."""
    from ddsa_kernels._registry import check_backend_name, resolve_backend

    with pytest.raises(TypeError):
        available_backends("cpu")
    with pytest.raises(TypeError):
        resolve_backend("auto", "cpu", torch.float32)
    with pytest.raises(TypeError):
        check_backend_name("auto")
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        build_info("nope")
