"""Training checkpoints ``<out_dir>/checkpoints/iter_XXXXXXX.pt``: everything exact resume needs.

A checkpoint is a ``torch.save`` dict (read back with ``weights_only=True``): ``format``, the
``iteration``, the ``model`` / ``optimizer`` / ``scheduler`` / ``scaler`` state dicts, the global
RNG states, the sampler position, the resolved run config and the weights' SHA-256. Files are
written atomically (temp file + rename).
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddsa_model.atomic import atomic_path
from ddsa_model.checkpoint import TRAIN_CHECKPOINT_FORMAT, load_torch_file

from .config import ConfigError, RunConfig
from .schedule import ConstantCosineLR

__all__ = ["TrainState", "checkpoint_path", "list_checkpoints", "resolve_resume",
           "load_checkpoint", "save_checkpoint", "restore", "prune_checkpoints"]

CHECKPOINT_RE = re.compile(r"^iter_(\d+)\.pt$")


@dataclass
class TrainState:
    """Everything a checkpoint captures besides the RNG states."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ConstantCosineLR
    scaler: torch.amp.GradScaler
    iteration: int = 0


def _rng_state() -> dict[str, Any]:
    """Global RNG states in types that ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(out_dir: str | os.PathLike, iteration: int) -> Path:
    """``out_dir/checkpoints/iter_XXXXXXX.pt`` for ``iteration``."""
    return Path(out_dir) / "checkpoints" / f"iter_{iteration:07d}.pt"


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of the checkpoints in ``out_dir/checkpoints``, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def resolve_resume(resume: str | None, out_dir: str) -> Path | None:
    """``None`` → None; ``"auto"`` → latest checkpoint in out_dir or None; a path → that path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(out_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise ConfigError(f"--resume {resume}: no checkpoints (checkpoints/iter_*.pt) in that folder")
        return found[-1][1]
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: no such checkpoint file")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``; ConfigError when unreadable or not a training checkpoint."""
    try:
        ckpt = load_torch_file(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAIN_CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a ddsa-train checkpoint (for weights-only files use ddsa-eval/derain)")
    return ckpt


def save_checkpoint(state: TrainState, path: Path, *, config: dict[str, Any], sampler: dict[str, Any],
                    weights_sha256: str) -> None:
    """Write ``state`` (plus the RNG states, ``sampler`` position and run ``config``) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({
            "format": TRAIN_CHECKPOINT_FORMAT, "iteration": state.iteration, "model": state.model.state_dict(),
            "model_config": state.model.config.to_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict(), "rng": _rng_state(),
            "sampler": sampler, "config": config, "weights_sha256": weights_sha256,
        }, tmp)


def prune_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep`` 0: keep all)."""
    if keep:
        for _, old in list_checkpoints(out_dir)[:-keep]:
            old.unlink(missing_ok=True)


def restore(state: TrainState, path: Path, cfg: RunConfig) -> None:
    """Load the checkpoint at ``path`` into ``state`` and the global RNGs, after checking that it
    holds the configured model and an iteration within ``cfg.train.iterations``."""
    ckpt = load_checkpoint(path)
    stored, current = ckpt["model_config"], state.model.config.to_dict()
    if stored != current:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise ConfigError(f"checkpoint {path} holds a different model (fields differ: {', '.join(diff)}); "
                          "use the same model.preset / model.overrides or a new log.out_dir")
    if int(ckpt["iteration"]) > cfg.train.iterations:
        raise ConfigError(f"checkpoint {path} is at iteration {ckpt['iteration']}, beyond train.iterations="
                          f"{cfg.train.iterations}")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    # the schedule follows the current config (e.g. more iterations); an unchanged config resumes exactly
    state.scheduler.total_steps = cfg.train.iterations
    state.scheduler.constant_steps = round(cfg.optim.constant_fraction * cfg.train.iterations)
    state.scheduler.eta_min = cfg.optim.eta_min
    state.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    state.iteration = int(ckpt["iteration"])
