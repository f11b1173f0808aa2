"""DDSANet: the 4-level U-Net of DATB blocks (dual-attention Transformer blocks) and its presets."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddsa_kernels import DualSelfAttentionCore
from ddsa_kernels._registry import check_backend_name

from .blocks import DATB, Downsample, Upsample
from .config import PRESETS, DDSAConfig, get_preset_config

PAD_MULTIPLE = 8  # three 2× down-samplings


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom/right to multiples of ``multiple`` by reflection.

    Reflection needs pad < size; a smaller image is reflected repeatedly (a 1-pixel side is
    replicated), so any size ≥ 1 works.
    """
    for dim in (2, 3):
        need = -x.shape[dim] % multiple
        while need > 0:
            size = x.shape[dim]
            step = min(need, size - 1)
            pad = [0, 0, 0, 0]
            if step == 0:  # a single row/column cannot be reflected
                pad[1 if dim == 3 else 3] = need
                x = F.pad(x, pad, mode="replicate")
                break
            pad[1 if dim == 3 else 3] = step
            x = F.pad(x, pad, mode="reflect")
            need -= step
    return x


def _stage(config: DDSAConfig, channels: int, heads: int, depth: int, attention_backend: str) -> nn.Sequential:
    topk = config.topk(channels // heads)
    return nn.Sequential(*[
        DATB(channels, heads, topk, config.ffn, config.ffn_expansion_factor, attention_backend,
             config.bn_momentum, config.layernorm_eps)
        for _ in range(depth)
    ])


class DDSANet(nn.Module):
    """The DDSA deraining network.

    ``forward(x)``: x is (B, 3, H, W) float (rainy image, [0, 1]) of any H, W ≥ 1; returns the
    derained (B, 3, H, W) = x + net(x). Internally x is reflect-padded to multiples of 8 and the
    result cropped back. ``attention_backend`` picks the attention op's backend ("auto",
    "reference", "eager", ...; see ``ddsa_kernels.build_info(op="dual_attention")``); it is not part of the config.
    """

    def __init__(self, config: DDSAConfig, attention_backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(config, DDSAConfig):
            raise TypeError(f"DDSANet needs a DDSAConfig, got {type(config).__name__}")
        self.config = config
        check_backend_name(attention_backend, "dual_attention")
        c = config
        d, h, n = c.dim, c.heads, c.num_blocks
        self.patch_embed = nn.Conv2d(3, d, 3, padding=1, bias=False)
        self.refinement_in = _stage(c, d, h[0], c.num_refinement_blocks, attention_backend)
        self.encoder1 = _stage(c, d, h[0], n[0], attention_backend)
        self.down12 = Downsample(d)
        self.encoder2 = _stage(c, 2 * d, h[1], n[1], attention_backend)
        self.down23 = Downsample(2 * d)
        self.encoder3 = _stage(c, 4 * d, h[2], n[2], attention_backend)
        self.down34 = Downsample(4 * d)
        self.latent = _stage(c, 8 * d, h[3], n[3], attention_backend)
        self.up43 = Upsample(8 * d)
        self.reduce3 = nn.Conv2d(8 * d, 4 * d, 1, bias=False)
        self.decoder3 = _stage(c, 4 * d, h[2], n[2], attention_backend)
        self.up32 = Upsample(4 * d)
        self.reduce2 = nn.Conv2d(4 * d, 2 * d, 1, bias=False)
        self.decoder2 = _stage(c, 2 * d, h[1], n[1], attention_backend)
        self.up21 = Upsample(2 * d)
        # Decoder L1 keeps the concatenated 2·dim channels (no 1×1 reduction), as the authors do.
        self.decoder1 = _stage(c, 2 * d, h[0], n[0], attention_backend)
        self.refinement_out = _stage(c, 2 * d, h[0], c.num_refinement_blocks, attention_backend)
        self.output = nn.Conv2d(2 * d, 3, 3, padding=1, bias=False)

    # -- attention backend ----------------------------------------------------------------
    def _attention_cores(self) -> list[DualSelfAttentionCore]:
        return [m for m in self.modules() if isinstance(m, DualSelfAttentionCore)]

    @property
    def attention_backend(self) -> str:
        """The attention op backend of the blocks (all share one; see :meth:`set_attention_backend`)."""
        return self._attention_cores()[0].backend

    def set_attention_backend(self, name: str) -> "DDSANet":
        """Switch every attention block to backend ``name`` ("auto", "reference", "eager", ...)."""
        check_backend_name(name, "dual_attention")
        for core in self._attention_cores():
            core.backend = name
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x)
        out = padded + self.residual(padded)
        return out[:, :, :height, :width]

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """net(x) for (B, 3, H, W) with H, W multiples of 8 (no padding, no skip from the input)."""
        enc1 = self.encoder1(self.refinement_in(self.patch_embed(x)))
        enc2 = self.encoder2(self.down12(enc1))
        enc3 = self.encoder3(self.down23(enc2))
        lat = self.latent(self.down34(enc3))
        dec3 = self.decoder3(self.reduce3(torch.cat((self.up43(lat), enc3), dim=1)))
        dec2 = self.decoder2(self.reduce2(torch.cat((self.up32(dec3), enc2), dim=1)))
        dec1 = self.decoder1(torch.cat((self.up21(dec2), enc1), dim=1))
        return self.output(self.refinement_out(dec1))

    def extra_repr(self) -> str:
        return f"attention_backend={self.attention_backend!r}"


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"DDSANet expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"DDSANet expects images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"DDSANet expects a floating-point image in [0, 1], got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"DDSANet got an empty image batch of shape {tuple(x.shape)}")


def build_model(name: str = "ddsa-small", attention_backend: str = "auto", **overrides: Any) -> DDSANet:
    """The network of preset ``name`` ("ddsa", "ddsa-official", "ddsa-small", "tiny"), with
    config fields replaced by ``overrides`` (e.g. ``attention="dense"``, ``ffn="gdfn"``)."""
    return DDSANet(get_preset_config(name, **overrides), attention_backend=attention_backend)


def count_parameters(config: DDSAConfig) -> int:
    """Learnable parameters of the network of ``config`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        return DDSANet(config).num_parameters()


def list_presets() -> dict[str, dict[str, Any]]:
    """{name: {"params": int, "description": str, "config": dict}} for every preset."""
    return {
        name: {"params": count_parameters(p.config), "description": p.description, "config": p.config.to_dict()}
        for name, p in PRESETS.items()
    }


def format_presets() -> str:
    """The presets as a printable table."""
    rows = [(name, f"{info['params']:,}", info["description"]) for name, info in list_presets().items()]
    width = max(len(r[0]) for r in rows)
    pwidth = max(len(r[1]) for r in rows)
    lines = [f"{'preset':<{width}}  {'params':>{pwidth}}  description"]
    lines += [f"{n:<{width}}  {p:>{pwidth}}  {d}" for n, p, d in rows]
    return "\n".join(lines)
