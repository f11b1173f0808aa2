"""IDT-DDSA's feed-forward (SEFN): ``conv1x1_in`` (1×1 Conv2d dim → 3·hidden), one shared ``dwconv3x3``
(depth-wise Conv2d on hidden channels, odd kernel ≤ 7, "same" zero padding), ``project_out`` (1×1 Conv2d
3·hidden → dim) and ``SAlayer`` (any module, the spatial gate), computing
``SAlayer(project_out(cat(y1, y2, y3)))`` with ``y1 = relu(dwconv3x3(x1))``, ``y2 = relu(dwconv3x3(y1 +
x2))``, ``y3 = relu(dwconv3x3(y2 + x3))`` on the thirds of ``conv1x1_in(x)``. The ReLU may be ``F.relu``
or a module: other parameter-free children are allowed, the behaviour check decides.

Fused forward: everything but the gate is one :func:`depthwise_chain_mlp` call (on CPU without
gradients one kernel over bands of rows; when training, the 1×1 convolutions around the fused chain).
When ``SAlayer`` is the authors' gate (only ``conv_sa`` = Sequential(Conv2d(2 → 1), BatchNorm2d(1),
Sigmoid), confirmed on a float64 input) it is computed here with the channel max as ``amax``:
``torch.max(x, 1)`` also finds the indices and is about 25× slower on CPU (at exact ties the gradient is
shared among the tied channels instead of going to one); ``conv_sa`` runs as a module. Any other gate
runs as it is. Hooks on the block's children (and on ``SAlayer`` itself for the authors' gate) no longer
fire once the block is patched.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.depthwise_chain_mlp import depthwise_chain_mlp
from ..ops._common import MAX_KERNEL
from ._rule import Match, MatchResult, Rule, Skip, Tensor, block_children, conv_mismatch, first_mismatch
from ._verify import close

_CHILDREN = ("conv1x1_in", "dwconv3x3", "project_out", "SAlayer")


def is_candidate(m: nn.Module) -> bool:
    return hasattr(m, "conv1x1_in") and hasattr(m, "dwconv3x3")


def match(m: nn.Module) -> MatchResult:
    children = block_children(m, _CHILDREN, ("conv1x1_in", "dwconv3x3"))
    if isinstance(children, Skip):
        return children
    conv_in, dw = children["conv1x1_in"], children["dwconv3x3"]
    dim, hidden, k = conv_in.in_channels, dw.in_channels, dw.kernel_size[0]
    if k % 2 != 1 or k > MAX_KERNEL:
        return Skip(f"dwconv3x3 has kernel {tuple(dw.kernel_size)} (supported: square, odd, up to {MAX_KERNEL})")
    why = first_mismatch(m, {"conv1x1_in": (dim, 3 * hidden, 1, 0, 1), "dwconv3x3": (hidden, hidden, k, k // 2, hidden),
                             "project_out": (3 * hidden, dim, 1, 0, 1)})
    if why:
        return Skip(why)
    return Match("feed_forward", "sefn", {"gate": _looks_like_authors_gate(children["SAlayer"])})


def _looks_like_authors_gate(gate: nn.Module) -> bool:
    """SAlayer holds only ``conv_sa`` = Sequential(Conv2d(2 → 1, odd kernel, "same" padding), BatchNorm2d(1),
    Sigmoid) and runs its class's forward (the behaviour check then confirms the math)."""
    children = dict(gate.named_children())
    if set(children) != {"conv_sa"} or list(gate._parameters) or list(gate._buffers):
        return False
    seq = children["conv_sa"]
    if "forward" in gate.__dict__ or not isinstance(seq, nn.Sequential) or len(seq) != 3:
        return False
    conv, bn, act = seq
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size[0] % 2 != 1:
        return False
    return (not conv_mismatch(conv, 2, 1, conv.kernel_size[0], conv.kernel_size[0] // 2, 1)
            and type(bn) is nn.BatchNorm2d and bn.num_features == 1 and type(act) is nn.Sigmoid)


def authors_gate(gate: nn.Module, z: Tensor) -> Tensor:
    """IDT-DDSA's spatial gate ``z · conv_sa([max over c, mean over c])`` with the channel max as ``amax``."""
    pooled = torch.cat((z.amax(dim=1, keepdim=True), z.mean(dim=1, keepdim=True)), dim=1)
    return z * gate.conv_sa(pooled)


def forward(module: nn.Module, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, dim, H, W) → (B, dim, H, W)."""
    conv_in, dw, out = module.conv1x1_in, module.dwconv3x3, module.project_out
    z = depthwise_chain_mlp(x, conv_in.weight, conv_in.bias, dw.weight, dw.bias, out.weight, out.bias, backend=backend)
    return authors_gate(module.SAlayer, z) if match.options["gate"] else module.SAlayer(z)


def confirm_gate(twin: nn.Module, match: Match, gen: torch.Generator) -> Match:
    """``match`` with ``gate`` False unless the float64 ``twin``'s SAlayer equals :func:`authors_gate`."""
    if not match.options["gate"]:
        return match
    z = torch.randn(2, twin.project_out.out_channels, 5, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        a, b = authors_gate(twin.SAlayer, z), twin.SAlayer(z)
    return match if close(a, b) else Match(match.kind, match.variant, {**match.options, "gate": False})


RULE = Rule("feed_forward", "depthwise_chain_mlp", is_candidate, match, forward,
            test_channels=lambda m: m.conv1x1_in.in_channels, refine=confirm_gate)
