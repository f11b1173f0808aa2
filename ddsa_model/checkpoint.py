"""The project's own checkpoints: safetensors weights with the config as JSON metadata.

A file holds every tensor of ``model.state_dict()`` (parameters and BatchNorm buffers) and the
metadata keys ``format`` ("ddsa-model"), ``format_version`` and ``config`` (DDSAConfig JSON),
plus any caller-supplied string metadata. Loading never unpickles anything.

Also here, for every loader of the package: the format tag of the trainer's ``iter_*.pt``
checkpoints, the one unwrapper of state dicts inside checkpoint objects and the one strict
name/shape check with its report.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .config import DDSAConfig
from .network import DDSANet

FORMAT = "ddsa-model"
FORMAT_VERSION = "1"
_RESERVED = ("format", "format_version", "config")
# The "format" entry of the trainer's checkpoints (torch.save dicts, checkpoints/iter_*.pt); they
# hold the network as "model" (state dict) and "model_config" (DDSAConfig dict).
TRAIN_CHECKPOINT_FORMAT = "ddsa-train-checkpoint-v1"
# Entries that wrap the network's state dict in checkpoint objects, in order of preference:
# BasicSR's EMA and raw weights, then the common PyTorch Lightning / plain-script wrappers.
STATE_DICT_KEYS = ("params_ema", "params", "state_dict", "model")

PathLike = Union[str, os.PathLike]


def save_model(model: DDSANet, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``model`` to ``path`` (safetensors) atomically: a temp file in the same folder, then rename.

    ``metadata``: extra str → str entries stored in the header (e.g. iteration, data set).
    """
    if not isinstance(model, DDSANet):
        raise TypeError(f"save_model needs a DDSANet, got {type(model).__name__}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    for key, value in (metadata or {}).items():
        if key in _RESERVED:
            raise ValueError(f"metadata key {key!r} is reserved")
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map str to str, got {key!r}: {type(value).__name__}")
        meta[key] = value
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def _read_metadata(path: str) -> dict[str, str]:
    """The safetensors header metadata of ``path``; FileNotFoundError / ValueError when unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable safetensors checkpoint: {exc}") from None


def _config_from_metadata(path: str, meta: Mapping[str, str]) -> DDSAConfig:
    """Check that ``meta`` is a ddsa_model checkpoint header of a supported version; its config."""
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(
            f"{path} is a safetensors file but not a ddsa_model checkpoint (metadata format="
            f"{meta.get('format')!r}); for the authors' .pth checkpoints use load_official_checkpoint"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta.get('format_version')!r} is not supported "
                         f"(this code reads version {FORMAT_VERSION})")
    try:
        return DDSAConfig.from_json(meta["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: the stored config is invalid: {exc}") from None


def read_checkpoint(path: PathLike) -> tuple[DDSAConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, CPU tensors, metadata) of a checkpoint written by :func:`save_model`."""
    path = os.fspath(path)
    meta = _read_metadata(path)
    config = _config_from_metadata(path, meta)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable safetensors checkpoint: {exc}") from None
    extra = {k: v for k, v in meta.items() if k not in _RESERVED}
    return config, tensors, extra


def load_torch_file(path: PathLike) -> Any:
    """``torch.load(path)`` on the CPU with ``weights_only=True`` (tensors and plain containers, no
    arbitrary unpickling); ValueError naming the file when it cannot be read that way."""
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip files, non-tensor objects, ...
        raise ValueError(f"cannot read checkpoint {os.fspath(path)} with torch.load(weights_only=True): "
                         f"{type(exc).__name__}: {exc}") from None


def extract_state_dict(obj: Any, param_key: str = "auto") -> dict[str, torch.Tensor]:
    """The network state dict inside a loaded checkpoint object.

    ``obj``: a bare state dict, or a dict wrapping one under a :data:`STATE_DICT_KEYS` entry
    (BasicSR's ``{"params": sd, "params_ema": sd}``, ``{"state_dict": sd}``, ``{"model": sd}``).
    ``param_key``: "auto" (the first of those entries holding a dict, else ``obj`` itself) or the
    entry to take. DataParallel / DDP ``module.`` prefixes are removed. ValueError when there is
    no state dict of tensors.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    if param_key == "auto":
        key = next((k for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
    elif param_key in obj:
        key = param_key
    else:
        raise ValueError(f"the checkpoint has no {param_key!r} entry (it has: {', '.join(map(str, obj))})")
    state = obj[key] if key is not None else obj
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint entry {key!r} is not a state dict but {type(state).__name__}")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"the checkpoint's state dict has non-tensor entries: {', '.join(bad[:10])}"
                         f"{' ...' if len(bad) > 10 else ''}")
    # DataParallel / DistributedDataParallel wrappers prefix every name with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]], source: str,
                     optional: Sequence[str] = ()) -> None:
    """Raise one ValueError listing every missing, unexpected or mis-shaped tensor of ``state``.

    ``expected``: tensor name → shape; names ending in one of ``optional`` may be missing.
    ``source`` names the state dict in the message ("checkpoint m.safetensors", ...).
    """
    missing = sorted(n for n in set(expected) - set(state) if not (optional and n.endswith(tuple(optional))))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{n} (checkpoint {tuple(state[n].shape)}, model {tuple(expected[n])})"
        for n in set(state) & set(expected) if tuple(state[n].shape) != tuple(expected[n])
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if names:
            problems.append(f"{label} ({len(names)}): " + ", ".join(names))
    if problems:
        raise ValueError(f"{source} does not match the model:\n  " + "\n  ".join(problems))


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` after :func:`check_state_dict` (one ValueError lists every problem)."""
    check_state_dict(state, {n: t.shape for n, t in model.state_dict().items()}, source)
    with torch.no_grad():
        model.load_state_dict(dict(state), strict=True)


def load_model(path: PathLike, attention_backend: str = "auto", map_location: Union[str, torch.device] = "cpu") -> DDSANet:
    """Build the network stored in ``path`` and load its weights (no pickle); returned in eval mode."""
    config, tensors, _ = read_checkpoint(path)
    model = DDSANet(config, attention_backend=attention_backend)
    load_state_dict_strict(model, tensors, f"checkpoint {os.fspath(path)}")
    return model.to(map_location).eval()


def checkpoint_metadata(path: PathLike) -> dict[str, str]:
    """The caller-supplied metadata stored by :func:`save_model` (without reading the tensors)."""
    meta = _read_metadata(os.fspath(path))
    return {k: v for k, v in meta.items() if k not in _RESERVED}


def config_of_checkpoint(path: PathLike) -> DDSAConfig:
    """The DDSAConfig stored in a checkpoint (without reading the tensors)."""
    path = os.fspath(path)
    return _config_from_metadata(path, _read_metadata(path))


__all__ = ["save_model", "load_model", "read_checkpoint", "checkpoint_metadata", "config_of_checkpoint",
           "load_state_dict_strict", "check_state_dict", "extract_state_dict", "load_torch_file", "TRAIN_CHECKPOINT_FORMAT",
           "STATE_DICT_KEYS"]
