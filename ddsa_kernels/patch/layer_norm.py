"""Restormer-style channel LayerNorm: a wrapper whose only child ``body`` holds ``weight`` (dim,) and
optionally ``bias`` (dim,); WithBias (centred) or BiasFree (scale only, σ from the centred variance)
LayerNorm over the channels of an NCHW map with eps 1e-5. Fused forward: one :func:`channel_norm` call,
no layout copies."""
from __future__ import annotations

from torch import nn

from ..ops.channel_norm import channel_norm
from ._rule import Match, MatchResult, Rule, Skip, Tensor

EPS = 1e-5


def is_candidate(m: nn.Module) -> bool:
    body = getattr(m, "body", None)
    if not isinstance(body, nn.Module) or any(True for _ in body.children()):
        return False
    weight = body._parameters.get("weight")
    return isinstance(weight, nn.Parameter) and weight.dim() == 1


def match(m: nn.Module) -> MatchResult:
    body = m.body
    if list(m._parameters) or list(m._buffers):
        return Skip("the wrapper has parameters or buffers of its own")
    if set(dict(m.named_children())) != {"body"}:
        return Skip(f"the wrapper has submodules {sorted(dict(m.named_children()))}, expected only body")
    params = dict(body.named_parameters(recurse=False))
    if list(body.named_buffers(recurse=False)):
        return Skip("body has buffers")
    if set(params) == {"weight"}:
        if getattr(body, "bias", None) is not None:
            return Skip("body.bias is set but is not a Parameter")
        return Match("layer_norm", "bias_free")
    if set(params) == {"weight", "bias"}:
        if params["bias"].shape != params["weight"].shape:
            return Skip(f"body.bias has shape {tuple(params['bias'].shape)}, expected {tuple(params['weight'].shape)}")
        return Match("layer_norm", "with_bias")
    return Skip(f"body has parameters {sorted(params)}, expected weight (and bias)")


def forward(module: nn.Module, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, C, H, W) → (B, C, H, W), normalised over C."""
    body = module.body
    with_bias = match.variant == "with_bias"
    return channel_norm(x, body.weight, body.bias if with_bias else None, EPS, subtract_mean=with_bias,
                        backend=backend)


RULE = Rule("layer_norm", "channel_norm", is_candidate, match, forward,
            test_channels=lambda m: m.body.weight.shape[0])
