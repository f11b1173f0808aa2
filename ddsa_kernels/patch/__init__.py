"""``patch(model)``: make the attention, LayerNorm, depth-wise convolution and feed-forward modules (and
DRSformer's MEFC) of an existing Restormer-family network (Restormer, DRSformer, IDT-DDSA and their forks)
run the fused ops, in place, without touching its parameters.

Modules are recognised by what they compute, never by class name or import path: each kind has one rule
(a module of this package: :mod:`.attention`, :mod:`.layer_norm`, :mod:`.sefn`, :mod:`.gdfn`,
:mod:`.mixed_scale_ffn`, :mod:`.depthwise_conv`, :mod:`.mefc`) with a cheap candidate test, a structural
match on module types and parameter shapes, and the fused forward; every match is then confirmed by behaviour
(:mod:`._verify`: the module's own call against the fused computation on float64 copies, in both modes and
at two input sizes). A fork whose math differs, whose forward takes extra arguments, or whose class
overrides ``__call__`` is reported and left alone.

Mechanism: the instance's ``forward`` is set to a ``functools.partial`` of the rule's module-level forward
with the module as first argument. The class, the parameters (objects and names), buffers and hooks on the
module itself are unchanged; the partial survives ``copy.deepcopy`` (rebound to the copy),
``pickle``/``torch.save``, and is traced by ``torch.compile`` (``fullgraph=True``). Hooks on the children
that a fused forward no longer calls (e.g. a feed-forward's convolutions) stop firing. :func:`unpatch`
deletes the instance attribute.
"""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import nn

from .. import _registry
from . import attention, depthwise_conv, gdfn, layer_norm, mefc, mixed_scale_ffn, sefn
from ._rule import Match, Rule, Skip
from ._verify import behaviour_problem, first_call_forward, signature_problem
from .attention import family_topk

# The rules in the order they are tried on each module (the first whose candidate test passes decides).
RULES: tuple[Rule, ...] = (attention.RULE, layer_norm.RULE, sefn.RULE, mixed_scale_ffn.RULE, gdfn.RULE,
                           depthwise_conv.RULE, mefc.RULE)
# the kinds whose fused forward takes a backend (the MEFC's is plain torch ops)
BACKEND_KINDS = ("attention", "layer_norm", "depthwise_conv", "feed_forward")
KINDS = BACKEND_KINDS + ("mefc",)
_FORWARDS = {rule.forward for rule in RULES} | {first_call_forward}


def patched_match(module: nn.Module) -> Optional[Match]:
    """The :class:`Match` of ``module`` when it is patched by :func:`patch`, else None."""
    fwd = module.__dict__.get("forward")
    if isinstance(fwd, functools.partial) and fwd.func in _FORWARDS:
        return fwd.keywords["match"]
    return None


def patched_kind(module: nn.Module) -> Optional[str]:
    """``"kind:variant"`` (e.g. ``"attention:ddsa"``) when ``module`` is patched by :func:`patch`, else None."""
    found = patched_match(module)
    return None if found is None else found.label


@dataclass
class PatchReport:
    """What :func:`patch` did.

    patched: (module path, :class:`Match`) of every module patched by this call.
    already_patched: (path, Match) of modules patched before this call (left as they are).
    skipped: (path, reason) of modules that look like a supported module but are not one.
    backend: the backend requested for each kind ("attention", "layer_norm", "depthwise_conv", "feed_forward").
    resolved: for each ``kind:variant`` patched, the backends its op resolves to for the model's
    parameters' device and dtype at patch time (what "auto" picks; it can differ per channel count).
    """

    patched: list[tuple[str, Match]] = field(default_factory=list)
    already_patched: list[tuple[str, Match]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    backend: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, list[str]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Number of modules patched by this call, per ``kind:variant``."""
        return dict(sorted(Counter(m.label for _, m in self.patched).items()))

    def skipped_by_reason(self) -> dict[str, list[str]]:
        """Skipped module paths grouped by identical reason, in order of first appearance."""
        groups: dict[str, list[str]] = {}
        for path, why in self.skipped:
            groups.setdefault(why, []).append(path or "<root>")
        return groups

    def __str__(self) -> str:
        lines = [f"ddsa_kernels.patch: {len(self.patched)} module(s) patched"
                 + (f", {len(self.already_patched)} already patched" if self.already_patched else "")
                 + (f", {len(self.skipped)} skipped" if self.skipped else "")]
        for label, n in self.counts.items():
            res = self.resolved.get(label)
            lines.append(f"  {label:<26} {n:>3}" + (f"   backend: {', '.join(res)}" if res else ""))
        if self.already_patched:
            lines.append("  already patched (left as they are): "
                         + ", ".join(p or "<root>" for p, _ in self.already_patched))
        for why, paths in self.skipped_by_reason().items():
            shown = ", ".join(paths[:4]) + (f", ... ({len(paths) - 4} more)" if len(paths) > 4 else "")
            lines.append(f"  skipped {len(paths)}× ({shown}): {why}")
        lines.append("  backends requested: " + ", ".join(f"{k}={v}" for k, v in self.backend.items()))
        return "\n".join(lines)


def _backend_names(backend: Union[str, Mapping[str, str]]) -> dict[str, str]:
    names = dict(backend) if isinstance(backend, Mapping) else {kind: backend for kind in BACKEND_KINDS}
    unknown = set(names) - set(BACKEND_KINDS)
    if unknown:
        raise ValueError(f"backend keys must be among {sorted(BACKEND_KINDS)}, got {sorted(unknown)}")
    for kind in BACKEND_KINDS:
        names.setdefault(kind, "auto")
        if not isinstance(names[kind], str):
            raise ValueError(f"backend for {kind} must be a string, got {names[kind]!r}")
        for op in sorted({rule.op for rule in RULES if rule.kind == kind}):
            _registry.check_backend_name(names[kind], op)
    return names


def _resolve(op: str, name: str, model: nn.Module, channels: Optional[int]) -> str:
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        dtype = torch.float32
    try:
        return _registry.resolve_backend(name, device, dtype, channels=channels, op=op)
    except RuntimeError as exc:
        return f"{name} (unusable here: {exc})"


def patch(
    model: nn.Module,
    *,
    attention: bool = True,
    layer_norm: bool = True,
    depthwise_conv: bool = True,
    feed_forward: bool = True,
    mefc: bool = True,
    backend: Union[str, Mapping[str, str]] = "auto",
    verify: Union[bool, str] = True,
) -> PatchReport:
    """Make the supported modules of ``model`` run the fused ops, in place (``model`` included).

    Supported modules get an instance ``forward`` that calls :func:`ddsa_kernels.dual_attention`,
    :func:`~ddsa_kernels.channel_norm`, :func:`~ddsa_kernels.depthwise_conv` or a fused feed-forward op
    (:func:`~ddsa_kernels.depthwise_chain_mlp` for IDT-DDSA's SEFN, :func:`~ddsa_kernels.gated_ffn` for
    Restormer's GDFN, :func:`~ddsa_kernels.mixed_scale_ffn` for DRSformer's) with the module's own
    parameters; nothing else changes (same parameters, names, state dict, optimizer).

    Args:
        model: any ``nn.Module``, on any device and dtype.
        attention: patch transposed channel attention modules (Restormer / DDSA / DRSformer).
        layer_norm: patch Restormer-style channel LayerNorm wrappers (WithBias and BiasFree).
        depthwise_conv: patch depth-wise ``nn.Conv2d`` modules (odd square kernel ≤ 7, stride 1, zero
            "same" padding); on CUDA and under autocast they keep running torch's convolution.
        feed_forward: patch the families' feed-forward blocks (SEFN, GDFN, mixed-scale).
        mefc: patch DRSformer's MEFC (``subnet``): its operation layers without the concatenation, the
            output 1×1 convolution folded with each branch's last 1×1 and weight (plain torch ops).
        backend: a backend name for every op ("auto", or a name of :func:`ddsa_kernels.build_info`), or a
            mapping {"attention": name, "layer_norm": name, "depthwise_conv": name, "feed_forward": name}.
            To change it later, :func:`unpatch` first.
        verify: True (recommended): confirm each candidate by behaviour on float64 copies (train and eval
            mode, a small input and one larger than any window size it might use) and skip it on a
            mismatch. "first-call": that, and also compare the fused and the own forward once per mode on
            the first real input; a module that differs is unpatched with a ``RuntimeWarning``. False: the
            structural match alone.

    Returns:
        A :class:`PatchReport` (``print`` it for a summary).
    """
    if verify not in (True, False, "first-call"):
        raise ValueError(f"verify must be True, False or 'first-call', got {verify!r}")
    names = _backend_names(backend)
    report = PatchReport(backend=names)
    resolved: dict[str, set[str]] = {}
    enabled = {"attention": attention, "layer_norm": layer_norm, "depthwise_conv": depthwise_conv,
               "feed_forward": feed_forward, "mefc": mefc}
    for path, m in model.named_modules():
        done = patched_match(m)
        if done is not None:
            report.already_patched.append((path, done))
            continue
        rule = next((r for r in RULES if enabled[r.kind] and r.is_candidate(m)), None)
        if rule is None:
            continue
        found = rule.match(m)
        if isinstance(found, Match) and "forward" in m.__dict__:
            found = Skip("its forward is already overridden on the instance")
        if isinstance(found, Match):
            why = signature_problem(m)
            if not why and verify and rule.verify:
                try:
                    found, why = behaviour_problem(m, rule, found)
                except Exception as exc:  # a fork whose forward does not even run on the test input
                    why = f"behaviour check failed: {type(exc).__name__}: {exc}"
            if why:
                found = Skip(why)
        if isinstance(found, Skip):
            report.skipped.append((path, found.reason))
            continue
        backend_name = names.get(rule.kind, "auto")
        if verify == "first-call":
            m.forward = functools.partial(first_call_forward, m, match=found, backend=backend_name,
                                          fused=rule.forward, path=path)
        else:
            m.forward = functools.partial(rule.forward, m, match=found, backend=backend_name)
        report.patched.append((path, found))
        resolved.setdefault(found.label, set()).add(
            _resolve(rule.op, backend_name, model, rule.channels(m)) if rule.op else "torch")
    report.resolved = {k: sorted(v) for k, v in sorted(resolved.items())}
    return report


def unpatch(model: nn.Module) -> list[tuple[str, Match]]:
    """Undo :func:`patch` on every submodule of ``model`` (in place); returns the (path, Match) restored."""
    restored = []
    for path, m in model.named_modules():
        found = patched_match(m)
        if found is not None:
            del m.__dict__["forward"]
            m.__dict__.pop("_ddsa_verified_modes", None)
            restored.append((path, found))
    return restored


__all__ = ["patch", "unpatch", "PatchReport", "Match", "patched_kind", "patched_match", "family_topk", "RULES"]
