"""ddsa_model: the DDSA deraining network (DESIGN §4), its presets, checkpoints and converter.

    from ddsa_model import build_model, save_model, load_model
    model = build_model("ddsa-small", attention_backend="auto")
    derained = model(rainy)            # (B, 3, H, W) in [0, 1], any H, W
"""
from .blocks import DATB, GDFN, SEFN, DualSelfAttention, Downsample, LayerNorm2d, SpatialAttentionGate, Upsample
from .checkpoint import checkpoint_metadata, config_of_checkpoint, load_model, read_checkpoint, save_model
from .config import ATTENTION_KINDS, FFN_KINDS, PRESETS, DDSAConfig, get_preset_config
from .convert import detect_config, load_official_checkpoint, official_to_ddsa, ddsa_to_official
from .network import DDSANet, build_model, count_parameters, format_presets, list_presets, pad_to_multiple

__all__ = [
    "DDSAConfig", "DDSANet", "build_model", "list_presets", "format_presets", "count_parameters",
    "get_preset_config", "PRESETS", "ATTENTION_KINDS", "FFN_KINDS",
    "save_model", "load_model", "read_checkpoint", "checkpoint_metadata", "config_of_checkpoint",
    "load_official_checkpoint", "official_to_ddsa", "ddsa_to_official", "detect_config",
    "DATB", "DualSelfAttention", "SEFN", "GDFN", "SpatialAttentionGate", "LayerNorm2d",
    "Downsample", "Upsample", "pad_to_multiple",
]
