"""Load the authors' released DDSA checkpoints (BasicSR ``.pth``) into :class:`DDSANet`.

The authors' network is Restormer's code with DDSA's blocks; its tensor names differ from this
package's. The mapping (authors' → ours), per DATB block ``<stage>.<i>.``:

    norm{1,2}.body.{weight,bias}             → norm{1,2}.{weight,bias}
    attn.temperature (heads,1,1)             → attn.core.temperature
    attn.attn [1], attn.attn1 [1]            → attn.core.weights [2] = (dense w₀, top-k w₁)
    attn.{qkv,qkv_dwconv,project_out}.weight → same names
    ffn.conv1x1_in / ffn.dwconv3x3           → ffn.conv_in / ffn.dwconv
    ffn.SAlayer.conv_sa.0.weight             → ffn.gate.conv.weight
    ffn.SAlayer.conv_sa.1.* (BatchNorm)      → ffn.gate.bn.*

and the stages ``patch_embed.proj → patch_embed``, ``refinement0 → refinement_in``,
``encoder_level{i} → encoder{i}``, ``down{a}_{b}.body.0 → down{a}{b}.conv``,
``up{a}_{b}.body.0 → up{a}{b}.conv``, ``reduce_chan_level{i} → reduce{i}``,
``decoder_level{i} → decoder{i}``, ``refinement → refinement_out``, ``output → output``.

``attn.attn`` is taken as the dense branch's weight and ``attn.attn1`` as the top-k branch's
(the op's branch weights are ordered w₀ dense, w₁ top-k; the authors initialise both to 0.2).

Which weights: a BasicSR checkpoint may hold ``params`` and ``params_ema`` (the exponential
moving average, which BasicSR evaluates when EMA is on). With ``param_key="auto"`` the EMA
weights are used when present, else ``params``; pass ``param_key="params"`` to force the raw
weights. A bare state dict is accepted too.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Optional, Union

import torch

from .checkpoint import check_state_dict, extract_state_dict, load_state_dict_strict, load_torch_file
from .config import DDSAConfig
from .network import DDSANet

_STAGES = {  # authors' stage prefix -> ours
    "refinement0": "refinement_in",
    "encoder_level1": "encoder1",
    "encoder_level2": "encoder2",
    "encoder_level3": "encoder3",
    "latent": "latent",
    "decoder_level3": "decoder3",
    "decoder_level2": "decoder2",
    "decoder_level1": "decoder1",
    "refinement": "refinement_out",
}
_PLAIN = {  # whole-name renames outside the DATB stages
    "patch_embed.proj.weight": "patch_embed.weight",
    "down1_2.body.0.weight": "down12.conv.weight",
    "down2_3.body.0.weight": "down23.conv.weight",
    "down3_4.body.0.weight": "down34.conv.weight",
    "up4_3.body.0.weight": "up43.conv.weight",
    "up3_2.body.0.weight": "up32.conv.weight",
    "up2_1.body.0.weight": "up21.conv.weight",
    "reduce_chan_level3.weight": "reduce3.weight",
    "reduce_chan_level2.weight": "reduce2.weight",
    "output.weight": "output.weight",
}
_BLOCK = {  # within a DATB block (branch weights handled separately)
    "norm1.body.weight": "norm1.weight",
    "norm1.body.bias": "norm1.bias",
    "norm2.body.weight": "norm2.weight",
    "norm2.body.bias": "norm2.bias",
    "attn.temperature": "attn.core.temperature",
    "attn.qkv.weight": "attn.qkv.weight",
    "attn.qkv_dwconv.weight": "attn.qkv_dwconv.weight",
    "attn.project_out.weight": "attn.project_out.weight",
    "ffn.conv1x1_in.weight": "ffn.conv_in.weight",
    "ffn.dwconv3x3.weight": "ffn.dwconv.weight",
    "ffn.project_out.weight": "ffn.project_out.weight",
    "ffn.SAlayer.conv_sa.0.weight": "ffn.gate.conv.weight",
    **{f"ffn.SAlayer.conv_sa.1.{b}": f"ffn.gate.bn.{b}"
       for b in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")},
}
_BRANCH_WEIGHTS = ("attn.attn", "attn.attn1")  # (dense w₀, top-k w₁)


class _Renamer:
    """Renames one network's tensor names to the other's: whole names outside the DATB stages, and the
    ``<stage>.<i>.`` prefix of a block's tensors (the rest of the name is left to the caller)."""

    def __init__(self, plain: Mapping[str, str], stages: Mapping[str, str]) -> None:
        self.plain, self.stages = dict(plain), dict(stages)
        self._block = re.compile(r"^(" + "|".join(sorted(stages, key=len, reverse=True)) + r")\.(\d+)\.(.+)$")

    def inverse(self) -> _Renamer:
        return _Renamer({v: k for k, v in self.plain.items()}, {v: k for k, v in self.stages.items()})

    def split(self, name: str) -> Optional[tuple[str, Optional[str]]]:
        """(the renamed name, None) for a whole-name rename; (the renamed ``<stage>.<i>.`` prefix, the rest
        of the name) for a block's tensor; None for a name of neither kind."""
        if name in self.plain:
            return self.plain[name], None
        m = self._block.match(name)
        if m is None:
            return None
        stage, index, rest = m.groups()
        return f"{self.stages[stage]}.{index}.", rest


_TO_DDSA = _Renamer(_PLAIN, _STAGES)
_TO_OFFICIAL = _TO_DDSA.inverse()
_OPTIONAL = ("num_batches_tracked",)  # old BatchNorm state dicts lack it; it does not affect outputs

PathOrStateDict = Union[str, os.PathLike, Mapping[str, Any]]


# -- name mapping ------------------------------------------------------------------------------
def official_to_ddsa(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an authors' state dict to this package's names (merging the branch weights).

    Raises ValueError listing every tensor name it does not know.
    """
    out: dict[str, torch.Tensor] = {}
    branch: dict[str, dict[int, torch.Tensor]] = {}
    unknown = []
    for name, tensor in state.items():
        renamed, rest = _TO_DDSA.split(name) or (None, None)
        if renamed is None:
            unknown.append(name)
        elif rest is None:
            out[renamed] = tensor
        elif rest in _BLOCK:
            out[renamed + _BLOCK[rest]] = tensor
        elif rest in _BRANCH_WEIGHTS:
            branch.setdefault(renamed + "attn.core.weights", {})[_BRANCH_WEIGHTS.index(rest)] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown tensor name(s) in the authors' checkpoint ({len(unknown)}): " + ", ".join(sorted(unknown)))
    missing = []
    for target, parts in branch.items():
        if len(parts) != len(_BRANCH_WEIGHTS):
            have = {_BRANCH_WEIGHTS[i] for i in parts}
            missing += [target.replace("attn.core.weights", w) for w in _BRANCH_WEIGHTS if w not in have]
            continue
        out[target] = torch.cat([parts[i].reshape(-1) for i in range(len(_BRANCH_WEIGHTS))])
    if missing:
        raise ValueError(f"missing tensor(s) in the authors' checkpoint ({len(missing)}): " + ", ".join(sorted(missing)))
    return out


def ddsa_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`official_to_ddsa`: this package's names → the authors' names."""
    block = {v: k for k, v in _BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        renamed, rest = _TO_OFFICIAL.split(name) or (None, None)
        if renamed is None:
            raise ValueError(f"{name} has no counterpart in the authors' network")
        if rest is None:
            out[renamed] = tensor
        elif rest == "attn.core.weights":
            if tensor.numel() != len(_BRANCH_WEIGHTS):
                raise ValueError(f"{name}: the authors' network has exactly dense + top-k branches, got {tensor.numel()}")
            for i, w in enumerate(_BRANCH_WEIGHTS):
                out[renamed + w] = tensor[i : i + 1].clone()
        elif rest in block:
            out[renamed + block[rest]] = tensor
        else:
            raise ValueError(f"{name} has no counterpart in the authors' network")
    return out


# -- configuration detection -------------------------------------------------------------------
def _count(state: Mapping[str, Any], stage: str) -> int:
    pattern = re.compile(rf"^{re.escape(stage)}\.(\d+)\.")
    indices = {int(m.group(1)) for name in state if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


def _shape(state: Mapping[str, Any], name: str) -> tuple[int, ...]:
    if name not in state:
        raise ValueError(f"cannot detect the network configuration: the checkpoint has no tensor {name!r}")
    return tuple(state[name].shape)


def detect_config(state: Mapping[str, torch.Tensor]) -> DDSAConfig:
    """The DDSAConfig of an authors' state dict, read from its tensor names and shapes."""
    dim = _shape(state, "patch_embed.proj.weight")[0]
    stages = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    num_blocks = tuple(_count(state, s) for s in stages)
    if 0 in num_blocks:
        empty = [s for s, n in zip(stages, num_blocks) if n == 0]
        raise ValueError(f"cannot detect the network configuration: no blocks for {', '.join(empty)}")
    heads = tuple(_shape(state, f"{s}.0.attn.temperature")[0] for s in stages)
    refine_in, refine_out = _count(state, "refinement0"), _count(state, "refinement")
    if refine_in != refine_out:
        raise ValueError(f"the checkpoint has {refine_in} blocks in refinement0 but {refine_out} in refinement; "
                         "DDSANet uses the same depth for both")
    hidden = _shape(state, "encoder_level1.0.ffn.dwconv3x3.weight")[0]
    widths = [(dim * 2**i, _shape(state, f"{s}.0.ffn.dwconv3x3.weight")[0]) for i, s in enumerate(stages)]
    factor = None
    for candidate in (2.66, hidden / dim, (hidden + 0.5) / dim):
        if all(int(c * candidate) == h for c, h in widths):
            factor = candidate
            break
    if factor is None:
        raise ValueError(f"cannot find an ffn_expansion_factor giving the checkpoint's hidden widths {widths}")
    has_gate = "encoder_level1.0.ffn.SAlayer.conv_sa.0.weight" in state
    return DDSAConfig(
        dim=dim, num_blocks=num_blocks, num_refinement_blocks=refine_in, heads=heads,
        ffn_expansion_factor=factor, attention="dual", ffn="sefn" if has_gate else "sefn-no-sa",
    )


# -- loading -----------------------------------------------------------------------------------
def _read(path: Union[str, os.PathLike]) -> Any:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"authors' checkpoint not found: {path}")
    return load_torch_file(path)


def load_official_checkpoint(
    path_or_state_dict: PathOrStateDict,
    attention_backend: str = "auto",
    param_key: str = "auto",
) -> DDSANet:
    """A DDSANet carrying the weights of an authors' checkpoint, in eval mode.

    Args:
        path_or_state_dict: a ``.pth`` file (read with ``torch.load(weights_only=True)``), a
            BasicSR dict ``{"params": sd, "params_ema": sd}`` or a bare state dict.
        attention_backend: backend of the attention op ("auto", "reference", "eager", ...).
        param_key: "auto" (``params_ema`` if present, else ``params``, else a bare state dict),
            "params" or "params_ema".

    The refinement depth, widths, heads and feed-forward width are detected from the tensors.
    Missing, unknown or mis-shaped tensors raise one ValueError that lists them all.
    """
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        obj = _read(obj)
    state = extract_state_dict(obj, param_key)
    config = detect_config(state)
    model = DDSANet(config, attention_backend=attention_backend)
    expected = {n: t.shape for n, t in ddsa_to_official(model.state_dict()).items()}
    check_state_dict(state, expected, "the authors' checkpoint (configuration detected from its tensors)",
                     optional=_OPTIONAL)
    converted = official_to_ddsa(state)
    own = model.state_dict()
    for name in own:  # fill optional buffers the checkpoint lacks from the fresh model
        if name not in converted and name.endswith(_OPTIONAL):
            converted[name] = own[name]
    load_state_dict_strict(model, converted, "the converted authors' checkpoint")
    return model.eval()


# -- command line: python -m ddsa_model.convert AUTHORS.pth OUT.safetensors ------------------------
def main(argv: "list[str] | None" = None) -> int:
    """Convert an authors' checkpoint to this package's safetensors format; prints the detected config."""
    import argparse
    import sys

    from .checkpoint import save_model

    parser = argparse.ArgumentParser(
        prog="python -m ddsa_model.convert",
        description="Convert the authors' DDSA checkpoint (BasicSR .pth) to a ddsa_model .safetensors file.",
    )
    parser.add_argument("source", help="authors' checkpoint (.pth, {'params': ...} / {'params_ema': ...} / state dict)")
    parser.add_argument("output", help="output .safetensors path (written atomically)")
    parser.add_argument("--param-key", default="auto", choices=("auto", "params", "params_ema"),
                        help="which weights to take (auto: params_ema when present, else params)")
    args = parser.parse_args(argv)
    try:
        model = load_official_checkpoint(args.source, attention_backend="reference", param_key=args.param_key)
        save_model(model, args.output, metadata={"converted_from": os.path.basename(args.source),
                                                 "param_key": args.param_key})
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {model.num_parameters():,} parameters, config {model.config.to_json()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
