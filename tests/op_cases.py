"""Shared cases and the accuracy rule of the op tests (Triton on CPU and GPU, the CUDA backend).

Accuracy rule (flash-attention's): for every output and gradient,
    max|backend − oracle| ≤ 2 · max|reference run in the same dtype − oracle| + atol · scale,
where the oracle is the reference in float64 on the very same (rounded) inputs, the same-dtype
reference accumulates in fp32 (as every backend must), and scale is the largest |oracle| value of
the tensor. dq = P k − s_q⊙q and dk = Pᵀ q − s_k⊙k can be pure cancellation (at N = 1 they are 0
in exact arithmetic), so their scale also includes the size of those summands, computed in
float64: an error bound proportional to the result alone would fail whatever the kernel does.
Likewise for dτ and dw, sums over B·H·C² terms of either sign.
"""
from __future__ import annotations

import pytest
import torch

from ddsa_kernels import ddsa_topk, drsformer_topk, dual_attention, restormer_topk
from ddsa_kernels.testing import naive_dual_attention

F64 = torch.float64
ATOL = {torch.float32: 1e-5, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def make_inputs(batch, heads, channels, pixels, *, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (scale * torch.randn(batch, heads, channels, pixels, generator=gen, dtype=F64) for _ in range(3))
    return q, k, v


def lay_out(q, k, v, dtype, device, layout="contiguous"):
    """q, k, v in ``dtype`` on ``device`` with the given memory layout (same values)."""
    batch, heads, channels, pixels = q.shape
    if layout == "contiguous":
        return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))
    if layout == "qkv":  # the model's case: chunks of one (B, 3·H·C, N) tensor
        qkv = torch.cat([t.reshape(batch, heads * channels, pixels) for t in (q, k, v)], dim=1)
        qkv = qkv.to(device=device, dtype=dtype)
        return tuple(t.view(batch, heads, channels, pixels) for t in qkv.chunk(3, dim=1))
    if layout == "qkv_shifted":  # as "qkv", in a storage that starts one element in (no row aligned)
        qkv = torch.cat([t.reshape(batch, heads * channels, pixels) for t in (q, k, v)], dim=1)
        flat = torch.empty(qkv.numel() + 1, dtype=dtype, device=device)
        flat[1:] = qkv.flatten().to(device=device, dtype=dtype)
        qkv = flat[1:].view(qkv.shape)
        return tuple(t.view(batch, heads, channels, pixels) for t in qkv.chunk(3, dim=1))
    if layout == "n_major":  # pixels fastest-varying last: stride 1 along C
        return tuple(t.transpose(-1, -2).contiguous().to(device=device, dtype=dtype).transpose(-1, -2) for t in (q, k, v))
    raise ValueError(layout)


def run(fn, q, k, v, temperature, weights, grad_out):
    """Output and the five gradients of ``fn`` (autograd), detached."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v, temperature, weights)]
    out = fn(*leaves)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


NAMES = ("out", "dq", "dk", "dv", "dtemperature", "dweights")


def _float64_terms(q, k, v, temperature, weights, grad_out, topk, eps):
    """The backward's intermediate terms in float64, from the op's math written here (torch.topk,
    torch.softmax; no code under test): (probs (B, H, n, C, C), Ŝ, P, s_q, s_k) with
    dq = P k − s_q⊙q and dk = Pᵀ q − s_k⊙k."""
    norm_q, norm_k = q.norm(dim=-1), k.norm(dim=-1)
    nq, nk = norm_q.clamp_min(eps), norm_k.clamp_min(eps)
    s_hat = (q / nq.unsqueeze(-1)) @ (k / nk.unsqueeze(-1)).transpose(-2, -1)
    scores = temperature.view(1, -1, 1, 1) * s_hat
    probs = []
    for keep in topk:
        masked = scores
        if keep:  # None or 0: every column
            threshold = torch.topk(scores, keep, dim=-1).values[..., -1:]
            masked = scores.masked_fill(scores < threshold, float("-inf"))
        probs.append(torch.softmax(masked, dim=-1))
    probs = torch.stack(probs, dim=2)
    grad_attn = (grad_out @ v.transpose(-2, -1)).unsqueeze(2)
    d_scores = (weights.view(1, 1, -1, 1, 1) * probs
                * (grad_attn - (grad_attn * probs).sum(-1, keepdim=True))).sum(2)
    d_gram = d_scores * temperature.view(1, -1, 1, 1)
    p = d_gram / (nq.unsqueeze(-1) * nk.unsqueeze(-2))
    # F.normalize divides by max(‖x‖, eps): rows below eps have no projection term.
    scale_q = torch.where(norm_q >= eps, (d_gram * s_hat).sum(-1) / nq**2, torch.zeros_like(nq))
    scale_k = torch.where(norm_k >= eps, (d_gram * s_hat).sum(-2) / nk**2, torch.zeros_like(nk))
    return probs, s_hat, p, scale_q, scale_k


def error_scales(oracle, q, k, v, temperature, weights, grad_out, topk, eps=1e-12):
    """Per output of NAMES, the magnitude errors are measured against (float64 inputs; the terms
    come from :func:`_float64_terms`, never from the backends)."""
    probs, s_hat, p, scale_q, scale_k = _float64_terms(q, k, v, temperature, weights, grad_out, topk, eps)
    grad_attn = grad_out @ v.transpose(-2, -1)
    summand_q = (p.abs() @ k.abs() + (scale_q.unsqueeze(-1) * q).abs()).max().item()
    summand_k = (p.transpose(-2, -1).abs() @ q.abs() + (scale_k.unsqueeze(-1) * k).abs()).max().item()
    # dτ_h = Σ dS ⊙ Ŝ and dw_i = Σ dA ⊙ P_i (sums over b, rows, columns) cancel as well: their
    # scales are the sums of the terms' magnitudes, with dS = Σ_i w_i P_i ⊙ (dA − rowsum(dA ⊙ P_i)).
    ga = grad_attn.unsqueeze(2)  # (B, H, 1, C, C) against probs (B, H, n_branches, C, C)
    rowsum = (ga * probs).sum(-1, keepdim=True)
    ds_abs = (weights.abs().view(1, 1, -1, 1, 1) * probs * (ga.abs() + rowsum.abs())).sum(2)
    summand_t = (ds_abs * s_hat.abs()).sum(dim=(0, 2, 3)).max().item()
    summand_w = (ga.abs() * probs).sum(dim=(0, 1, 3, 4)).max().item()
    scales = [o.abs().max().item() for o in oracle]
    scales[1] = max(scales[1], summand_q)
    scales[2] = max(scales[2], summand_k)
    if len(scales) > 5:
        scales[4] = max(scales[4], summand_t)
        scales[5] = max(scales[5], summand_w)
    return scales


def check_case(q64, k64, v64, temperature, weights, topk, *, backend, device, dtype=torch.float32,
               layout="contiguous", seed=1, fn=None):
    """Run ``backend``, the same-dtype reference and the float64 oracle; apply the accuracy rule.

    q64, k64, v64: (B, H, C, N) float64 values (rounded to ``dtype`` before any run); temperature
    (H,), weights (n_branches,). fn: ``fn(q, k, v, temperature, weights, topk)`` run instead of the
    backend (the deliberately broken variants that prove the rule rejects bugs). Returns (got,
    oracle, {name: (error, bound)}).
    """
    q, k, v = lay_out(q64, k64, v64, dtype, device, layout)
    temp = temperature.to(device=device, dtype=torch.float32)
    w = weights.to(device=device, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    go64 = torch.randn(q.shape, generator=gen, dtype=F64)
    go = go64.to(device=device, dtype=dtype)

    if fn is None:
        got = run(lambda *a: dual_attention(*a, topk, backend=backend), q, k, v, temp, w, go)
    else:
        got = run(lambda *a: fn(*a, topk), q, k, v, temp, w, go)
    base = run(lambda *a: naive_dual_attention(*a, topk), q, k, v, temp, w, go)
    oracle = run(
        lambda *a: naive_dual_attention(*a, topk),
        *(t.detach().cpu().to(F64) for t in (q, k, v, temp, w)),
        go.cpu().to(F64),
    )
    assert got[0].dtype == dtype and got[0].shape == q.shape
    for i, name in enumerate(NAMES):
        assert got[i].dtype == base[i].dtype, f"{name}: dtype {got[i].dtype} != {base[i].dtype}"
    scales = error_scales(oracle, *(t.detach().cpu().to(F64) for t in (q, k, v, temp, w, go)), topk)
    errors = assert_accuracy_rule(got, base, oracle, scales, dtype, backend)
    return got, oracle, errors


def assert_accuracy_rule(got, base, oracle, scales, dtype, backend, names=NAMES):
    """max|got − oracle| ≤ 2·max|base − oracle| + atol(dtype)·scale for each tensor (see module doc).

    got: the backend's tensors; base: the reference backend run in the same dtype (fp32
    accumulation); oracle: float64; scales: from :func:`error_scales`. Returns {name: (err, bound)}.
    """
    errors = {}
    for name, g, b, ref, scale in zip(names, got, base, oracle, scales):
        g = g.detach().cpu().to(F64)
        b = b.detach().cpu().to(F64)
        ref = ref.detach().cpu().to(F64)
        assert torch.isfinite(g).all(), f"{name}: non-finite values from {backend}"
        err, base_err = (g - ref).abs().max().item(), (b - ref).abs().max().item()
        # dτ and dw are fp32 sums in every dtype: hold them to fp32's atol.
        atol = ATOL[torch.float32] if name in ("dtemperature", "dweights") else ATOL[dtype]
        bound = 2 * base_err + atol * max(scale, 1e-30)
        errors[name] = (err, bound)
        assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} (reference {dtype}: {base_err:.3e})"
    return errors


def params(heads, n_branches, seed=2):
    gen = torch.Generator().manual_seed(seed)
    temperature = 0.5 + torch.rand(heads, generator=gen, dtype=F64)
    weights = 0.1 + torch.rand(n_branches, generator=gen, dtype=F64)
    return temperature.float().double(), weights.float().double()


def tie_inputs(batch, heads, channels, pixels):
    """q, k, v float64 whose score rows are made of 3 groups of exact ties.

    k's rows are drawn from a pool of 3 vectors; q and the pool hold small integers, so every dot
    product is exact in fp32 whatever the summation order (a BLAS call's order may differ per
    column): equal k rows give bitwise-equal scores, true ties.
    """
    _, _, v64 = make_inputs(batch, heads, channels, pixels, seed=10)
    gen = torch.Generator().manual_seed(11)
    q64 = torch.randint(-4, 5, (batch, heads, channels, pixels), generator=gen).to(F64)
    pool = torch.randint(-4, 5, (batch, heads, 3, pixels), generator=gen).to(F64)
    pick = torch.randint(0, 3, (channels,), generator=gen)
    pick[:3] = torch.arange(3)
    return q64, pool[:, :, pick].contiguous(), v64


def assert_ties_kept(probs, q64, k64, temperature, topk):
    """Each branch's probabilities (B, H, n, C, C) are non-zero exactly on the scores ≥ the row's
    k-th largest (all ties kept), and the inputs did put ties at some threshold."""
    # Exact integer products first, then element-wise scaling: equal k rows stay bitwise equal.
    norms_q, norms_k = q64.norm(dim=-1), k64.norm(dim=-1)
    scores = (q64 @ k64.transpose(-1, -2)) / (norms_q.unsqueeze(-1) * norms_k.unsqueeze(-2))
    scores = scores * temperature.view(1, -1, 1, 1)
    tie_seen = False
    for i, keep in enumerate(topk):
        threshold = torch.topk(scores, keep, dim=-1).values[..., -1:]
        expected = (scores >= threshold).sum(-1)
        assert torch.equal((probs[:, :, i] > 0).sum(-1), expected)
        tie_seen |= bool((expected > keep).any())
    assert tie_seen, "the construction must put ties at some threshold"


# ---- the sweep of the compiled backends' tests against the autograd oracle (test_extension_cpu, _cuda) ----
BRANCH_SETS = {
    "ddsa": ddsa_topk,
    "drsformer": drsformer_topk,
    "restormer": restormer_topk,
    "keep1_and_C": lambda c: (1, c),
}
# (B, H) per channel count: B·H from 1 to 8.
BATCH_HEADS = {8: (2, 4), 16: (1, 1), 48: (2, 1), 96: (1, 3)}


def over_branch_sets(test):
    """Parametrizes ``test(channels, pixels, branches)`` over C in BATCH_HEADS, N in (1, 37, 1000) and the
    names of BRANCH_SETS."""
    test = pytest.mark.parametrize("channels", list(BATCH_HEADS))(test)
    test = pytest.mark.parametrize("pixels", [1, 37, 1000])(test)
    return pytest.mark.parametrize("branches", list(BRANCH_SETS))(test)


def branch_set_case(channels, pixels, branches, make, upstream):
    """(inputs, topk, upstream gradient) of one over_branch_sets case: ``make(B, H, C, N, n_branches=...)`` and
    ``upstream(shape)`` are the calling test's factories (dtype, device, layout)."""
    batch, heads = BATCH_HEADS[channels]
    topk = BRANCH_SETS[branches](channels)
    return make(batch, heads, channels, pixels, n_branches=len(topk)), topk, upstream((batch, heads, channels, pixels))


def run_with_topk(fn, inputs, topk, grad_out):
    """(fn(*inputs, topk), its gradients w.r.t. every input for ``grad_out``), not detached."""
    out = fn(*inputs, topk)
    return (out, *torch.autograd.grad(out, inputs, grad_out.to(out.dtype)))


def as64(inputs):
    """Float64 leaves (requiring grad) with the values of ``inputs``."""
    return [x.detach().double().requires_grad_() for x in inputs]
