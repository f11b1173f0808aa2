"""Transposed channel attention (Restormer's MDTA, IDT-DDSA's dual attention, DRSformer's top-k attention).

Structure: ``num_heads`` (int), ``temperature`` (Parameter (heads, 1, 1)), ``qkv`` (1×1 Conv2d dim →
3·dim), ``qkv_dwconv`` (3×3 depth-wise Conv2d on 3·dim), ``project_out`` (1×1 Conv2d dim → dim),
optionally ``attn_drop`` (Dropout with p = 0), and branch weights that tell the family apart: none
(Restormer, one dense branch), ``attn`` + ``attn1`` (DDSA: dense + top-⌊7C/10⌋) or ``attn1``..``attn4``
(DRSformer: top-⌊C/2⌋, ⌊2C/3⌋, ⌊3C/4⌋, ⌊4C/5⌋), each of shape (1,), C = dim / heads.
Fused forward: the module's own convs, then one :func:`dual_attention` call on views of the depth-wise
conv output, with ``temperature`` and the branch weights read from the module at call time.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..module import ddsa_topk, drsformer_topk, restormer_topk
from ..ops.dual_attention import dual_attention
from ._rule import Match, MatchResult, Rule, Skip, Tensor, first_mismatch

FAMILY_WEIGHTS = {
    "restormer": (),
    "ddsa": ("attn", "attn1"),
    "drsformer": ("attn1", "attn2", "attn3", "attn4"),
}
_CHILDREN = ("qkv", "qkv_dwconv", "project_out")


_FAMILY_TOPK = {"restormer": restormer_topk, "ddsa": ddsa_topk, "drsformer": drsformer_topk}


def family_topk(family: str, channels: int) -> tuple[Optional[int], ...]:
    """Keep-counts of each branch for ``channels`` channels per head (None = dense branch), in the order
    of the family's weight parameters."""
    if family not in _FAMILY_TOPK:
        raise ValueError(f"unknown attention family {family!r}")
    return _FAMILY_TOPK[family](channels)


def is_candidate(m: nn.Module) -> bool:
    return hasattr(m, "qkv") and (hasattr(m, "temperature") or hasattr(m, "num_heads"))


def match(m: nn.Module) -> MatchResult:
    heads = getattr(m, "num_heads", None)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        return Skip(f"num_heads is {heads!r}, not a positive int")
    children = dict(m.named_children())
    if "qkv" in children and not isinstance(children["qkv"], nn.Conv2d):
        return Skip(f"qkv is {type(children['qkv']).__name__}, not Conv2d")
    extra = sorted(set(children) - {*_CHILDREN, "attn_drop"})
    if extra:
        return Skip(f"unknown submodules {extra}")
    drop = children.get("attn_drop")
    if isinstance(drop, nn.Dropout) and drop.p != 0:
        return Skip(f"attn_drop is Dropout(p={drop.p}) (only p=0 is patched)")
    if drop is not None and not isinstance(drop, (nn.Dropout, nn.Identity)):
        return Skip(f"attn_drop is {type(drop).__name__}, not Dropout(p=0)")
    if "qkv" not in children:
        return Skip("no submodule 'qkv'")
    dim = children["qkv"].in_channels
    why = first_mismatch(m, {"qkv": (dim, 3 * dim, 1, 0, 1), "qkv_dwconv": (3 * dim, 3 * dim, 3, 1, 3 * dim),
                             "project_out": (dim, dim, 1, 0, 1)})
    if why:
        return Skip(why)
    if dim % heads:
        return Skip(f"dim {dim} is not divisible by num_heads {heads}")
    params = dict(m.named_parameters(recurse=False))
    temp = params.get("temperature")
    if temp is None:
        return Skip("no Parameter 'temperature'")
    if tuple(temp.shape) != (heads, 1, 1):
        return Skip(f"temperature has shape {tuple(temp.shape)}, expected ({heads}, 1, 1)")
    others = set(params) - {"temperature"}
    family = next((f for f, names in FAMILY_WEIGHTS.items() if set(names) == others), None)
    if family is None:
        return Skip(f"unknown branch-weight parameters {sorted(others)}")
    for name in FAMILY_WEIGHTS[family]:
        if tuple(params[name].shape) != (1,):
            return Skip(f"{name} has shape {tuple(params[name].shape)}, expected (1,)")
    buffers = [n for n, _ in m.named_buffers(recurse=False)]
    if buffers:
        return Skip(f"unknown buffers {sorted(buffers)}")
    topk = family_topk(family, dim // heads)
    if any(k is not None and k < 1 for k in topk):
        return Skip(f"C={dim // heads} channels per head gives a top-k keep-count of 0")
    return Match("attention", family, {"topk": topk})


def forward(module: nn.Module, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, dim, H, W) → (B, dim, H, W)."""
    b, c, h, w = x.shape
    heads = module.num_heads
    q, k, v = module.qkv_dwconv(module.qkv(x)).chunk(3, dim=1)
    # views of the depth-wise conv output, (B, heads, C, H·W)
    q = q.reshape(b, heads, c // heads, h * w)
    k = k.reshape(b, heads, c // heads, h * w)
    v = v.reshape(b, heads, c // heads, h * w)
    names = FAMILY_WEIGHTS[match.variant]
    weights = torch.cat([getattr(module, n) for n in names]) if names else module.temperature.new_ones(1)
    out = dual_attention(q, k, v, module.temperature, weights, match.options["topk"], backend=backend)
    return module.project_out(out.reshape(b, c, h, w))


RULE = Rule("attention", "dual_attention", is_candidate, match, forward,
            test_channels=lambda m: m.qkv.in_channels, channels=lambda m: m.qkv.in_channels // m.num_heads)
