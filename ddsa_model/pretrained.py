"""The shipped models and loading of user weights for the CLIs.

Shipped weights live inside the package (``ddsa_model/weights/*.safetensors``, listed in
:data:`SHIPPED_WEIGHTS` by name) and are found with :mod:`importlib.resources`, so they work from a
wheel, an editable install or a source checkout. ``--weights NAME`` in the CLIs (and
``load_weights(NAME)``) picks one by name; no ``--weights`` means :data:`DEFAULT_NAME`.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Optional

import torch

from .checkpoint import TRAIN_CHECKPOINT_FORMAT, extract_state_dict, load_model, load_state_dict_strict, load_torch_file
from .config import DDSAConfig
from .convert import load_official_checkpoint
from .network import DDSANet, build_model

__all__ = ["SHIPPED_WEIGHTS", "DEFAULT_NAME", "DEFAULT_WEIGHTS", "default_weights_path", "shipped_weights_path",
           "load_default_model", "load_weights"]

# name -> file in ddsa_model/weights (model cards: ddsa_model/weights/README.md)
SHIPPED_WEIGHTS = {
    "ddsa-small-allrain": "ddsa_small_allrain.safetensors",   # light, heavy and real rain (the default)
    "ddsa-small-rainl": "ddsa_small_rainl.safetensors",       # light rain only (RainTrainL); best on Rain100L
}
DEFAULT_NAME = "ddsa-small-allrain"
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS[DEFAULT_NAME]


def shipped_weights_path(name: str) -> str:
    """Filesystem path of the shipped weights called ``name`` (a key of :data:`SHIPPED_WEIGHTS`)."""
    if name not in SHIPPED_WEIGHTS:
        raise ValueError(f"no shipped weights called {name!r}; shipped: {', '.join(SHIPPED_WEIGHTS)}")
    return _resource_path(SHIPPED_WEIGHTS[name], f"shipped weights {name!r}")


def default_weights_path() -> str:
    """Filesystem path of the shipped default weights; FileNotFoundError when not installed."""
    return _resource_path(DEFAULT_WEIGHTS, "default weights")


def _resource_path(filename: str, what: str) -> str:
    try:
        res = resources.files("ddsa_model").joinpath("weights", filename)
    except (ModuleNotFoundError, TypeError) as e:  # pragma: no cover - broken installs only
        raise FileNotFoundError(f"cannot locate the ddsa_model package resources ({e})") from None
    path = os.fspath(res) if isinstance(res, os.PathLike) else None
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"the {what} ddsa_model/weights/{filename} are not installed with this package "
            f"(looked at {res}); pass --weights PATH to a checkpoint written by ddsa-train / save_model")
    return path


def load_default_model(attention_backend: str = "auto", map_location: str = "cpu") -> torch.nn.Module:
    """The shipped default deraining model in eval mode (see :func:`default_weights_path`)."""
    return load_weights(None, attention_backend=attention_backend, map_location=map_location)


def _load_torch_file(path: str, attention_backend: str) -> torch.nn.Module:
    """A ddsa-train checkpoint (``.pt``) or an authors' BasicSR checkpoint (``.pth``)."""
    obj = load_torch_file(path)
    if isinstance(obj, dict) and obj.get("format") == TRAIN_CHECKPOINT_FORMAT:
        model = DDSANet(DDSAConfig.from_dict(obj["model_config"]), attention_backend=attention_backend)
        load_state_dict_strict(model, obj["model"], f"training checkpoint {path}")
        return model
    return load_official_checkpoint(obj, attention_backend=attention_backend)


def _load_bare_state_dict(path: str, preset: str, attention_backend: str) -> torch.nn.Module:
    """A state dict of this package's network for ``preset`` (safetensors or torch file, possibly wrapped)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj = load_file(path, device="cpu")
    else:
        obj = load_torch_file(path)
    model = build_model(preset, attention_backend=attention_backend)
    load_state_dict_strict(model, extract_state_dict(obj), f"state dict {path}")
    return model


def load_weights(path: Optional[str] = None, attention_backend: str = "auto", map_location: str = "cpu",
                 preset: Optional[str] = None) -> torch.nn.Module:
    """Load a model for inference, in eval mode, from any of the checkpoint kinds the package knows.

    ``path`` None: the shipped default model; a name in :data:`SHIPPED_WEIGHTS` (that is not an
    existing file): those shipped weights. ``*.safetensors``: written by ``save_model`` /
    ``ddsa-train`` (``model.safetensors``; it records its own preset). Other files are read with
    ``torch.load(weights_only=True)``: a ``ddsa-train`` checkpoint (``iter_*.pt``) or an authors'
    BasicSR checkpoint (``{"params": ...}``, configuration detected from the tensors).
    ``preset``: ``path`` is a bare state dict of this package's network for that preset.
    Raises FileNotFoundError / ValueError naming the file when it is missing or unusable.
    """
    if path is None:
        path = default_weights_path()
    elif isinstance(path, str) and path in SHIPPED_WEIGHTS and not os.path.exists(path):
        path = shipped_weights_path(path)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if preset is not None:
            model = _load_bare_state_dict(path, preset, attention_backend)
        elif path.endswith(".safetensors"):
            model = load_model(path, attention_backend=attention_backend, map_location="cpu")
        else:
            model = _load_torch_file(path, attention_backend)
    except FileNotFoundError:
        raise
    except Exception as e:  # corrupt file, wrong kind, missing keys, ... -> one clear line
        msg = str(e)
        raise ValueError(msg if path in msg else f"could not load weights from {path}: {msg}") from None
    return model.to(map_location).eval()
