"""Attention forks of the published IDT-DDSA structure that ``ddsa_kernels.patch`` must not silently change.

Each keeps the attributes of IDT-DDSA's ``Attention`` (``num_heads``, ``temperature``, ``qkv``,
``qkv_dwconv``, ``project_out``, the branch weights ``attn``, ``attn1``) and its state-dict names, and
computes the same dense + top-⌊7C/10⌋ channel attention, but not always over the whole image:

* :class:`WindowedAttention` — size-dependent: attention within overlapping square windows (side
  ``window_size``, stride ``window_size // 2``), overlaps averaged; global on an input that fits in one window.
* :class:`EvalWindowedAttention` — mode-dependent: global in training; in eval, windowed (side
  ``eval_window``) on images with a side larger than ``eval_window``, global otherwise.
* :class:`PriorAttention` — an extra forward argument: ``forward(x, prior=None)`` adds a learned 1×1
  projection of ``prior`` to v; :class:`PriorNet` is a tiny network that calls it with a prior.

:func:`swap_attention` puts a fork in place of every ``Attention`` of a network, keeping the weights.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

try:
    from . import idt_ddsa_arch as _arch
except ImportError:  # loaded by file path (no package): load the sibling file the same way
    import importlib.util as _util
    from pathlib import Path as _Path

    _spec = _util.spec_from_file_location("_forks_idt_ddsa_arch", _Path(__file__).with_name("idt_ddsa_arch.py"))
    _arch = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_arch)


def dual_attention_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                         w_dense: torch.Tensor, w_top: torch.Tensor) -> torch.Tensor:
    """IDT-DDSA's attention on (B, heads, C, N) q, k, v: normalise q, k over N, scores · temperature,
    ``softmax @ v · w_dense + softmax(top-⌊7C/10⌋ of each row) @ v · w_top`` → (B, heads, C, N)."""
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    scores = (q @ k.transpose(-2, -1)) * temperature
    keep = int(7 * q.shape[2] / 10)
    mask = torch.zeros_like(scores).scatter_(-1, torch.topk(scores, k=keep, dim=-1)[1], 1.0)
    top = torch.where(mask > 0, scores, torch.full_like(scores, float("-inf")))
    return (scores.softmax(dim=-1) @ v) * w_dense + (top.softmax(dim=-1) @ v) * w_top


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` covering ``length`` (the last one flush
    with the end); ``[0]`` when the length fits in one window."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, c, h, w = t.shape
    return t.reshape(b, heads, c // heads, h * w)


class WindowedAttention(_arch.Attention):
    """Size-dependent fork: IDT-DDSA's attention computed separately in overlapping square windows.

    ``window_size`` is fixed at construction (the training crop, e.g. 64); windows of that side start
    every ``window_size // 2`` pixels (the last one flush with the border), each window's q, k are
    normalised over its own pixels, and where windows overlap their outputs are averaged. An input
    whose sides are both ≤ ``window_size`` is one window: exactly the global attention.
    (B, dim, H, W) → (B, dim, H, W).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False, window_size: int = 64) -> None:
        super().__init__(dim, num_heads, bias)
        if window_size < 2:
            raise ValueError(f"window_size must be at least 2, got {window_size}")
        self.window_size = window_size

    def windowed(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """The attention of ``x`` in windows of side ``window`` (stride window // 2), overlaps averaged."""
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x))
        total = torch.zeros(b, c, h, w, dtype=qkv.dtype, device=qkv.device)
        count = torch.zeros(1, 1, h, w, dtype=qkv.dtype, device=qkv.device)
        for top in window_starts(h, window, window // 2):
            for left in window_starts(w, window, window // 2):
                crop = qkv[:, :, top:top + window, left:left + window]
                q, k, v = (_split_heads(t, self.num_heads) for t in crop.chunk(3, dim=1))
                out = dual_attention_heads(q, k, v, self.temperature, self.attn, self.attn1)
                total[:, :, top:top + window, left:left + window] += out.reshape(b, c, *crop.shape[-2:])
                count[:, :, top:top + window, left:left + window] += 1
        return self.project_out(total / count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.windowed(x, self.window_size)


class EvalWindowedAttention(WindowedAttention):
    """Mode-dependent fork: branches on ``self.training``.

    In training mode: IDT-DDSA's global attention. In eval mode: on an image with a side larger than
    ``eval_window`` (default 192 px), the windowed attention of :class:`WindowedAttention` with windows of
    that side; below it, the global attention again. (B, dim, H, W) → (B, dim, H, W).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False, eval_window: int = 192) -> None:
        super().__init__(dim, num_heads, bias, window_size=eval_window)
        self.eval_window = eval_window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or max(x.shape[-2:]) <= self.eval_window:
            return _arch.Attention.forward(self, x)
        return self.windowed(x, self.eval_window)


class PriorAttention(_arch.Attention):
    """Extra-argument fork: ``forward(x, prior=None)``.

    Without a prior it is IDT-DDSA's attention. With ``prior`` (B, prior_channels, H, W), a learned 1×1
    projection ``prior_proj(prior)`` (prior_channels → dim, no bias) is added to v (after ``qkv_dwconv``,
    before the heads are split); q and k are unchanged. (B, dim, H, W) → (B, dim, H, W).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False, prior_channels: int = 1) -> None:
        super().__init__(dim, num_heads, bias)
        self.prior_proj = nn.Conv2d(prior_channels, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        if prior is not None:
            v = v + self.prior_proj(prior)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        out = dual_attention_heads(q, k, v, self.temperature, self.attn, self.attn1)
        return self.project_out(out.reshape(b, c, h, w))


class PriorBlock(nn.Module):
    """IDT-DDSA's transformer block whose attention is a :class:`PriorAttention` fed ``prior``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 2.0, bias: bool = False,
                 LayerNorm_type: str = "WithBias", prior_channels: int = 1) -> None:
        super().__init__()
        self.norm1 = _arch.LayerNorm(dim, LayerNorm_type)
        self.attn = PriorAttention(dim, num_heads, bias, prior_channels)
        self.norm2 = _arch.LayerNorm(dim, LayerNorm_type)
        self.ffn = _arch.FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), prior)
        return x + self.ffn(self.norm2(x))


class PriorNet(nn.Module):
    """A tiny deraining net that passes a rain prior to its attentions: the prior is
    ``sigmoid(prior_head(image))`` (1 channel), each block calls ``attn(norm1(x), prior)``.
    (B, 3, H, W) → (B, 3, H, W), any H, W."""

    def __init__(self, dim: int = 8, num_heads: int = 2, num_blocks: int = 2, ffn_expansion_factor: float = 2.0,
                 bias: bool = False) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=3, padding=1, bias=bias)
        self.prior_head = nn.Conv2d(3, 1, kernel_size=3, padding=1)
        self.blocks = nn.ModuleList([PriorBlock(dim, num_heads, ffn_expansion_factor, bias) for _ in range(num_blocks)])
        self.output = nn.Conv2d(dim, 3, kernel_size=3, padding=1, bias=bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        prior = torch.sigmoid(self.prior_head(img))
        x = self.patch_embed(img)
        for block in self.blocks:
            x = block(x, prior)
        return self.output(x) + img


def swap_attention(net: nn.Module, make: Callable[[int, int, bool], nn.Module]) -> nn.Module:
    """Replace, in place, every IDT-DDSA-structured attention of ``net`` (a module with ``qkv``,
    ``qkv_dwconv``, ``project_out``, ``temperature``, ``attn``, ``attn1``) by ``make(dim, num_heads, bias)``
    carrying the same weights (extra parameters of the fork keep their init); returns ``net``."""
    targets = [(path, m) for path, m in net.named_modules()
               if all(hasattr(m, a) for a in ("qkv", "qkv_dwconv", "project_out", "temperature", "attn", "attn1"))]
    for path, old in targets:
        new = make(old.qkv.in_channels, old.num_heads, old.qkv.bias is not None)
        missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
        if unexpected or any(not name.startswith("prior_proj.") for name in missing):
            raise ValueError(f"{path}: the fork's parameters differ from the attention's: missing {missing}, "
                             f"unexpected {unexpected}")
        new.to(old.temperature.device, old.temperature.dtype).train(old.training)
        parent_path, _, name = path.rpartition(".")
        setattr(net.get_submodule(parent_path) if parent_path else net, name, new)
    return net
