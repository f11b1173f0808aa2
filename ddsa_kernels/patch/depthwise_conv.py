"""Depth-wise convolution: an ``nn.Conv2d`` running Conv2d's own forward, with groups = in = out channels,
an odd square kernel up to 7×7, stride 1 and zero "same" padding (dilation · (K // 2)). These sit in every
block (the attention's ``qkv_dwconv``, the feed-forwards' depth-wise convs, DRSformer's MEFC); on CPU
torch runs them through oneDNN's NCHW path, several times slower than the memory traffic allows.
Structure and type say everything here: no behaviour check. Fused forward: :func:`depthwise_conv` with
the module's ``weight`` and ``bias``."""
from __future__ import annotations

from torch import nn

from ..ops.depthwise_conv import depthwise_conv
from ..ops._common import MAX_KERNEL
from ._rule import Match, MatchResult, Rule, Skip, Tensor, overrides_conv_forward


def is_candidate(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def match(m: nn.Module) -> MatchResult:
    if overrides_conv_forward(m):
        return Skip(f"{type(m).__name__} overrides Conv2d's forward")
    kh, kw = m.kernel_size
    if kh != kw or kh % 2 != 1 or kh > MAX_KERNEL:
        return Skip(f"kernel {tuple(m.kernel_size)} (supported: square, odd, up to {MAX_KERNEL}×{MAX_KERNEL})")
    dh, dw = m.dilation
    if tuple(m.stride) != (1, 1) or dh != dw:
        return Skip(f"stride {tuple(m.stride)}, dilation {tuple(m.dilation)}; supported: stride 1, equal dilations")
    reach = dh * (kh // 2)
    padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
    if padding not in ("same", (reach, reach)) or m.padding_mode != "zeros":
        return Skip(f"padding {m.padding} ({m.padding_mode}); supported: zeros, {reach} on each side")
    if list(m._buffers) or set(m._parameters) - {"weight", "bias"}:
        return Skip("extra parameters or buffers")
    dh = 1 if kh == 1 else dh  # a 1×1 kernel has no reach to dilate
    return Match("depthwise_conv", f"{kh}x{kh}" + (f"/d{dh}" if dh != 1 else ""), {"dilation": dh})


def forward(module: nn.Conv2d, x: Tensor, *, match: Match, backend: str) -> Tensor:
    """Patched ``forward``: (B, C, H, W) → (B, C, H, W)."""
    return depthwise_conv(x, module.weight, module.bias, dilation=match.options["dilation"], backend=backend)


RULE = Rule("depthwise_conv", "depthwise_conv", is_candidate, match, forward,
            test_channels=lambda m: m.in_channels, verify=False)
