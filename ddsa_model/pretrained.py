"""The shipped default model and loading of user weights for the CLIs.

The default weights live inside the package (``ddsa_model/weights/ddsa_small_rainl.safetensors``)
and are found with :mod:`importlib.resources`, so they work from a wheel, an editable install or a
source checkout.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Optional

import torch

__all__ = ["DEFAULT_WEIGHTS", "default_weights_path", "load_default_model", "load_weights"]

DEFAULT_WEIGHTS = "ddsa_small_rainl.safetensors"


def default_weights_path() -> str:
    """Filesystem path of the shipped ``ddsa-small`` weights; FileNotFoundError when not installed."""
    try:
        res = resources.files("ddsa_model").joinpath("weights", DEFAULT_WEIGHTS)
    except (ModuleNotFoundError, TypeError) as e:  # pragma: no cover - broken installs only
        raise FileNotFoundError(f"cannot locate the ddsa_model package resources ({e})") from None
    path = os.fspath(res) if isinstance(res, os.PathLike) else None
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"the default weights ddsa_model/weights/{DEFAULT_WEIGHTS} are not installed with this package "
            f"(looked at {res}); pass --weights PATH to a checkpoint written by ddsa-train / save_model")
    return path


def load_default_model(attention_backend: str = "auto", map_location: str = "cpu") -> torch.nn.Module:
    """The shipped default deraining model in eval mode (see :func:`default_weights_path`)."""
    return load_weights(None, attention_backend=attention_backend, map_location=map_location)


def _read_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path, device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params", "state_dict", "model"):  # BasicSR / Lightning / our trainer
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: does not contain a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_weights(path: Optional[str], preset: Optional[str] = None, attention_backend: str = "auto",
                 map_location: str = "cpu") -> torch.nn.Module:
    """Load a model for inference, in eval mode.

    ``path`` None: the shipped default model. ``preset`` None: ``path`` is a checkpoint written by
    ``save_model`` (it records its own preset). With ``preset``: ``path`` is a bare state dict
    (safetensors, or a torch file holding ``params`` / ``state_dict`` / ``model``) for that preset.
    Raises FileNotFoundError / ValueError with the file's name on a missing or unusable file.
    """
    from . import build_model, load_model

    if path is None:
        path = default_weights_path()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if preset is None:
            model = load_model(path, attention_backend=attention_backend, map_location=map_location)
        else:
            model = build_model(preset, attention_backend=attention_backend)
            model.load_state_dict(_read_state_dict(path), strict=True)
            model = model.to(map_location)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # corrupt file, wrong preset, ... -> one clear line
        raise ValueError(f"could not load weights from {path}: {type(e).__name__}: {e}") from None
    return model.eval()
