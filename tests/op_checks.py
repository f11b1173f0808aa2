"""Checks the convolutional op tests (depthwise_conv, depthwise_chain, depthwise_chain_mlp, gated_ffn,
mixed_scale_ffn) share: values and gradients through autograd, thread-count runs, fullgraph compile, which
kernels the profiler saw, the input-error cases of the three-stage feed-forward signature, and the rows their
benchmark scripts write. Each helper asserts against what its caller passes in (an oracle, an eager run, the
expected message); none computes an expected value itself."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import pytest
import torch

Tensor = torch.Tensor


def value_and_grads(fn: Callable, inputs: Sequence[Optional[Tensor]], grad: Tensor, *,
                    allow_unused: bool = False) -> list:
    """[fn(*leaves), d⟨fn, grad⟩/d leaf for each leaf that is not None], on fresh detached copies of
    ``inputs`` (None stays None, as an absent bias); values detached."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    y = fn(*leaves)
    present = [t for t in leaves if t is not None]
    return [y.detach(), *torch.autograd.grad(y, present, grad.to(y.dtype), allow_unused=allow_unused)]


def assert_value_and_grads_match(fn: Callable, oracle: Callable, inputs: Sequence[Optional[Tensor]], grad: Tensor,
                                  **tol) -> None:
    """fn and ``oracle`` on the same inputs: the value and the gradient of every input that is not None (for the
    upstream ``grad``) agree within ``tol``."""
    got = value_and_grads(fn, inputs, grad)
    want = value_and_grads(oracle, inputs, grad)
    assert len(got) == len(want) == 1 + sum(t is not None for t in inputs)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, **tol)


def assert_float32_close_to_float64(fn: Callable, oracle: Callable, inputs64: Sequence[Optional[Tensor]],
                                    grad: Tensor) -> None:
    """fn on float32 copies of ``inputs64`` against ``oracle`` on them in float64, value and every gradient: each
    float32 and within rtol 1e-5, atol 1e-5·max(1, max|oracle|), the float32 tolerance of the depth-wise op tests
    (test_tolerances_reject_bugs shows it rejects broken variants; a variant that leaves an input unused, so its
    gradient None, is rejected too)."""
    want = value_and_grads(oracle, inputs64, grad, allow_unused=True)
    got = value_and_grads(fn, [t.float() if t is not None else None for t in inputs64], grad, allow_unused=True)
    assert len(got) == len(want)
    for g, e in zip(got, want):
        assert g is not None, "a gradient is missing"
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5 * max(1.0, e.abs().max().item()))


def assert_cpu_auto_order(op: str, fused: Sequence[str]) -> None:
    """For a depth-wise op with backends reference, cpu and eager: "auto" takes the cpu kernel for float32 CPU
    tensors where it is in ``fused`` (eager otherwise), eager for bfloat16 and on CUDA."""
    from ddsa_kernels import build_info
    from ddsa_kernels._registry import resolve_backend

    assert resolve_backend("auto", "cpu", torch.float32, op=op) == ("cpu" if "cpu" in fused else "eager")
    assert resolve_backend("auto", "cpu", torch.bfloat16, op=op) == "eager"
    assert resolve_backend("auto", "cuda", torch.float16, op=op) == "eager"
    assert set(build_info(op)) == {"reference", "cpu", "eager"}


def per_thread_count(fn: Callable[[], object], counts: Sequence[int]) -> list:
    """[fn() with torch.set_num_threads(n) for n in counts]; the thread count is restored afterwards."""
    before = torch.get_num_threads()
    try:
        results = []
        for n in counts:
            torch.set_num_threads(n)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(before)


def assert_thread_count_independent(fn: Callable, leaves: Sequence[Tensor], counts: Sequence[int] = (1, 2)) -> None:
    """fn(*leaves) and the gradients of its squared sum w.r.t. ``leaves`` (which require grad) are
    bitwise equal whatever the thread count."""
    def value_and_grads_of_square():
        y = fn(*leaves)
        return (y.detach(), *torch.autograd.grad(y.square().sum(), leaves))

    results = per_thread_count(value_and_grads_of_square, counts)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def compile_fullgraph(f: Callable, *example) -> Callable:
    """torch.compile(f, fullgraph=True, backend="aot_eager"), once dynamo traced f on ``example`` with no
    graph break."""
    assert torch._dynamo.explain(f)(*example).graph_break_count == 0
    return torch.compile(f, fullgraph=True, backend="aot_eager")


def assert_compiled_value_and_grad(f: Callable, x: Tensor, want_fn: Optional[Callable] = None) -> None:
    """f compiled fullgraph (no graph break on x, which requires grad): its value and d(sum)/dx equal
    those of ``want_fn`` (default: f itself, eager)."""
    y = compile_fullgraph(f, x)(x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    want = (want_fn or f)(x)
    (want_gx,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(gx, want_gx)


def assert_compiled_inference(op: Callable, args: Sequence[Optional[Tensor]]) -> None:
    """Without gradients, x ↦ op(x, *args[1:]).sin() compiled fullgraph (no graph break) equals its eager run."""
    def f(x, *rest):
        return op(x, *rest).sin()

    with torch.no_grad():
        torch.testing.assert_close(compile_fullgraph(f, *args)(*args), f(*args))


def assert_compiled_grads(f: Callable, leaves: Sequence[Tensor], want_fn: Callable, **tol) -> None:
    """The gradients of sum(f(*leaves)), f compiled fullgraph (no graph break), equal those of
    sum(want_fn(*leaves)) in eager mode, within ``tol``."""
    got = torch.autograd.grad(compile_fullgraph(f, *leaves)(*leaves).sum(), leaves)
    want = torch.autograd.grad(want_fn(*leaves).sum(), leaves)
    assert len(got) == len(want) == len(leaves)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **tol)


def requiring_grad(*tensors: Optional[Tensor]) -> list:
    """The tensors, each set to require grad in place (None stays None)."""
    return [t.requires_grad_(True) if t is not None else None for t in tensors]


def maps_around_the_fused_threshold(make: Callable, min_pixels: int, small_height: Optional[int] = None):
    """(large, small): float32 arguments ``make(1, 2, H, W, 2, dtype=torch.float32)`` of a square map of at
    least ``min_pixels`` pixels, and of one as wide with ``small_height`` rows (default: half as many)."""
    side = int(min_pixels ** 0.5)
    large = make(1, 2, side, side, 2, dtype=torch.float32)
    small = make(1, 2, side // 2 if small_height is None else small_height, side, 2, dtype=torch.float32)
    return large, small


def profiled_keys(fn: Callable[[], object]) -> list[str]:
    """The names of the CPU operators the profiler recorded while fn() ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.key for e in prof.key_averages()]


def ran(fn: Callable[[], object], name: str, *, suffix: bool = False) -> bool:
    """Whether fn() ran an operator whose name contains ``name`` (ends with it where ``suffix``)."""
    return any(key.endswith(name) if suffix else name in key for key in profiled_keys(fn))


def assert_low_precision_takes_torch_ops(op: Callable, eager: Callable, args: Sequence[Optional[Tensor]],
                                         kernels: Sequence[str], *, autocast: bool = True) -> None:
    """Without gradients: ``op`` on the bfloat16 copy of ``args`` runs none of ``kernels`` and equals ``eager``
    bitwise; under CPU autocast to bfloat16 (where ``autocast``), ``op`` on the float32 ``args`` runs none of
    them either."""
    half = [a.bfloat16() if a is not None else None for a in args]
    with torch.no_grad():
        for kernel in kernels:
            assert not ran(lambda: op(*half), kernel)
        assert torch.equal(op(*half), eager(*half))
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for kernel in kernels:
                    assert not ran(lambda: op(*args), kernel)


def set_arg(i: int, value) -> Callable[[list], None]:
    """A change of an argument list: args[i] = value(args[i]) (value callable) or value."""
    return lambda a: a.__setitem__(i, value(a[i]) if callable(value) else value)


def assert_bad_input_named(op: Callable, args: Sequence, change: Callable[[list], None], message: str) -> None:
    """op on a copy of ``args`` changed by ``change`` raises ValueError or TypeError matching ``message``."""
    args = list(args)
    change(args)
    with pytest.raises((ValueError, TypeError), match=message):
        op(*args)


# The input errors of every op with the signature (x, w_in, b_in, w_dw, b_dw, w_out, b_out) and the checks
# they share (depthwise_chain_mlp, gated_ffn): HEAD before the op's own depth-wise cases, TAIL after.
PROJECTION_ERRORS_HEAD = [
    (set_arg(0, lambda t: t[:, :, 0]), "x must have shape"),
    (set_arg(1, lambda t: t[:, :-1]), "w_in must have shape"),
]
PROJECTION_ERRORS_TAIL = [
    (set_arg(5, lambda t: t[:, :-1]), "w_out must have shape"),
    (set_arg(2, lambda t: t[:-1]), "b_in must have shape"),
    (set_arg(4, lambda t: t[:-1]), "b_dw must have shape"),
    (set_arg(6, lambda t: t[:-1]), "b_out must have shape"),
    (set_arg(3, lambda t: t.float()), "w_dw has dtype torch.float32 but x has dtype torch.float64"),
    (set_arg(0, lambda t: t.long()), "x has dtype torch.int64"),
    (set_arg(5, "w"), "w_out must be a torch.Tensor"),
]


def assert_bench_row(row: dict, methods: set, base: str, tasks: Sequence[str] = ("fwd",), rounds: int = 2) -> None:
    """One row of an op benchmark's JSON: every method of ``methods`` agrees with the baseline to 1e-5 in the
    forward, and for each task was timed ``rounds`` times, its speedup the ``base`` method's median over its own."""
    assert set(row["max_abs_diff_fwd"]) == methods and max(row["max_abs_diff_fwd"].values()) < 1e-5
    for task in tasks:
        assert set(row[task]) == methods
        for name, rec in row[task].items():
            assert len(rec["rounds_ms"]) == rounds
            assert row[f"speedup_{task}"][name] == pytest.approx(row[task][base]["median_ms"] / rec["median_ms"])
