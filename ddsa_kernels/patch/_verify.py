"""The behaviour check every rule shares, and the optional first-call verification.

At patch time a candidate that matched structurally is run twice on float64 CPU copies with random
parameters: through its own ``__call__`` and with the fused forward on the ``reference`` backend. The
copies run in train and in eval mode, on a small input and on one larger than any window size the module
might use (its integer attributes and the integer constants of its class's methods set that size), so
that a fork whose forward depends on the mode or the image size is caught. A forward that takes more
than the input, or a class that overrides ``__call__``, is never patched.

With ``verify="first-call"`` the patched forward also runs the module's own forward once per mode on the
user's first real batch and unpatches that module, with a warning, when the two differ.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import types
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ._rule import Match, Rule, Tensor

F64 = torch.float64
_SIZE_LIKE = (8, 2048)     # integers in this range may be window or image sizes
_MAX_SIDE = 640


def signature_problem(m: nn.Module) -> str:
    """Why ``m``'s forward cannot be replaced by a fused ``forward(x)`` (empty string when it can)."""
    cls = type(m)
    if cls.__call__ is not nn.Module.__call__ or cls._call_impl is not nn.Module._call_impl:
        return f"{cls.__name__} overrides nn.Module.__call__"
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    if len(params) != 1 or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD):
        names = ", ".join(str(p.replace(annotation=inspect.Parameter.empty)) for p in params)
        return f"its forward takes ({names}); the fused forward takes only the input x"
    return ""


def _code_ints(code: types.CodeType) -> Iterator[int]:
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_ints(c)
        elif isinstance(c, int) and not isinstance(c, bool):
            yield c


def _size_hints(m: nn.Module) -> list[int]:
    """Integer attributes of ``m`` and integer constants of its class's own methods."""
    found = [v for v in vars(m).values() if isinstance(v, int) and not isinstance(v, bool)]
    for cls in type(m).__mro__:
        if cls in (nn.Module, object) or cls.__module__.startswith("torch."):
            continue
        for value in vars(cls).values():
            if isinstance(value, int) and not isinstance(value, bool):
                found.append(value)
            func = getattr(value, "__func__", value)
            if isinstance(func, types.FunctionType):
                found.extend(_code_ints(func.__code__))
    return found


def test_sizes(m: nn.Module) -> list[tuple[int, int]]:
    """Input sizes of the behaviour check: a small odd one, and one larger than any size hint of ``m``."""
    hints = [v for v in _size_hints(m) if _SIZE_LIKE[0] <= v <= _SIZE_LIKE[1]]
    side = min(_MAX_SIDE, math.ceil(1.5 * max(hints)) + 7) if hints else 13
    return [(5, 7), (side, side + 4)]


def _randomise(twin: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in twin.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "temperature":
                lo, hi = 0.5, 2.0
            elif p.numel() == 1 and p.dim() <= 1:
                lo, hi = 0.1, 1.0
            elif p.dim() == 1 and leaf == "weight":
                lo, hi = 0.5, 1.5
            else:
                lo, hi = -1.0, 1.0
            p.copy_(torch.rand(p.shape, generator=gen, dtype=F64) * (hi - lo) + lo)
        for name, b in twin.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                b.copy_(torch.rand(b.shape, generator=gen, dtype=F64) * 1.5 + 0.5)
            elif leaf == "running_mean":
                b.copy_(torch.rand(b.shape, generator=gen, dtype=F64) - 0.5)


def _without_hooks(twin: nn.Module) -> nn.Module:
    for sub in twin.modules():
        for hooks in (sub._forward_hooks, sub._forward_pre_hooks, sub._backward_hooks):
            hooks.clear()
    return twin


def close(a: Tensor, b: Tensor, tol: float = 1e-9) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


def behaviour_problem(m: nn.Module, rule: Rule, match: Match) -> tuple[Match, str]:
    """(the match, possibly refined; "" when the fused forward equals ``m``'s own call on float64 copies in
    both modes and at every test size, else what differed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny float64 convolutions: threads only add overhead (and stall on a busy machine)
    try:
        return _behaviour_problem(m, rule, match)
    finally:
        torch.set_num_threads(threads)


def _behaviour_problem(m: nn.Module, rule: Rule, match: Match) -> tuple[Match, str]:
    gen = torch.Generator().manual_seed(0)
    own = _without_hooks(copy.deepcopy(m).to("cpu", F64))
    _randomise(own, gen)
    if rule.refine is not None:
        match = rule.refine(own.eval(), match, gen)
    fused = copy.deepcopy(own)
    fused.forward = functools.partial(rule.forward, fused, match=match, backend="reference")
    channels = rule.test_channels(m)
    for h, w in test_sizes(m):
        scale = torch.logspace(-3, 1, h * w, dtype=F64)[torch.randperm(h * w, generator=gen)].view(1, 1, h, w)
        x = torch.randn(2, channels, h, w, generator=gen, dtype=F64) * scale
        for training in (True, False):
            own.train(training)
            fused.train(training)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                want = own(x)
                torch.manual_seed(1)
                got = fused(x)
            if not isinstance(want, Tensor) or not close(got, want):
                mode = "train" if training else "eval"
                return match, (f"its forward differs from the fused {match.label} computation on a float64 "
                               f"{h}×{w} input in {mode} mode (changed math, or a size- or mode-dependent forward?)")
    return match, ""


# ----------------------------------------------------------------------------- verify="first-call"
def _tolerance(dtype: torch.dtype) -> float:
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def first_call_forward(module: nn.Module, x: Tensor, *, match: Match, backend: str, fused: Callable[..., Tensor],
                       path: str) -> Tensor:
    """Patched ``forward`` that, on the first call in each mode, also runs the module's own forward (on a
    copy, without gradients) and unpatches the module with a warning when the outputs differ. Once both
    modes agreed, the plain fused forward replaces it."""
    mode = "train" if module.training else "eval"
    verified = module.__dict__.setdefault("_ddsa_verified_modes", set())
    out = fused(module, x, match=match, backend=backend)
    if mode in verified or torch.compiler.is_compiling():
        return out
    twin = copy.deepcopy(module)
    del twin.__dict__["forward"]
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        want = twin(x)
    diff = float((out.detach() - want).abs().max()) if out.shape == want.shape else math.inf
    if not diff <= _tolerance(x.dtype) * max(1.0, float(want.abs().max())):
        del module.__dict__["forward"]
        module.__dict__.pop("_ddsa_verified_modes", None)
        warnings.warn(f"ddsa_kernels.patch: {path or '<root>'} ({match.label}) differs from its own forward on "
                      f"its first {mode}-mode call (max abs diff {diff:.3g}); it is unpatched and runs as before",
                      RuntimeWarning, stacklevel=3)
        return type(module).forward(module, x)
    verified.add(mode)
    if verified >= {"train", "eval"}:
        module.forward = functools.partial(fused, module, match=match, backend=backend)
        del module.__dict__["_ddsa_verified_modes"]
    return out
