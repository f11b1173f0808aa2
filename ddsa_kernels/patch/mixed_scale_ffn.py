"""DRSformer's mixed-scale feed-forward: ``project_in`` (1×1 Conv2d dim → 2h), depth-wise ``dwconv3x3``
and ``dwconv5x5`` on 2h, each followed by a ReLU and chunked in two; the first halves of both scales
(concatenated) go through ``dwconv3x3_1`` and the second halves through ``dwconv5x5_1`` (Conv2d 2h → h,
groups h), each followed by a ReLU; ``project_out`` (1×1 Conv2d 2h → dim) of their concatenation. ReLUs
may be modules (as published) or functional; other parameter-free children are allowed, the behaviour
check decides. Fused forward: one :func:`mixed_scale_ffn` call (on CPU without gradients one kernel over
bands of rows; when training, the 1×1 convolutions around the fused depth-wise stages). Hooks on the
children no longer fire once the block is patched."""
from __future__ import annotations

from torch import nn

from ..ops._common import MAX_KERNEL
from ..ops.mixed_scale_ffn import mixed_scale_ffn
from ._rule import Match, MatchResult, Rule, Skip, Tensor, block_children, first_mismatch

_CONVS = ("project_in", "dwconv3x3", "dwconv5x5", "dwconv3x3_1", "dwconv5x5_1", "project_out")


def is_candidate(m: nn.Module) -> bool:
    return all(hasattr(m, name) for name in ("project_in", "dwconv3x3", "dwconv5x5"))


def match(m: nn.Module) -> MatchResult:
    children = block_children(m, _CONVS, _CONVS)
    if isinstance(children, Skip):
        return children
    kernels = {n: children[n].kernel_size[0] for n in _CONVS[1:5]}
    bad = [n for n, k in kernels.items() if k % 2 != 1 or k > MAX_KERNEL]
    if bad:
        return Skip(f"{bad[0]} has kernel {tuple(children[bad[0]].kernel_size)} (supported: square, odd, up to {MAX_KERNEL})")
    dim, h2 = children["project_in"].in_channels, children["project_in"].out_channels
    if h2 % 2:
        return Skip(f"project_in has {h2} output channels, not an even number")
    h = h2 // 2
    k3, k5, k31, k51 = kernels.values()
    why = first_mismatch(m, {
        "project_in": (dim, h2, 1, 0, 1),
        "dwconv3x3": (h2, h2, k3, k3 // 2, h2), "dwconv5x5": (h2, h2, k5, k5 // 2, h2),
        "dwconv3x3_1": (h2, h, k31, k31 // 2, h), "dwconv5x5_1": (h2, h, k51, k51 // 2, h),
        "project_out": (h2, children["project_out"].out_channels, 1, 0, 1)})
    if why:
        return Skip(why)
    return Match("feed_forward", "mixed_scale")


def forward(module: nn.Module, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, dim, H, W) → (B, dim, H, W)."""
    c = [getattr(module, n) for n in _CONVS]
    return mixed_scale_ffn(x, *(t for conv in c for t in (conv.weight, conv.bias)), backend=backend)


RULE = Rule("feed_forward", "mixed_scale_ffn", is_candidate, match, forward,
            test_channels=lambda m: m.project_in.in_channels)
