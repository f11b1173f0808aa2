"""What every kind of module shares: the typed match, the rule interface and the structural helpers.

A rule (one module of this package per kind) recognises one kind of module in four steps that read top to
bottom in its file: ``is_candidate`` (a cheap pre-filter on attribute names), ``match`` (structure: module
types, conv shapes, parameter shapes → a :class:`Match` or a :class:`Skip` with the reason), the
behaviour check (done for every rule by :mod:`._verify`: the module's own call against the patched call
on float64 copies), and the fused ``forward`` that replaces the instance's ``forward``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass(frozen=True)
class Match:
    """A module recognised by a rule.

    kind: the rule's kind ("attention", "layer_norm", "depthwise_conv", "feed_forward", "mefc").
    variant: what the rule found ("ddsa", "drsformer", "restormer"; "with_bias", "bias_free"; "3x3",
    "5x5/d2"; "sefn", "gdfn", "mixed_scale"; "drsformer" for the MEFC). options: keyword arguments of the
    fused forward.
    """

    kind: str
    variant: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"kind:variant"``, the key of :attr:`PatchReport.counts`."""
        return f"{self.kind}:{self.variant}"

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Skip:
    """A candidate that is not (exactly) a supported module, and why."""

    reason: str


MatchResult = Union[Match, Skip]


@dataclass(frozen=True)
class Rule:
    """One kind of module.

    kind: the name used by ``patch(..., <kind>=False)`` and the backend mapping. op: the registry op its
    fused forward calls (for the report's resolved backends); "" for a forward of plain torch ops, which
    takes no backend. is_candidate: cheap pre-filter. match: the structural match. forward: ``forward(module, x, *, match, backend)``, a module-level function
    (so that the patched module pickles). channels: the channel count the op resolves a backend for.
    verify: whether the behaviour check runs (False where type and structure say everything).
    test_channels: the input channel count of the float64 behaviour check. refine: optional
    ``refine(twin, match, generator) -> Match``, run on the float64 copy before the check (e.g. to confirm
    a sub-module that the fused forward computes itself).
    """

    kind: str
    op: str
    is_candidate: Callable[[nn.Module], bool]
    match: Callable[[nn.Module], MatchResult]
    forward: Callable[..., Tensor]
    test_channels: Callable[[nn.Module], int]
    channels: Callable[[nn.Module], Optional[int]] = lambda m: None
    verify: bool = True
    refine: Optional[Callable[[nn.Module, "Match", torch.Generator], "Match"]] = None


def overrides_conv_forward(m: nn.Conv2d) -> bool:
    """True when ``m``'s class replaces ``nn.Conv2d``'s computation (its ``forward`` or ``_conv_forward``)."""
    return type(m).forward is not nn.Conv2d.forward or type(m)._conv_forward is not nn.Conv2d._conv_forward


def conv_mismatch(m: nn.Module, cin: int, cout: int, kernel: int, padding: int, groups: int,
                  dilation: int = 1) -> str:
    """Empty string when ``m`` is exactly ``nn.Conv2d(cin, cout, kernel, padding=padding, groups=groups,
    dilation=dilation)`` with stride 1 and zero padding, else what differs."""
    if not isinstance(m, nn.Conv2d):
        return f"is {type(m).__name__}, not Conv2d"
    want = (cin, cout, (kernel, kernel), (1, 1), (padding, padding), (dilation, dilation), groups, "zeros")
    pad = m.padding
    if pad == "same" and all(k % 2 == 1 for k in m.kernel_size):
        pad = tuple(d * (k // 2) for d, k in zip(m.dilation, m.kernel_size))
    elif pad == "valid":
        pad = (0, 0)
    pad = tuple(pad)
    got = (m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), pad, tuple(m.dilation),
           m.groups, m.padding_mode)
    if got != want:
        return (f"is Conv2d({m.in_channels}→{m.out_channels}, kernel {tuple(m.kernel_size)}, stride "
                f"{tuple(m.stride)}, padding {m.padding}, dilation {tuple(m.dilation)}, groups {m.groups}, "
                f"{m.padding_mode}); expected {cin}→{cout}, kernel {kernel}, padding {padding}, groups {groups}"
                + (f", dilation {dilation}" if dilation != 1 else ""))
    if overrides_conv_forward(m):
        return f"is {type(m).__name__}, which overrides Conv2d's forward"
    return ""


def block_children(m: nn.Module, required: Sequence[str], convs: Sequence[str]) -> Union[dict[str, nn.Module], Skip]:
    """The children of a feed-forward block by name, or why it is not one: every ``required`` child present,
    the ``convs`` among them ``nn.Conv2d``, no parameters or buffers on the block itself, and every other
    child parameter- and buffer-free (an activation module, a Dropout(0), ...: the behaviour check decides
    whether it matters)."""
    children = dict(m.named_children())
    missing = [n for n in required if n not in children]
    if missing:
        return Skip(f"no submodule {missing[0]!r} (submodules {sorted(children)})")
    if list(m._parameters) or list(m._buffers):
        return Skip("the block has parameters or buffers of its own")
    for name, child in children.items():
        if name not in required and (any(True for _ in child.parameters()) or any(True for _ in child.buffers())):
            return Skip(f"unknown submodule {name!r} ({type(child).__name__}) with parameters or buffers")
    if not all(isinstance(children[n], nn.Conv2d) for n in convs):
        return Skip(f"{', '.join(convs)} must all be Conv2d")
    return children


def first_mismatch(m: nn.Module, specs: Mapping[str, tuple]) -> str:
    """The first child of ``specs`` (name → ``conv_mismatch`` arguments) that is missing or differs."""
    children = dict(m.named_children())
    for name, want in specs.items():
        if name not in children:
            return f"no submodule {name!r}"
        why = conv_mismatch(children[name], *want)
        if why:
            return f"{name} {why}"
    return ""
