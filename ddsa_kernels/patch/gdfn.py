"""Restormer's feed-forward (GDFN; also in many forks): ``project_in`` (1×1 Conv2d dim → 2·hidden),
``dwconv`` (depth-wise Conv2d on 2·hidden, odd kernel ≤ 7, "same" zero padding), ``project_out`` (1×1
Conv2d hidden → dim), computing ``project_out(gelu(x1) · x2)`` with ``x1, x2 = dwconv(project_in(x)).chunk(2)``
and the exact (erf) GELU, functional or a module (other parameter-free children are allowed: the behaviour
check decides). Fused forward: one :func:`gated_ffn` call (on CPU without gradients one kernel over bands of
rows; when training, the 1×1 convolutions around the fused depth-wise + gate). Hooks on the children no
longer fire once the block is patched."""
from __future__ import annotations

from torch import nn

from ..ops._common import MAX_KERNEL
from ..ops.gated_ffn import gated_ffn
from ._rule import Match, MatchResult, Rule, Skip, Tensor, block_children, first_mismatch

_CHILDREN = ("project_in", "dwconv", "project_out")


def is_candidate(m: nn.Module) -> bool:
    return hasattr(m, "project_in") and hasattr(m, "dwconv") and hasattr(m, "project_out")


def match(m: nn.Module) -> MatchResult:
    children = block_children(m, _CHILDREN, _CHILDREN)
    if isinstance(children, Skip):
        return children
    conv_in, dw, out = children["project_in"], children["dwconv"], children["project_out"]
    dim, hidden2, k = conv_in.in_channels, conv_in.out_channels, dw.kernel_size[0]
    if hidden2 % 2:
        return Skip(f"project_in has {hidden2} output channels, not an even number")
    if k % 2 != 1 or k > MAX_KERNEL:
        return Skip(f"dwconv has kernel {tuple(dw.kernel_size)} (supported: square, odd, up to {MAX_KERNEL})")
    why = first_mismatch(m, {"project_in": (dim, hidden2, 1, 0, 1), "dwconv": (hidden2, hidden2, k, k // 2, hidden2),
                             "project_out": (hidden2 // 2, out.out_channels, 1, 0, 1)})
    if why:
        return Skip(why)
    return Match("feed_forward", "gdfn")


def forward(module: nn.Module, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, dim, H, W) → (B, dim, H, W)."""
    conv_in, dw, out = module.project_in, module.dwconv, module.project_out
    return gated_ffn(x, conv_in.weight, conv_in.bias, dw.weight, dw.bias, out.weight, out.bias, backend=backend)


RULE = Rule("feed_forward", "gated_ffn", is_candidate, match, forward,
            test_channels=lambda m: m.project_in.in_channels)
