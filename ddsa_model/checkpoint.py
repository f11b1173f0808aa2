"""The project's own checkpoints: safetensors weights with the config as JSON metadata.

A file holds every tensor of ``model.state_dict()`` (parameters and BatchNorm buffers) and the
metadata keys ``format`` ("ddsa-model"), ``format_version`` and ``config`` (DDSAConfig JSON),
plus any caller-supplied string metadata. Loading never unpickles anything.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .config import DDSAConfig
from .network import DDSANet

FORMAT = "ddsa-model"
FORMAT_VERSION = "1"
_RESERVED = ("format", "format_version", "config")

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


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``; one ValueError lists every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{n} (file {tuple(state[n].shape)}, model {tuple(expected[n].shape)})"
        for n in set(state) & set(expected) if tuple(state[n].shape) != tuple(expected[n].shape)
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if names:
            problems.append(f"{label} ({len(names)}): " + ", ".join(names))
    if problems:
        raise ValueError(f"{source} does not match the model:\n  " + "\n  ".join(problems))
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
           "load_state_dict_strict"]
