"""ddsa_model: the DDSA deraining network, its presets, checkpoints, converter and shipped weights.

    from ddsa_model import build_model, save_model, load_model
    model = build_model("ddsa-small", attention_backend="auto")
    derained = model(rainy)            # (B, 3, H, W) in [0, 1], any H, W
    model = load_default_model()       # the shipped ddsa-small weights, eval mode

Data, image I/O, metrics, inference and training live in :mod:`ddsa_model.pipeline`; the
command-line tools in :mod:`ddsa_model.cli`. This package imports neither. Its names load on first
use, so light submodules (:mod:`ddsa_model.atomic`) import without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .blocks import DATB, GDFN, SEFN, DualSelfAttention, Downsample, LayerNorm2d, SpatialAttentionGate, Upsample
    from .checkpoint import checkpoint_metadata, config_of_checkpoint, load_model, read_checkpoint, save_model
    from .config import ATTENTION_KINDS, FFN_KINDS, PRESETS, DDSAConfig, get_preset_config
    from .convert import detect_config, load_official_checkpoint, official_to_ddsa, ddsa_to_official
    from .network import DDSANet, build_model, count_parameters, format_presets, list_presets, pad_to_multiple
    from .pretrained import load_default_model

_EXPORTS_BY_MODULE = {
    "blocks": ("DATB", "GDFN", "SEFN", "DualSelfAttention", "Downsample", "LayerNorm2d", "SpatialAttentionGate",
               "Upsample"),
    "checkpoint": ("checkpoint_metadata", "config_of_checkpoint", "load_model", "read_checkpoint", "save_model"),
    "config": ("ATTENTION_KINDS", "FFN_KINDS", "PRESETS", "DDSAConfig", "get_preset_config"),
    "convert": ("detect_config", "load_official_checkpoint", "official_to_ddsa", "ddsa_to_official"),
    "network": ("DDSANet", "build_model", "count_parameters", "format_presets", "list_presets", "pad_to_multiple"),
    "pretrained": ("load_default_model",),
}
_EXPORTS = {name: module for module, names in _EXPORTS_BY_MODULE.items() for name in names}

__all__ = [
    "DDSAConfig", "DDSANet", "build_model", "list_presets", "format_presets", "count_parameters",
    "get_preset_config", "PRESETS", "ATTENTION_KINDS", "FFN_KINDS",
    "save_model", "load_model", "read_checkpoint", "checkpoint_metadata", "config_of_checkpoint", "load_default_model",
    "load_official_checkpoint", "official_to_ddsa", "ddsa_to_official", "detect_config",
    "DATB", "DualSelfAttention", "SEFN", "GDFN", "SpatialAttentionGate", "LayerNorm2d",
    "Downsample", "Upsample", "pad_to_multiple",
]

_SUBMODULES = ("atomic", "blocks", "checkpoint", "config", "convert", "network", "pretrained", "pipeline", "cli")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
