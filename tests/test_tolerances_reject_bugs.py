"""The tolerances of the op tests reject realistic bugs.

Each op's accuracy assertion, the one its own tests use, is run on the real backends (they pass) and
on small deliberately broken variants (a dropped top-k mask, swapped branch weights, fp16
accumulation, a one-pixel shift, a missing bias, ...), which it must reject. A tolerance loose
enough to let one of these through would make the op's tests prove nothing.
"""
from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F

from ddsa_kernels import channel_norm, ddsa_topk, depthwise_chain, depthwise_chain_mlp, depthwise_conv
from ddsa_kernels.testing import naive_dual_attention
from ddsa_kernels._registry import available_backends

import op_cases
from conv_oracles import chain_mlp_oracle, chain_oracle, channel_norm_oracle, depthwise_conv_oracle
from op_checks import assert_float32_close_to_float64

F64 = torch.float64
Tensor = torch.Tensor


def _cpu_backends(op: str) -> list[str]:
    return [n for n in ("auto", "cpu", "triton", "reference") if n == "auto" or n in available_backends("cpu", op=op)]


# ---------------------------------------------------------------------------------------------
# dual_attention: tests/op_cases.py's rule, max|got − oracle| ≤ 2·max|fp32-accumulating reference
# in the same dtype − oracle| + atol·scale, for the output and all five gradients
# ---------------------------------------------------------------------------------------------


def _dropped_topk_mask(q, k, v, t, w, topk):
    return naive_dual_attention(q, k, v, t, w, (None,) * len(topk))


def _swapped_branch_weights(q, k, v, t, w, topk):
    return naive_dual_attention(q, k, v, t, w.flip(0), topk)


def _swapped_k_and_q(q, k, v, t, w, topk):
    return naive_dual_attention(k, q, v, t, w, topk)


def _one_pixel_shift(q, k, v, t, w, topk):
    return naive_dual_attention(q, k, v, t, w, topk).roll(1, dims=-1)


def _temperature_after_softmax(q, k, v, t, w, topk):
    """τ scales the probabilities instead of the scores (softmax(S)·τ instead of softmax(τ·S))."""
    ones = torch.ones_like(t)
    return naive_dual_attention(q, k, v, ones, w, topk) * t.view(1, -1, 1, 1)


def _fp16_accumulating(q, k, v, t, w, topk, tile=16):
    """q·kᵀ and the squared norms summed over N with an fp16 running sum (each tile of 16 pixels in
    fp32): what a kernel accumulating in the input precision computes."""
    gram = torch.zeros(q.shape[:-1] + (k.shape[-2],), dtype=torch.float16)
    nq = torch.zeros(q.shape[:-1], dtype=torch.float16)
    nk = torch.zeros(k.shape[:-1], dtype=torch.float16)
    for s in range(0, q.shape[-1], tile):
        qc, kc = q[..., s:s + tile].float(), k[..., s:s + tile].float()
        gram = (gram.float() + qc @ kc.transpose(-1, -2)).half()
        nq = (nq.float() + qc.square().sum(-1)).half()
        nk = (nk.float() + kc.square().sum(-1)).half()
    norms = nq.float().sqrt().clamp_min(1e-12).unsqueeze(-1) * nk.float().sqrt().clamp_min(1e-12).unsqueeze(-2)
    scores = t.view(1, -1, 1, 1) * gram.float() / norms
    attn = 0
    for wi, keep in zip(w, topk):
        masked = scores
        if keep:
            threshold = torch.topk(scores, keep, dim=-1).values[..., -1:]
            masked = scores.masked_fill(scores < threshold, float("-inf"))
        attn = attn + wi * torch.softmax(masked, dim=-1)
    return (attn @ v.float()).to(q.dtype)


ATTENTION_BUGS: dict[str, Callable] = {
    "dropped_topk_mask": _dropped_topk_mask,
    "swapped_branch_weights": _swapped_branch_weights,
    "swapped_q_and_k": _swapped_k_and_q,
    "one_pixel_shift": _one_pixel_shift,
    "temperature_after_softmax": _temperature_after_softmax,
}


def _attention_case(dtype=torch.float32, pixels=37, fn=None, backend="reference"):
    topk = ddsa_topk(16)
    temperature, weights = op_cases.params(2, len(topk))
    return op_cases.check_case(*op_cases.make_inputs(1, 2, 16, pixels, seed=41), temperature, weights, topk,
                               backend=backend, device="cpu", dtype=dtype, layout="qkv", fn=fn)


@pytest.mark.parametrize("backend", _cpu_backends("dual_attention"))
def test_attention_rule_accepts_the_backends(backend):
    _attention_case(backend=backend)


@pytest.mark.parametrize("bug", list(ATTENTION_BUGS))
def test_attention_rule_rejects(bug):
    with pytest.raises(AssertionError, match="max error"):
        _attention_case(fn=ATTENTION_BUGS[bug])


def test_attention_rule_rejects_fp16_accumulation():
    """At N = 3000 an fp16 running sum of q·kᵀ is off by ~0.1 in the output, 70× the bound; the
    fp32-accumulating backend on the same fp16 tensors passes."""
    def case(**kw):
        topk = ddsa_topk(48)
        temperature, weights = op_cases.params(2, len(topk))
        return op_cases.check_case(*op_cases.make_inputs(2, 2, 48, 3000, seed=4), temperature, weights, topk,
                                   device="cpu", dtype=torch.float16, layout="qkv", **kw)

    case(backend="auto")
    with pytest.raises(AssertionError, match=r"^out: max error"):
        case(backend="auto", fn=_fp16_accumulating)


def test_attention_rule_rejects_dropped_ties():
    """Strict > instead of ≥ at the threshold drops tied columns (the exact-tie construction)."""
    q64, k64, v64 = op_cases.tie_inputs(1, 2, 48, 37)
    topk = (1, 5, 17, 33)
    temperature, weights = op_cases.params(2, len(topk))

    def strict(q, k, v, t, w, topk):
        qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        scores = t.view(1, -1, 1, 1) * (qn @ kn.transpose(-1, -2))
        attn = 0
        for wi, keep in zip(w, topk):
            threshold = torch.topk(scores, keep, dim=-1).values[..., -1:]
            kept = scores > threshold
            kept |= scores == scores.amax(-1, keepdim=True)  # keep=1: at least the maximum
            attn = attn + wi * torch.softmax(scores.masked_fill(~kept, float("-inf")), dim=-1)
        return attn @ v

    op_cases.check_case(q64, k64, v64, temperature, weights, topk, backend="reference", device="cpu")
    with pytest.raises(AssertionError, match="max error"):
        op_cases.check_case(q64, k64, v64, temperature, weights, topk, backend="reference", device="cpu", fn=strict)


# ---------------------------------------------------------------------------------------------
# channel_norm: tests/test_channel_norm.py's check_against_oracle (F.layer_norm oracle, the
# low-precision rule), with the op under test replaced by the broken variant
# ---------------------------------------------------------------------------------------------


def _norm_missing_bias(x, w, b, *, subtract_mean=True, backend="auto"):
    return channel_norm(x, w, b * 0, subtract_mean=subtract_mean, backend=backend)


def _norm_unbiased_variance(x, w, b, eps=1e-5, *, subtract_mean=True, backend="auto"):
    xa = x.float()
    mu = xa.mean(1, keepdim=True)
    var = xa.var(1, unbiased=True, keepdim=True)
    y = ((xa - mu) if subtract_mean else xa) / torch.sqrt(var + eps) * w.float().view(1, -1, 1, 1)
    return (y + b.float().view(1, -1, 1, 1) if b is not None else y).to(x.dtype)


def _norm_eps_outside_sqrt(x, w, b, eps=1e-5, *, subtract_mean=True, backend="auto"):
    xa = x.float()
    mu = xa.mean(1, keepdim=True)
    sigma = xa.var(1, unbiased=False, keepdim=True).sqrt() + eps
    y = ((xa - mu) if subtract_mean else xa) / sigma * w.float().view(1, -1, 1, 1)
    return (y + b.float().view(1, -1, 1, 1) if b is not None else y).to(x.dtype)


def _fp16_channel_mean(t):
    acc = torch.zeros_like(t[:, :1])
    for c in range(t.shape[1]):
        acc = (acc + t[:, c:c + 1]).half()
    return (acc / t.shape[1]).half()


def _norm_low_precision_statistics(x, w, b, eps=1e-5, *, subtract_mean=True, backend="auto"):
    """Mean and variance summed over the channels with an fp16 running sum, not fp32."""
    mu = _fp16_channel_mean(x)
    var = _fp16_channel_mean((x - mu) ** 2)
    y = (((x - mu) if subtract_mean else x) / torch.sqrt(var + eps)).float() * w.float().view(1, -1, 1, 1)
    return (y + b.float().view(1, -1, 1, 1) if b is not None else y).to(x.dtype)


NORM_BUGS = {
    "missing_bias": (_norm_missing_bias, torch.float32, True),
    "unbiased_variance": (_norm_unbiased_variance, torch.float32, True),
    "unbiased_variance_biasfree": (_norm_unbiased_variance, torch.float32, False),
    "eps_outside_sqrt": (_norm_eps_outside_sqrt, torch.float32, True),
    "fp16_statistics": (_norm_low_precision_statistics, torch.float16, True),
}


def _norm_case(monkeypatch, fn, dtype, subtract_mean, backend="auto"):
    import test_channel_norm as tcn

    if fn is not None:
        monkeypatch.setattr(tcn, "channel_norm", fn)
    # offset 2: a mean far from 0 (fp16 sums of it round), small variance on some pixels
    x, w, b, dy = tcn.make_inputs(2, 96, 7, 5, seed=11, offset=2.0, bias=subtract_mean)
    if subtract_mean:
        x[0, :, 0, 0] = 2.0 + 1e-3 * x[0, :, 0, 0]  # variance ~1e-6: eps-dominated
    tcn.check_against_oracle(backend, "cpu", x, w, b, dy, subtract_mean, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("subtract_mean", [True, False])
def test_channel_norm_check_accepts_the_backend(monkeypatch, dtype, subtract_mean):
    _norm_case(monkeypatch, None, dtype, subtract_mean)


@pytest.mark.parametrize("bug", list(NORM_BUGS))
def test_channel_norm_check_rejects(monkeypatch, bug):
    fn, dtype, subtract_mean = NORM_BUGS[bug]
    with pytest.raises(AssertionError, match=r"\): error .* > 2 × plain"):
        _norm_case(monkeypatch, fn, dtype, subtract_mean)


def test_channel_norm_oracle_is_torch_layer_norm():
    """The oracle above is F.layer_norm for WithBias; the package's plain formula agrees with it."""
    from ddsa_kernels.testing import naive_channel_norm

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 24, 5, 6, generator=gen, dtype=F64)
    w, b = torch.rand(24, generator=gen, dtype=F64) + 0.5, torch.randn(24, generator=gen, dtype=F64)
    want = F.layer_norm(x.permute(0, 2, 3, 1), (24,), w, b, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(channel_norm_oracle(x, w, b), want, rtol=0, atol=0)
    torch.testing.assert_close(naive_channel_norm(x, w, b), want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# depthwise_conv, depthwise_chain, depthwise_chain_mlp: the float32 tolerance of their op tests,
# rtol 1e-5 and atol 1e-5·max(1, max|oracle|), on the value and every gradient
# ---------------------------------------------------------------------------------------------


def assert_float32_matches_oracle(fn: Callable, oracle: Callable, inputs64: list[Optional[Tensor]]) -> None:
    """The op tests' own float32 assertion (op_checks.assert_float32_close_to_float64), for a fixed upstream."""
    assert_float32_close_to_float64(fn, oracle, inputs64, _upstream(oracle, inputs64))


def _upstream(oracle, inputs64):
    with torch.no_grad():
        shape = oracle(*inputs64).shape
    return torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=F64)


def _conv_inputs(c=6, h=13, w=11, k=3):
    gen = torch.Generator().manual_seed(21)
    return [torch.randn(2, c, h, w, generator=gen, dtype=F64), torch.randn(c, 1, k, k, generator=gen, dtype=F64),
            torch.randn(c, generator=gen, dtype=F64)]


CONV_BUGS = {
    "missing_bias": lambda x, w, b: F.conv2d(x, w, None, padding=w.shape[-1] // 2, groups=x.shape[1]),
    "one_pixel_shift": lambda x, w, b: depthwise_conv_oracle(x, w, b).roll(1, dims=-1),
    "flipped_kernel": lambda x, w, b: depthwise_conv_oracle(x, w.flip(-1, -2), b),
    # borders only: replicated instead of zero padding
    "replicate_padding": lambda x, w, b: F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, b, groups=x.shape[1]),
}


def _chain_inputs():
    gen = torch.Generator().manual_seed(22)
    return [torch.randn(2, 3 * 4, 12, 10, generator=gen, dtype=F64), torch.randn(4, 1, 3, 3, generator=gen, dtype=F64),
            torch.randn(4, generator=gen, dtype=F64)]


def _chain_with(x, w, b, *, relu_last=True, skip=True, order=(0, 1, 2)):
    c = w.shape[0]
    groups = [x[:, i * c:(i + 1) * c] for i in order]
    outs: list[Tensor] = []
    for i, xi in enumerate(groups):
        y = depthwise_conv_oracle(xi if not outs or not skip else outs[-1] + xi, w, b)
        outs.append(torch.relu(y) if (relu_last or i < len(groups) - 1) else y)
    return torch.cat(outs, dim=1)


CHAIN_BUGS = {
    "no_relu_on_last_link": lambda x, w, b: _chain_with(x, w, b, relu_last=False),
    "missing_skip_sum": lambda x, w, b: _chain_with(x, w, b, skip=False),
    "swapped_groups": lambda x, w, b: _chain_with(x, w, b, order=(1, 0, 2)),
    "missing_bias": lambda x, w, b: chain_oracle(x, w, None),
    "one_pixel_shift": lambda x, w, b: chain_oracle(x, w, b).roll(1, dims=-2),
}


def _mlp_inputs():
    gen = torch.Generator().manual_seed(23)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=F64) * scale

    c, hidden, n = 5, 4, 3
    return [rnd(2, c, 14, 9), rnd(n * hidden, c, 1, 1, scale=c ** -0.5), rnd(n * hidden), rnd(hidden, 1, 3, 3, scale=1 / 3),
            rnd(hidden), rnd(c, n * hidden, 1, 1, scale=(n * hidden) ** -0.5), rnd(c)]


def _mlp_swapped_halves(x, w_in, b_in, w_dw, b_dw, w_out, b_out):
    """The chain's output groups fed to the output projection in reverse order."""
    y = chain_oracle(F.conv2d(x, w_in, b_in), w_dw, b_dw)
    hidden = w_dw.shape[0]
    y = torch.cat(list(reversed(y.split(hidden, dim=1))), dim=1)
    return F.conv2d(y, w_out, b_out)


MLP_BUGS = {
    "missing_output_bias": lambda x, wi, bi, wd, bd, wo, bo: chain_mlp_oracle(x, wi, bi, wd, bd, wo, None),
    "swapped_chain_groups": _mlp_swapped_halves,
    "depthwise_bias_dropped": lambda x, wi, bi, wd, bd, wo, bo: chain_mlp_oracle(x, wi, bi, wd, None, wo, bo),
    "one_pixel_shift": lambda *a: chain_mlp_oracle(*a).roll(1, dims=-1),
}


# op: (the op, its float64 oracle, its inputs, its broken variants)
CONV_OPS = {
    "depthwise_conv": (depthwise_conv, depthwise_conv_oracle, _conv_inputs, CONV_BUGS),
    "depthwise_chain": (depthwise_chain, chain_oracle, _chain_inputs, CHAIN_BUGS),
    "depthwise_chain_mlp": (depthwise_chain_mlp, chain_mlp_oracle, _mlp_inputs, MLP_BUGS),
}


@pytest.mark.parametrize("op,backend", [(op, b) for op in CONV_OPS for b in _cpu_backends(op) if b != "triton"])
def test_conv_op_tolerance_accepts_the_backend(op, backend):
    fn, oracle, inputs, _ = CONV_OPS[op]
    assert_float32_matches_oracle(lambda *a: fn(*a, backend=backend), oracle, inputs())


@pytest.mark.parametrize("op,bug", [(op, bug) for op, spec in CONV_OPS.items() for bug in spec[3]])
def test_conv_op_tolerance_rejects(op, bug):
    _, oracle, inputs, bugs = CONV_OPS[op]
    with pytest.raises(AssertionError, match="not close"):
        assert_float32_matches_oracle(bugs[bug], oracle, inputs())


def test_error_scale_terms_reproduce_the_oracle_gradients():
    """The float64 terms the error scales are built from (op_cases._float64_terms, written apart
    from the backends) satisfy dq = P k − s_q⊙q and dk = Pᵀ q − s_k⊙k against autograd of the
    float64 oracle, with a zero row and a tie present: the scales measure the right summands."""
    q, k, v = op_cases.tie_inputs(1, 2, 16, 23)
    q[0, 1, 4] = 0.0
    topk = (None, 5)
    temperature, weights = op_cases.params(2, 2)
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    _, dq, dk, _, _, _ = op_cases.run(lambda *a: naive_dual_attention(*a, topk), q, k, v, temperature, weights, go)
    _, _, p, s_q, s_k = op_cases._float64_terms(q, k, v, temperature, weights, go, topk, 1e-12)
    torch.testing.assert_close(p @ k - s_q.unsqueeze(-1) * q, dq, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(p.transpose(-1, -2) @ q - s_k.unsqueeze(-1) * k, dk, rtol=1e-9, atol=1e-12)
