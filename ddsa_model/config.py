"""``DDSAConfig``: every architectural choice of the network, and the named presets.

The config is a plain dataclass of JSON types (tuples become lists in JSON and come back as
tuples through :meth:`DDSAConfig.from_dict`); it is stored inside every checkpoint. The
attention backend is a run-time choice, not part of the config.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

ATTENTION_KINDS = ("dual", "dense", "sparse")
FFN_KINDS = ("sefn", "gdfn", "sefn-no-sa")
LEVELS = 4  # U-Net levels: L1, L2, L3 and the latent level; 3 down-samplings -> factor 8


@dataclass(frozen=True)
class DDSAConfig:
    """Architecture of :class:`ddsa_model.DDSANet`.

    Attributes:
        dim: channels of level 1 (level i has ``dim * 2**i``; decoder L1 and the final
            refinement stage run at ``2 * dim``).
        num_blocks: DATB blocks of encoder L1, L2, L3 and the latent level; the decoder uses
            the same counts for L3, L2, L1.
        num_refinement_blocks: blocks of each refinement stage (the one before encoder L1 at
            ``dim`` channels and the final one at ``2 * dim``); paper 2, authors' options 4.
        heads: attention heads per level (the refinement stages and decoder L1 use ``heads[0]``).
        ffn_expansion_factor: hidden channels of the feed-forward network = ``int(n * factor)``.
        attention: "dual" (dense + top-k, the paper), "dense" (dense only) or "sparse" (top-k only).
        ffn: "sefn" (the paper), "gdfn" (Restormer's gated-dconv FFN) or "sefn-no-sa"
            (SEFN without its spatial-attention gate).
        topk_ratio: (num, den): the sparse branch keeps ``C * num // den`` of C entries per row.
        bn_momentum: momentum of the spatial-attention gate's BatchNorm (authors: 0.01).
        layernorm_eps: epsilon of the per-pixel LayerNorm (Restormer: 1e-5).
    """

    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    attention: str = "dual"
    ffn: str = "sefn"
    topk_ratio: tuple[int, int] = (7, 10)
    bn_momentum: float = 0.01
    layernorm_eps: float = 1e-5

    def __post_init__(self) -> None:
        # Normalise sequences (JSON lists) to tuples so configs compare and hash cleanly.
        for name in ("num_blocks", "heads", "topk_ratio"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        def _int(name: str, value: Any, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"DDSAConfig.{name} must be an int >= {low}, got {value!r}")

        _int("dim", self.dim, 2)
        if self.dim % 2:
            raise ValueError(f"DDSAConfig.dim must be even (down-sampling halves it), got {self.dim}")
        for name in ("num_blocks", "heads"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != LEVELS:
                raise ValueError(f"DDSAConfig.{name} must have {LEVELS} entries, got {value!r}")
        for i, n in enumerate(self.num_blocks):
            _int(f"num_blocks[{i}]", n, 1)
        _int("num_refinement_blocks", self.num_refinement_blocks, 0)
        for i, h in enumerate(self.heads):
            _int(f"heads[{i}]", h, 1)
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"DDSAConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"DDSAConfig.ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        if not (isinstance(self.ffn_expansion_factor, (int, float)) and self.ffn_expansion_factor > 0):
            raise ValueError(f"DDSAConfig.ffn_expansion_factor must be > 0, got {self.ffn_expansion_factor!r}")
        if (
            not isinstance(self.topk_ratio, tuple) or len(self.topk_ratio) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.topk_ratio)
            or not 0 < self.topk_ratio[0] <= self.topk_ratio[1]
        ):
            raise ValueError(f"DDSAConfig.topk_ratio must be (num, den) ints with 0 < num <= den, got {self.topk_ratio!r}")
        if not 0.0 <= float(self.bn_momentum) <= 1.0:
            raise ValueError(f"DDSAConfig.bn_momentum must be in [0, 1], got {self.bn_momentum!r}")
        if not float(self.layernorm_eps) > 0:
            raise ValueError(f"DDSAConfig.layernorm_eps must be > 0, got {self.layernorm_eps!r}")
        for channels, heads, where in self.stage_specs():
            if channels % heads:
                raise ValueError(f"{where}: {channels} channels are not divisible by {heads} heads")
            if int(channels * self.ffn_expansion_factor) < 1:
                raise ValueError(f"{where}: ffn_expansion_factor {self.ffn_expansion_factor} gives no hidden channels")
            if self.attention != "dense" and self.keep_count(channels // heads) < 1:
                raise ValueError(
                    f"{where}: {channels // heads} channels per head keep no entry in the top-k branch "
                    f"(topk_ratio {self.topk_ratio}); use more channels per head or attention='dense'"
                )

    # -- derived quantities -------------------------------------------------------------
    def level_dim(self, level: int) -> int:
        """Channels of encoder level ``level`` (0-based; 3 = latent)."""
        return self.dim * 2**level

    def keep_count(self, channels_per_head: int) -> int:
        """Entries kept per row by the top-k branch (exact integer arithmetic)."""
        num, den = self.topk_ratio
        return channels_per_head * num // den

    def topk(self, channels_per_head: int) -> tuple[Optional[int], ...]:
        """The op's per-branch keep-counts (None = dense) for this config's attention kind."""
        k = self.keep_count(channels_per_head)
        return {"dual": (None, k), "dense": (None,), "sparse": (k,)}[self.attention]

    def stage_specs(self) -> list[tuple[int, int, str]]:
        """(channels, heads, name) of every stage of DATB blocks, for validation and docs."""
        d, h = self.dim, self.heads
        return [
            (d, h[0], "refinement_in"), (d, h[0], "encoder1"), (2 * d, h[1], "encoder2"),
            (4 * d, h[2], "encoder3"), (8 * d, h[3], "latent"), (4 * d, h[2], "decoder3"),
            (2 * d, h[1], "decoder2"), (2 * d, h[0], "decoder1"), (2 * d, h[0], "refinement_out"),
        ]

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DDSAConfig":
        """Build from a dict (e.g. parsed JSON); unknown keys are an error, missing ones default."""
        if not isinstance(data, dict):
            raise ValueError(f"a DDSAConfig needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DDSAConfig field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "DDSAConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"DDSAConfig JSON is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "DDSAConfig":
        """A copy with some fields changed (validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown DDSAConfig field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Preset:
    config: DDSAConfig
    description: str
    extra: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "ddsa": Preset(
        DDSAConfig(num_refinement_blocks=2),
        "the paper's network: levels (48,96,192,384) ch, blocks (4,6,6,8), 2 refinement blocks",
    ),
    "ddsa-official": Preset(
        DDSAConfig(num_refinement_blocks=4),
        "the authors' released option file: as 'ddsa' with 4 refinement blocks (their checkpoints)",
    ),
    "ddsa-small": Preset(
        DDSAConfig(dim=16, num_blocks=(1, 2, 2, 3), num_refinement_blocks=1, heads=(1, 2, 4, 8)),
        "fast CPU-trainable model: dim 16, blocks (1,2,2,3), 1 refinement block (shipped default)",
    ),
    "tiny": Preset(
        DDSAConfig(dim=4, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2),
                   ffn_expansion_factor=1.66),
        "dim 4, one block per stage: ~50k parameters, milliseconds per image; for tests",
    ),
}


def get_preset_config(name: str, **overrides: Any) -> DDSAConfig:
    """The config of preset ``name`` with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name].config.replace(**overrides) if overrides else PRESETS[name].config
