"""DRSformer's mixture-of-experts feature compensator (MEFC, the published ``subnet``): ``layers`` holds
pairs of an operation-attention layer (global average pool, two Linear layers → per-sample logits of shape
(B, steps, n_ops), softmaxed over the ops) and a group of operation layers (``preprocess``, then ``steps``
residual ``OperationLayer`` s, ``s = relu(OL_i(s, w[:, i]) + s)``). Each operation layer runs ``n_ops``
branches on its input, scales branch i by the per-sample weight w[:, i], concatenates them and applies a
1×1 Conv2d (n_ops·C → C) and an activation.

Fused forward (exact algebra, plain torch ops): no concatenation. The output convolution splits into one
C×C block per branch, W_out = [W_1 … W_n]; a branch that ends in a bias-free 1×1 Conv2d C → C (the
separable and dilated convolutions) has that last convolution folded in, W_i ← W_i · W_last,i, and the
per-sample weight is folded in too, so the layer is ``act(Σ_i (w[b, i] W_i) z_i)``, one batched matrix
product per branch accumulated in place (z_i the branch without its last 1×1). That removes, per operation
layer, the concatenated (n_ops·C)-channel map, n_ops scalings and up to n_ops C×C convolutions. The
branches' depth-wise convolutions stay modules (patched on their own). Hooks on the operation layers and
on the folded convolutions no longer fire once the block is patched."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._rule import Match, MatchResult, Rule, Skip, Tensor, block_children, conv_mismatch


def is_candidate(m: nn.Module) -> bool:
    layers = getattr(m, "layers", None)
    return isinstance(layers, nn.ModuleList) and len(layers) >= 2 and hasattr(layers[0], "ca_fc") \
        and hasattr(layers[1], "preprocess")


def _folded_conv(branch: nn.Module, channels: int) -> Optional[nn.Conv2d]:
    """The branch's last 1×1 Conv2d C → C without bias when its forward is ``self.op(x)`` over a Sequential."""
    seq = getattr(branch, "op", None)
    if not isinstance(seq, nn.Sequential) or len(seq) < 2:
        return None
    last = seq[-1]
    if conv_mismatch(last, channels, channels, 1, 0, 1) or last.bias is not None:
        return None
    return last


def match(m: nn.Module) -> MatchResult:
    children = block_children(m, ("layers",), ())
    if isinstance(children, Skip):
        return children
    layers = list(children["layers"])
    if len(layers) % 2:
        return Skip(f"layers holds {len(layers)} modules, not (attention, group) pairs")
    for attention, group in zip(layers[::2], layers[1::2]):
        if not hasattr(attention, "ca_fc") or not hasattr(group, "preprocess"):
            return Skip("layers does not alternate an operation-attention layer (ca_fc) and a group (preprocess)")
        ops = getattr(group, "_ops", None)
        if not isinstance(ops, nn.ModuleList) or not hasattr(group, "relu"):
            return Skip("a group has no _ops ModuleList or no relu")
        for layer in ops:
            out = getattr(layer, "_out", None)
            branches = getattr(layer, "_ops", None)
            if not isinstance(out, nn.Sequential) or len(out) != 2 or not isinstance(branches, nn.ModuleList):
                return Skip("an operation layer is not (_ops ModuleList, _out = Sequential(Conv2d, activation))")
            c = out[0].out_channels if isinstance(out[0], nn.Conv2d) else 0
            why = conv_mismatch(out[0], c * len(branches), c, 1, 0, 1)
            if why:
                return Skip(f"an operation layer's _out[0] {why}")
            if any(True for _ in out[1].parameters()):
                return Skip("an operation layer's activation has parameters")
    return Match("mefc", "drsformer")


def _operation_layer(layer: nn.Module, x: Tensor, weights: Tensor) -> Tensor:
    """``layer._out(cat([branch_i(x) · weights[:, i]]))`` without the concatenation; x (B, C, H, W),
    weights (B, n_ops)."""
    conv, act = layer._out[0], layer._out[1]
    b, c, h, w = x.shape
    blocks = conv.weight.view(c, len(layer._ops), c)
    acc = None
    for i, branch in enumerate(layer._ops):
        last = _folded_conv(branch, c)
        block = blocks[:, i]
        if last is None:
            z = branch(x)
        else:
            z = branch.op[:-1](x)
            block = block @ last.weight.view(c, c)
        scaled = weights[:, i].view(b, 1, 1).to(block.dtype) * block  # (B, C, C)
        z = z.reshape(b, c, h * w)
        acc = torch.bmm(scaled, z) if acc is None else acc.baddbmm_(scaled, z)
    y = acc.view(b, c, h, w)
    if conv.bias is not None:
        y = y + conv.bias.view(1, c, 1, 1)
    return act(y)


def forward(module: nn.Module, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, C, H, W) → (B, C, H, W)."""
    weights = None
    for layer in module.layers:
        if hasattr(layer, "ca_fc"):
            weights = F.softmax(layer(x), dim=-1)
            continue
        s = layer.preprocess(x)
        for i, op_layer in enumerate(layer._ops):
            s = layer.relu(_operation_layer(op_layer, s, weights[:, i, :]) + s)
        x = s
    return x


RULE = Rule("mefc", "", is_candidate, match, forward,
            test_channels=lambda m: m.layers[1]._ops[0]._out[0].out_channels)
