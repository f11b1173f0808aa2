"""``patch(model)``: swap the attention, LayerNorm, depth-wise convolution and SEFN feed-forward modules
of an existing Restormer-family network for the fused ops, in place, without touching its parameters.

Modules are recognised by structure (attribute names, module types and parameter shapes), never by
class name or import path, so that the authors' repositories (Restormer, DRSformer, IDT-DDSA) and their
forks are handled without importing them:

* attention: ``num_heads`` (int), ``temperature`` (Parameter (heads, 1, 1)), ``qkv`` (1×1 Conv2d
  dim → 3·dim), ``qkv_dwconv`` (3×3 depth-wise Conv2d on 3·dim, padding 1), ``project_out`` (1×1
  Conv2d dim → dim), optionally ``attn_drop`` (Dropout with p = 0), and branch weights telling the family
  apart: none (Restormer's MDTA, one dense branch), ``attn`` + ``attn1`` (DDSA: dense + top-⌊7C/10⌋)
  or ``attn1``..``attn4`` (DRSformer: top-⌊C/2⌋, ⌊2C/3⌋, ⌊3C/4⌋, ⌊4C/5⌋), each of shape (1,);
* LayerNorm: a wrapper whose ``body`` holds ``weight`` (dim,) and optionally ``bias`` (dim,): WithBias
  (centred) or BiasFree (scale only) LayerNorm over channels, eps 1e-5, applied to an NCHW input;
* depth-wise convolution: an ``nn.Conv2d`` (its own ``forward``, not a subclass's) with
  groups = in = out channels, an odd square kernel up to 7×7, stride 1, dilation 1, zero padding
  K // 2. These sit in every block (the attention's ``qkv_dwconv``, the feed-forward's ``dwconv``);
  on CPU torch runs them through oneDNN's NCHW path, several times slower than the memory traffic
  allows. Elsewhere (CUDA, autocast, fp16/bf16) the op falls back to torch's own convolution;
* IDT-DDSA's feed-forward (SEFN): ``conv1x1_in`` (1×1 Conv2d dim → 3·hidden), ``dwconv3x3`` (depth-wise
  Conv2d on hidden channels, odd kernel ≤ 7, "same" zero padding), ``relu`` (ReLU), ``project_out``
  (1×1 Conv2d 3·hidden → dim) and ``SAlayer`` (any module, run as it is), computing
  ``SAlayer(project_out(cat(y1, y2, y3)))`` with ``y1 = relu(dwconv3x3(x1))``, ``y2 = relu(dwconv3x3(y1 +
  x2))``, ``y3 = relu(dwconv3x3(y2 + x3))`` on the thirds of ``conv1x1_in(x)``. Everything but the gate
  becomes one :func:`depthwise_chain_mlp` call with the three convolutions' weights and biases (on CPU
  without gradients, one fused kernel over bands of rows; when training, the 1×1 convolutions around
  the fused chain). When ``SAlayer`` is the authors' gate (only ``conv_sa`` = Sequential(Conv2d(2 → 1),
  BatchNorm2d(1), Sigmoid), same math on a float64 test input) it is computed in the patched forward
  with the channel max as ``amax`` (``torch.max(x, 1)`` also finds the indices and is about 25× slower
  on CPU; at exact ties the gradient is shared among the tied channels instead of going to one), calling
  ``conv_sa`` as it is; any other gate runs as it is. Hooks registered on ``conv1x1_in``, ``dwconv3x3``,
  ``relu``, ``project_out`` or ``SAlayer`` no longer fire once the block is patched. Restormer's
  GDFN and DRSformer's multi-scale FFN keep their forward (their depth-wise convolutions are patched).

Every candidate is also checked by behaviour once, at patch time: a float64 CPU copy with random
parameters runs its own ``forward`` and the fused computation on a tiny input; a fork whose math
differs (another eps, a changed formula) is reported and left alone.

Mechanism: the instance's ``forward`` is set to a ``functools.partial`` of a module-level function
with the module as first argument. The class, the parameters (objects and names), buffers and hooks are
unchanged; the partial survives ``copy.deepcopy`` (rebound to the copy), ``pickle``/``torch.save``,
and is traced by ``torch.compile`` (``fullgraph=True``). ``unpatch`` deletes the instance attribute.
"""
from __future__ import annotations

import copy
import functools
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import nn

from . import _registry
from .ops.channel_norm import channel_norm
from .ops.depthwise_chain_mlp import depthwise_chain_mlp
from .ops.depthwise_conv import depthwise_conv
from .ops.depthwise_conv._common import MAX_KERNEL
from .ops.dual_attention import dual_attention
from .ops.dual_attention.naive import reference_dual_attention

Tensor = torch.Tensor

LN_EPS = 1e-5
_FAMILY_WEIGHTS = {
    "restormer": (),
    "ddsa": ("attn", "attn1"),
    "drsformer": ("attn1", "attn2", "attn3", "attn4"),
}
_ATTENTION_CHILDREN = ("qkv", "qkv_dwconv", "project_out")
_OPS = {"attention": "dual_attention", "layer_norm": "channel_norm", "depthwise_conv": "depthwise_conv",
        "feed_forward": "depthwise_chain_mlp"}
_SEFN_CHILDREN = {"conv1x1_in", "dwconv3x3", "relu", "project_out", "SAlayer"}


def family_topk(family: str, channels: int) -> tuple[Optional[int], ...]:
    """Keep-counts of each branch for ``channels`` channels per head (None = dense branch), in the
    order of the family's weight parameters."""
    if family == "restormer":
        return (None,)
    if family == "ddsa":
        return (None, channels * 7 // 10)
    if family == "drsformer":
        return (channels // 2, channels * 2 // 3, channels * 3 // 4, channels * 4 // 5)
    raise ValueError(f"unknown attention family {family!r}")


# ----------------------------------------------------------------------------- fused forwards
def _attention_core(module: nn.Module, x: Tensor, family: str, topk: tuple, attend) -> Tensor:
    b, c, h, w = x.shape
    heads = module.num_heads
    q, k, v = module.qkv_dwconv(module.qkv(x)).chunk(3, dim=1)
    # views of the depth-wise conv output, (B, heads, C, H·W)
    q = q.reshape(b, heads, c // heads, h * w)
    k = k.reshape(b, heads, c // heads, h * w)
    v = v.reshape(b, heads, c // heads, h * w)
    names = _FAMILY_WEIGHTS[family]
    if names:
        weights = torch.cat([getattr(module, n) for n in names])
    else:
        weights = module.temperature.new_ones(1)
    out = attend(q, k, v, module.temperature, weights, topk)
    return module.project_out(out.reshape(b, c, h, w))


def fused_attention_forward(module: nn.Module, x: Tensor, *, kind: str, topk: tuple, backend: str) -> Tensor:
    """Patched ``forward`` of a transposed channel attention module: (B, dim, H, W) → (B, dim, H, W).

    The module's own convs, then one :func:`dual_attention` call on views of the depth-wise conv
    output, with ``temperature`` and the branch weights read from the module at call time.
    """
    return _attention_core(module, x, kind.split(":", 1)[1], topk,
                           functools.partial(dual_attention, backend=backend))


def fused_layer_norm_forward(module: nn.Module, x: Tensor, *, kind: str, backend: str) -> Tensor:
    """Patched ``forward`` of a Restormer-style LayerNorm wrapper: (B, C, H, W) → (B, C, H, W),
    normalised over C by :func:`channel_norm` with the body's ``weight`` (and ``bias``)."""
    body = module.body
    with_bias = kind == "layer_norm:with_bias"
    return channel_norm(x, body.weight, body.bias if with_bias else None, LN_EPS,
                        subtract_mean=with_bias, backend=backend)


def fused_depthwise_conv_forward(module: nn.Conv2d, x: Tensor, *, kind: str, backend: str) -> Tensor:
    """Patched ``forward`` of a depth-wise ``nn.Conv2d``: (B, C, H, W) → (B, C, H, W) by
    :func:`depthwise_conv` with the module's ``weight`` and ``bias``."""
    return depthwise_conv(x, module.weight, module.bias, backend=backend)


def _authors_gate(gate: nn.Module, z: Tensor) -> Tensor:
    """IDT-DDSA's spatial gate ``z · conv_sa([max over c, mean over c])``, with the channel max as ``amax``:
    ``torch.max(z, 1)`` also finds the indices, and is about 25× slower on CPU."""
    pooled = torch.cat((z.amax(dim=1, keepdim=True), z.mean(dim=1, keepdim=True)), dim=1)
    return z * gate.conv_sa(pooled)


def fused_feed_forward_forward(module: nn.Module, x: Tensor, *, kind: str, backend: str, gate: bool) -> Tensor:
    """Patched ``forward`` of IDT-DDSA's SEFN: (B, dim, H, W) → (B, dim, H, W); one
    :func:`depthwise_chain_mlp` call with the weights and biases of ``conv1x1_in``, ``dwconv3x3`` and
    ``project_out``, then the spatial gate: the authors' gate computed with ``amax`` when ``gate``, else
    the module's ``SAlayer`` as it is."""
    conv_in, dw, out = module.conv1x1_in, module.dwconv3x3, module.project_out
    z = depthwise_chain_mlp(x, conv_in.weight, conv_in.bias, dw.weight, dw.bias, out.weight, out.bias, backend=backend)
    return _authors_gate(module.SAlayer, z) if gate else module.SAlayer(z)


_FUSED = {fused_attention_forward: "attention", fused_layer_norm_forward: "layer_norm",
          fused_depthwise_conv_forward: "depthwise_conv", fused_feed_forward_forward: "feed_forward"}


def patched_kind(module: nn.Module) -> Optional[str]:
    """The kind (e.g. "attention:ddsa") when ``module`` is patched by :func:`patch`, else None."""
    fwd = module.__dict__.get("forward")
    if isinstance(fwd, functools.partial) and fwd.func in _FUSED:
        return fwd.keywords["kind"]
    return None


# ----------------------------------------------------------------------------- structural matching
def _is_conv(m, cin, cout, kernel, padding, groups) -> str:
    if not isinstance(m, nn.Conv2d):
        return f"is {type(m).__name__}, not Conv2d"
    want = (cin, cout, (kernel, kernel), (1, 1), (padding, padding), (1, 1), groups, "zeros")
    got = (m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride),
           m.padding if isinstance(m.padding, str) else tuple(m.padding), tuple(m.dilation), m.groups,
           m.padding_mode)
    if got != want:
        return (f"is Conv2d({m.in_channels}→{m.out_channels}, kernel {tuple(m.kernel_size)}, stride "
                f"{tuple(m.stride)}, padding {m.padding}, dilation {tuple(m.dilation)}, groups {m.groups}, "
                f"{m.padding_mode}); expected {cin}→{cout}, kernel {kernel}, padding {padding}, groups {groups}")
    return ""


def _is_attention_candidate(m: nn.Module) -> bool:
    return hasattr(m, "qkv") and (hasattr(m, "temperature") or hasattr(m, "num_heads"))


def _match_attention(m: nn.Module) -> tuple[Optional[str], str, tuple]:
    """(kind, "", topk) when ``m`` is a supported attention module, else (None, reason, ())."""
    heads = getattr(m, "num_heads", None)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        return None, f"num_heads is {heads!r}, not a positive int", ()
    children = dict(m.named_children())
    if "qkv" in children and not isinstance(children["qkv"], nn.Conv2d):
        return None, f"qkv is {type(children['qkv']).__name__}, not Conv2d", ()
    for name in _ATTENTION_CHILDREN:
        if name not in children:
            return None, f"no submodule {name!r}", ()
    extra = sorted(set(children) - {*_ATTENTION_CHILDREN, "attn_drop"})
    if extra:
        return None, f"unknown submodules {extra}", ()
    if "attn_drop" in children:
        drop = children["attn_drop"]
        if isinstance(drop, nn.Dropout):
            if drop.p != 0:
                return None, f"attn_drop is Dropout(p={drop.p}) (only p=0 is patched)", ()
        elif not isinstance(drop, nn.Identity):
            return None, f"attn_drop is {type(drop).__name__}, not Dropout(p=0)", ()
    dim = children["qkv"].in_channels
    for name, want in (("qkv", (dim, 3 * dim, 1, 0, 1)), ("qkv_dwconv", (3 * dim, 3 * dim, 3, 1, 3 * dim)),
                       ("project_out", (dim, dim, 1, 0, 1))):
        why = _is_conv(children[name], *want)
        if why:
            return None, f"{name} {why}", ()
    if dim % heads:
        return None, f"dim {dim} is not divisible by num_heads {heads}", ()
    channels = dim // heads
    params = dict(m.named_parameters(recurse=False))
    temp = params.get("temperature")
    if temp is None:
        return None, "no Parameter 'temperature'", ()
    if tuple(temp.shape) != (heads, 1, 1):
        return None, f"temperature has shape {tuple(temp.shape)}, expected ({heads}, 1, 1)", ()
    others = set(params) - {"temperature"}
    family = next((f for f, names in _FAMILY_WEIGHTS.items() if set(names) == others), None)
    if family is None:
        return None, f"unknown branch-weight parameters {sorted(others)}", ()
    for name in _FAMILY_WEIGHTS[family]:
        if tuple(params[name].shape) != (1,):
            return None, f"{name} has shape {tuple(params[name].shape)}, expected (1,)", ()
    buffers = [n for n, _ in m.named_buffers(recurse=False)]
    if buffers:
        return None, f"unknown buffers {sorted(buffers)}", ()
    topk = family_topk(family, channels)
    if any(k is not None and k < 1 for k in topk):
        return None, f"C={channels} channels per head gives a top-k keep-count of 0", ()
    return f"attention:{family}", "", topk


def _is_layer_norm_candidate(m: nn.Module) -> bool:
    body = getattr(m, "body", None)
    if not isinstance(body, nn.Module) or any(True for _ in body.children()):
        return False
    weight = body._parameters.get("weight")
    return isinstance(weight, nn.Parameter) and weight.dim() == 1


def _match_layer_norm(m: nn.Module) -> tuple[Optional[str], str]:
    body = m.body
    if list(m._parameters) or list(m._buffers):
        return None, "the wrapper has parameters or buffers of its own"
    if set(dict(m.named_children())) != {"body"}:
        return None, f"the wrapper has submodules {sorted(dict(m.named_children()))}, expected only body"
    params = dict(body.named_parameters(recurse=False))
    weight = params["weight"]
    if list(body.named_buffers(recurse=False)):
        return None, "body has buffers"
    if set(params) == {"weight"}:
        if getattr(body, "bias", None) is not None:
            return None, "body.bias is set but is not a Parameter"
        return "layer_norm:bias_free", ""
    if set(params) == {"weight", "bias"}:
        if params["bias"].shape != weight.shape:
            return None, f"body.bias has shape {tuple(params['bias'].shape)}, expected {tuple(weight.shape)}"
        return "layer_norm:with_bias", ""
    return None, f"body has parameters {sorted(params)}, expected weight (and bias)"


def _is_depthwise_candidate(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _match_depthwise(m: nn.Conv2d) -> tuple[Optional[str], str]:
    """("depthwise_conv:KxK", "") for a supported depth-wise conv, else (None, reason)."""
    if type(m).forward is not nn.Conv2d.forward or type(m)._conv_forward is not nn.Conv2d._conv_forward:
        return None, f"{type(m).__name__} overrides Conv2d's forward"
    kh, kw = m.kernel_size
    if kh != kw or kh % 2 != 1 or kh > MAX_KERNEL:
        return None, f"kernel {tuple(m.kernel_size)} (supported: square, odd, up to {MAX_KERNEL}×{MAX_KERNEL})"
    padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
    if padding not in ("same", (kh // 2, kh // 2)) or m.padding_mode != "zeros":
        return None, f"padding {m.padding} ({m.padding_mode}); supported: zeros, {kh // 2} on each side"
    if tuple(m.stride) != (1, 1) or tuple(m.dilation) != (1, 1):
        return None, f"stride {tuple(m.stride)}, dilation {tuple(m.dilation)}; supported: 1, 1"
    if list(m._buffers) or set(m._parameters) - {"weight", "bias"}:
        return None, "extra parameters or buffers"
    return f"depthwise_conv:{kh}x{kh}", ""


def _is_sefn_candidate(m: nn.Module) -> bool:
    return hasattr(m, "conv1x1_in") and hasattr(m, "dwconv3x3")


def _match_sefn(m: nn.Module) -> tuple[Optional[str], str, dict]:
    """("feed_forward:sefn", "", {"gate": whether SAlayer looks like the authors' gate}) for IDT-DDSA's
    SEFN, else (None, reason, {})."""
    children = dict(m.named_children())
    if set(children) != _SEFN_CHILDREN:
        return None, f"submodules {sorted(children)}, expected {sorted(_SEFN_CHILDREN)}", {}
    if list(m._parameters) or list(m._buffers):
        return None, "the block has parameters or buffers of its own", {}
    conv_in, dw = children["conv1x1_in"], children["dwconv3x3"]
    if not isinstance(conv_in, nn.Conv2d) or not isinstance(dw, nn.Conv2d):
        return None, "conv1x1_in and dwconv3x3 must be Conv2d", {}
    dim, hidden = conv_in.in_channels, dw.in_channels
    k = dw.kernel_size[0]
    if k % 2 != 1 or k > MAX_KERNEL:
        return None, f"dwconv3x3 has kernel {tuple(dw.kernel_size)} (supported: square, odd, up to {MAX_KERNEL})", {}
    for name, want in (("conv1x1_in", (dim, 3 * hidden, 1, 0, 1)), ("dwconv3x3", (hidden, hidden, k, k // 2, hidden)),
                       ("project_out", (3 * hidden, dim, 1, 0, 1))):
        why = _is_conv(children[name], *want)
        if why:
            return None, f"{name} {why}", {}
    if type(children["relu"]) is not nn.ReLU:
        return None, f"relu is {type(children['relu']).__name__}, not ReLU", {}
    return "feed_forward:sefn", "", {"gate": _looks_like_authors_gate(children["SAlayer"])}


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
    return (not _is_conv(conv, 2, 1, conv.kernel_size[0], conv.kernel_size[0] // 2, 1)
            and type(bn) is nn.BatchNorm2d and bn.num_features == 1 and type(act) is nn.Sigmoid)


# ----------------------------------------------------------------------------- behavioural check
def _float64_copy(m: nn.Module) -> nn.Module:
    twin = copy.deepcopy(m).to("cpu", torch.float64)
    return twin


def _close(a: Tensor, b: Tensor) -> bool:
    scale = max(1.0, float(b.abs().max()))
    return a.shape == b.shape and bool((a - b).abs().max() <= 1e-9 * scale)


def _check_attention(m: nn.Module, kind: str, topk: tuple) -> str:
    """Empty string when the module's own forward equals the fused computation (float64, CPU)."""
    gen = torch.Generator().manual_seed(0)
    twin = _float64_copy(m)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            lo, hi = (0.5, 2.0) if name == "temperature" else (0.1, 1.0) if p.dim() == 1 and p.numel() == 1 \
                else (-1.0, 1.0)
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo)
        x = torch.randn(1, twin.qkv.in_channels, 4, 5, generator=gen, dtype=torch.float64)
        own = type(m).forward(twin, x)
        fused = _attention_core(twin, x, kind.split(":", 1)[1], topk, reference_dual_attention)
    if not _close(fused, own):
        return "its forward differs from the fused computation on a float64 test input (changed math?)"
    return ""


def _check_layer_norm(m: nn.Module, kind: str) -> str:
    gen = torch.Generator().manual_seed(0)
    twin = _float64_copy(m)
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
        c = twin.body.weight.shape[0]
        # pixels of very different scale, down to a variance comparable to eps
        scale = torch.tensor([1e-3, 3e-3, 1e-2, 0.1, 1.0, 10.0], dtype=torch.float64).view(1, 1, 2, 3)
        x = torch.randn(1, c, 2, 3, generator=gen, dtype=torch.float64) * scale + 0.3 * scale
        own = type(m).forward(twin, x)
        body = twin.body
        var = x.var(1, keepdim=True, unbiased=False)
        w = body.weight.view(1, c, 1, 1)
        if kind == "layer_norm:with_bias":
            want = (x - x.mean(1, keepdim=True)) / torch.sqrt(var + LN_EPS) * w + body.bias.view(1, c, 1, 1)
        else:
            want = x / torch.sqrt(var + LN_EPS) * w
    if not _close(want, own):
        return (f"its forward differs from {kind.split(':')[1]} LayerNorm over channels with eps {LN_EPS:g} "
                "on a float64 test input (another eps or formula?)")
    return ""


def _check_sefn(m: nn.Module, extra: dict) -> str:
    """Empty string when the module's own forward equals the fused computation (float64, CPU). A gate that
    looks like the authors' but computes something else is kept as it is (``extra["gate"]`` set False)."""
    gen = torch.Generator().manual_seed(0)
    twin = _float64_copy(m).eval()
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1)
        x = torch.randn(2, twin.conv1x1_in.in_channels, 4, 5, generator=gen, dtype=torch.float64)
        own = type(m).forward(twin, x)
        if extra.get("gate"):
            z = torch.randn(2, twin.project_out.out_channels, 4, 5, generator=gen, dtype=torch.float64)
            extra["gate"] = _close(_authors_gate(twin.SAlayer, z), twin.SAlayer(z))
        fused = fused_feed_forward_forward(twin, x, kind="feed_forward:sefn", backend="reference", gate=extra["gate"])
    if not _close(fused, own):
        return "its forward differs from SEFN's relu-conv chain on a float64 test input (changed math?)"
    return ""


# ----------------------------------------------------------------------------- report
@dataclass
class PatchReport:
    """What :func:`patch` did.

    patched: (module path, kind) of every module patched by this call; kinds are "attention:ddsa",
    "attention:drsformer", "attention:restormer", "layer_norm:with_bias", "layer_norm:bias_free",
    "depthwise_conv:3x3" (and 1x1, 5x5, 7x7), "feed_forward:sefn".
    already_patched: (path, kind) of modules that were patched before this call (left as they are).
    skipped: (path, reason) of modules that look like a supported module but are not one.
    backend: the backend name given to each op ("attention", "layer_norm", "depthwise_conv", "feed_forward").
    resolved: for each kind patched, the backends the op resolves to for the model's parameters'
    device and dtype at patch time (what "auto" picks; it can differ per channel count).
    """

    patched: list[tuple[str, str]] = field(default_factory=list)
    already_patched: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    backend: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, list[str]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Number of modules patched by this call, per kind."""
        return dict(sorted(Counter(kind for _, kind in self.patched).items()))

    def __str__(self) -> str:
        lines = [f"ddsa_kernels.patch: {len(self.patched)} module(s) patched"
                 + (f", {len(self.already_patched)} already patched" if self.already_patched else "")
                 + (f", {len(self.skipped)} skipped" if self.skipped else "")]
        for kind, n in self.counts.items():
            res = self.resolved.get(kind)
            lines.append(f"  {kind:<22} {n:>3}" + (f"   backend: {', '.join(res)}" if res else ""))
        if self.already_patched:
            lines.append("  already patched (left as they are): "
                         + ", ".join(p or "<root>" for p, _ in self.already_patched))
        for path, why in self.skipped:
            lines.append(f"  skipped {path or '<root>'}: {why}")
        lines.append("  backends requested: " + ", ".join(f"{k}={v}" for k, v in self.backend.items()))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the rules, in order
@dataclass(frozen=True)
class _Rule:
    """One kind of module: a cheap pre-filter, the structural match (kind or None, why not, extra
    keyword arguments of the fused forward), the behavioural check (None: none needed), the fused
    forward and the channel count its op resolves a backend for."""

    group: str
    is_candidate: Callable[[nn.Module], bool]
    match: Callable[[nn.Module], tuple[Optional[str], str, dict]]
    check: Optional[Callable[[nn.Module, str, dict], str]]
    forward: Callable[..., Tensor]
    channels: Callable[[nn.Module], Optional[int]]


def _no_channels(m: nn.Module) -> None:
    return None


def _match_attention_rule(m: nn.Module) -> tuple[Optional[str], str, dict]:
    kind, why, topk = _match_attention(m)
    return kind, why, {"topk": topk}


_RULES = (
    _Rule("attention", _is_attention_candidate, _match_attention_rule,
          lambda m, kind, extra: _check_attention(m, kind, extra["topk"]), fused_attention_forward,
          lambda m: m.qkv.in_channels // m.num_heads),
    _Rule("layer_norm", _is_layer_norm_candidate, lambda m: (*_match_layer_norm(m), {}),
          lambda m, kind, extra: _check_layer_norm(m, kind), fused_layer_norm_forward, _no_channels),
    _Rule("feed_forward", _is_sefn_candidate, _match_sefn,
          lambda m, kind, extra: _check_sefn(m, extra), fused_feed_forward_forward, _no_channels),
    # structure and type say it all: no behavioural check
    _Rule("depthwise_conv", _is_depthwise_candidate, lambda m: (*_match_depthwise(m), {}), None,
          fused_depthwise_conv_forward, _no_channels),
)


# ----------------------------------------------------------------------------- public functions
def _backend_names(backend: Union[str, Mapping[str, str]]) -> dict[str, str]:
    names = dict(backend) if isinstance(backend, Mapping) else {kind: backend for kind in _OPS}
    unknown = set(names) - set(_OPS)
    if unknown:
        raise ValueError(f"backend keys must be among {sorted(_OPS)}, got {sorted(unknown)}")
    for kind, op in _OPS.items():
        names.setdefault(kind, "auto")
        if op in _registry.BACKENDS:
            _registry.check_backend_name(names[kind], op)
        elif not isinstance(names[kind], str):
            raise ValueError(f"backend for {kind} must be a string, got {names[kind]!r}")
    return names


def _resolve(op: str, name: str, model: nn.Module, channels: Optional[int]) -> str:
    if op not in _registry.BACKENDS:
        return name
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
    backend: Union[str, Mapping[str, str]] = "auto",
    verify: bool = True,
) -> PatchReport:
    """Make the attention, LayerNorm, depth-wise conv and SEFN modules of ``model`` run the fused ops, in place.

    Walks every submodule (``model`` included). Supported modules get an instance ``forward`` that
    calls :func:`ddsa_kernels.dual_attention` / :func:`ddsa_kernels.channel_norm` /
    :func:`ddsa_kernels.depthwise_conv` / :func:`ddsa_kernels.depthwise_chain_mlp` with the module's own
    convs and parameters; nothing else
    changes (same parameters, names, state dict, optimizer).

    Args:
        model: any ``nn.Module``, on any device and dtype.
        attention: patch transposed channel attention modules (Restormer / DDSA / DRSformer).
        layer_norm: patch Restormer-style channel LayerNorm wrappers (WithBias and BiasFree).
        depthwise_conv: patch depth-wise ``nn.Conv2d`` modules (odd square kernel ≤ 7, stride 1,
            zero "same" padding); on CUDA and under autocast they keep running torch's convolution.
        feed_forward: patch IDT-DDSA's SEFN blocks (all but the gate becomes one fused op on CPU; on
            CUDA and under autocast it runs as torch ops, as before).
        backend: a backend name for every op ("auto", or a name of :func:`ddsa_kernels.build_info`), or a
            mapping {"attention": name, "layer_norm": name, "depthwise_conv": name, "feed_forward": name}.
            To change it later,
            :func:`unpatch` first.
        verify: compare each candidate's own forward with the fused computation once, on a float64
            CPU copy and a tiny random input, and skip the module on a mismatch (recommended).

    Returns:
        A :class:`PatchReport` (``print`` it for a summary).
    """
    names = _backend_names(backend)
    report = PatchReport(backend=names)
    resolved: dict[str, set[str]] = {}
    enabled = {"attention": attention, "layer_norm": layer_norm, "feed_forward": feed_forward,
               "depthwise_conv": depthwise_conv}
    for path, m in model.named_modules():
        done = patched_kind(m)
        if done is not None:
            report.already_patched.append((path, done))
            continue
        rule = next((r for r in _RULES if enabled[r.group] and r.is_candidate(m)), None)
        if rule is None:
            continue
        kind, why, extra = rule.match(m)
        if kind is not None and "forward" in m.__dict__:
            kind, why = None, "its forward is already overridden on the instance"
        if kind is not None and verify and rule.check is not None:
            try:
                why = rule.check(m, kind, extra)
            except Exception as exc:  # a fork whose forward does not even run on the test input
                why = f"behaviour check failed: {type(exc).__name__}: {exc}"
        if kind is None or why:
            report.skipped.append((path, why))
            continue
        m.forward = functools.partial(rule.forward, m, kind=kind, backend=names[rule.group], **extra)
        report.patched.append((path, kind))
        resolved.setdefault(kind, set()).add(_resolve(_OPS[rule.group], names[rule.group], model, rule.channels(m)))
    report.resolved = {k: sorted(v) for k, v in sorted(resolved.items())}
    return report


def unpatch(model: nn.Module) -> list[tuple[str, str]]:
    """Undo :func:`patch` on every submodule of ``model`` (in place); returns the (path, kind) restored."""
    restored = []
    for path, m in model.named_modules():
        kind = patched_kind(m)
        if kind is not None:
            del m.__dict__["forward"]
            restored.append((path, kind))
    return restored


__all__ = ["patch", "unpatch", "PatchReport", "patched_kind", "family_topk"]
