"""Training run configuration: YAML file + ``dotted.key=value`` overrides → a validated
:class:`RunConfig`.

Sections and defaults (see ``ddsa_model/configs/example.yaml`` for a commented file)::

    model: {preset, attention_backend, overrides}
    data:  {train, val, crop, progressive, flips, rot90, small_images, cache, num_workers,
            val_max_images, max_train_pairs}
    optim: {lr, betas, weight_decay, eta_min, constant_fraction}
    train: {iterations, batch_size, grad_accum, seed, amp, grad_clip, device, stop_at, num_threads}
    log:   {out_dir, log_interval, val_interval, ckpt_interval, keep_checkpoints, tensorboard, progress}
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the key and the problem."""


@dataclass
class ModelSection:
    preset: str = "ddsa-small"          # "tiny", "ddsa-small", "ddsa", "ddsa-official"
    attention_backend: str = "auto"
    overrides: dict = field(default_factory=dict)  # DDSAConfig fields, e.g. {attention: dense}
    init_weights: str = ""              # start a fresh run from these weights (fine-tuning); "" = random init


@dataclass
class DataSection:
    train: list = field(default_factory=list)     # one or more <root> folders with input/ + target/
    val: list = field(default_factory=list)       # optional validation folders
    crop: int = 128                                # square training crop, px
    progressive: list = field(default_factory=list)  # [[start_iteration, crop], ...]
    flips: bool = True                             # random horizontal + vertical flips
    rot90: bool = False                            # random 90° rotations
    small_images: str = "pad"                      # "pad" (reflect) or "reject" images < crop
    cache: bool = True                             # decode all images once, keep them in memory
    num_workers: int = 0                           # DataLoader worker processes per rank
    val_max_images: int = 0                        # 0 = all validation pairs
    max_train_pairs: int = 0                       # 0 = all training pairs (debugging aid)
    synthetic: list = field(default_factory=list)  # clean images (folders, files, or <root>s with target/)
                                                   # rendered with new rain for every crop
    synthetic_preset: str = "mixed"                # "light", "heavy" or "mixed"
    synthetic_weight: float = 0.5                  # share of samples drawn from `synthetic` when `train` is set too
    synthetic_holdout: int = 0                     # images of the FIRST synthetic source held out (never drawn),
                                                   # the split of `ddsa-synth FIRST --holdout N --split-seed S`
    synthetic_split_seed: int = 0


@dataclass
class OptimSection:
    lr: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4
    eta_min: float = 1e-6                          # final lr of the cosine phase
    constant_fraction: float = 92.0 / 300.0        # paper: constant for 92K of 300K iterations


@dataclass
class TrainSection:
    iterations: int = 300_000                      # optimizer steps; defines the lr schedule
    batch_size: int = 16                           # per process (rank) and micro-batch
    grad_accum: int = 1                            # micro-batches per optimizer step
    seed: int = 0
    amp: str = "none"                              # "none", "bf16", "fp16" (fp16: CUDA only)
    grad_clip: float = 0.01                        # max global grad norm; 0 = off (Restormer family: 0.01)
    device: str = "auto"                           # "auto", "cpu", "cuda"
    stop_at: int = 0                               # stop (with a checkpoint) at this iteration; 0 = run to the end
    num_threads: int = 0                           # CPU threads per rank for torch; 0 = torch's default


@dataclass
class LogSection:
    out_dir: str = "runs/ddsa"
    log_interval: int = 50
    val_interval: int = 5000                       # 0 = validate only at the end
    ckpt_interval: int = 5000
    keep_checkpoints: int = 3                      # 0 = keep all
    tensorboard: bool = True                       # used when the tensorboard package is installed
    progress: bool = True                          # tqdm bar on rank 0


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTION_CLASSES = {"model": ModelSection, "data": DataSection, "optim": OptimSection,
                    "train": TrainSection, "log": LogSection}


def _unknown(kind: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check/convert ``value`` to the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if isinstance(default, dict):
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    if isinstance(default, list):
        if value is None:
            return []
        if key in ("data.train", "data.val", "data.synthetic") and isinstance(value, (str, os.PathLike)):
            return [str(value)]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{key} must be a list, got {value!r}")
    return value


def _apply(cfg: RunConfig, key: str, value: Any) -> None:
    parts = key.split(".")
    section = parts[0]
    if section not in _SECTION_CLASSES:
        raise _unknown("config section", section, list(_SECTION_CLASSES))
    sec = getattr(cfg, section)
    if len(parts) == 1:
        if not isinstance(value, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys, got {value!r}")
        for k, v in value.items():
            _apply(cfg, f"{section}.{k}", v)
        return
    name = parts[1]
    known = [f.name for f in dataclasses.fields(sec)]
    if name not in known:
        raise _unknown(f"key in section {section!r}:", name, known)
    if len(parts) > 2:
        if section == "model" and name == "overrides":  # model.overrides.dim=32
            sec.overrides = {**sec.overrides, ".".join(parts[2:]): value}
            return
        raise ConfigError(f"{key}: {section}.{name} has no sub-keys")
    setattr(sec, name, _coerce(key, value, getattr(_SECTION_CLASSES[section](), name)))


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.iterations=100"`` → ("train.iterations", 100); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip(), value


def validate(cfg: RunConfig) -> RunConfig:
    """Range checks that need more than a type; raises ConfigError naming the key."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    d, o, t, lg = cfg.data, cfg.optim, cfg.train, cfg.log
    need(bool(d.train) or bool(d.synthetic),
         "data.train (folders holding input/ and target/) or data.synthetic (clean images) is required")
    for key, paths in (("data.train", d.train), ("data.val", d.val), ("data.synthetic", d.synthetic)):
        need(all(isinstance(p, str) and p for p in paths), f"{key} must be folder path(s), got {paths!r}")
    need(d.crop >= 8, f"data.crop must be >= 8 px, got {d.crop}")
    for entry in d.progressive:
        need(isinstance(entry, (list, tuple)) and len(entry) == 2
             and all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
             and entry[0] >= 0 and entry[1] >= 8,
             f"data.progressive entries must be [start_iteration, crop] with crop >= 8, got {entry!r}")
    need(d.small_images in ("pad", "reject"), f"data.small_images must be 'pad' or 'reject', got {d.small_images!r}")
    need(d.synthetic_preset in ("light", "heavy", "mixed"),
         f"data.synthetic_preset must be 'light', 'heavy' or 'mixed', got {d.synthetic_preset!r}")
    need(0 <= d.synthetic_weight <= 1, f"data.synthetic_weight must be in [0, 1], got {d.synthetic_weight}")
    need(d.synthetic_holdout >= 0, f"data.synthetic_holdout must be >= 0, got {d.synthetic_holdout}")
    need(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    need(d.val_max_images >= 0 and d.max_train_pairs >= 0, "data.val_max_images / data.max_train_pairs must be >= 0")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(0 <= o.eta_min <= o.lr, f"optim.eta_min must be in [0, optim.lr], got {o.eta_min}")
    need(len(o.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas),
         f"optim.betas must be two numbers in [0, 1), got {o.betas!r}")
    o.betas = [float(b) for b in o.betas]
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(0 <= o.constant_fraction <= 1, f"optim.constant_fraction must be in [0, 1], got {o.constant_fraction}")
    need(t.iterations >= 1, f"train.iterations must be >= 1, got {t.iterations}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.grad_accum >= 1, f"train.grad_accum must be >= 1, got {t.grad_accum}")
    need(t.amp in ("none", "bf16", "fp16"), f"train.amp must be 'none', 'bf16' or 'fp16', got {t.amp!r}")
    need(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {t.grad_clip}")
    need(t.device in ("auto", "cpu", "cuda"), f"train.device must be 'auto', 'cpu' or 'cuda', got {t.device!r}")
    need(t.num_threads >= 0, f"train.num_threads must be >= 0, got {t.num_threads}")
    need(0 <= t.stop_at <= t.iterations, f"train.stop_at must be in [0, train.iterations], got {t.stop_at}")
    need(bool(lg.out_dir), "log.out_dir is required")
    for key in ("log_interval", "val_interval", "ckpt_interval", "keep_checkpoints"):
        need(getattr(lg, key) >= 0, f"log.{key} must be >= 0, got {getattr(lg, key)}")
    need(lg.log_interval >= 1, "log.log_interval must be >= 1")
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults ← YAML file at ``path`` ← ``overrides`` (``section.key=value``), validated."""
    cfg = RunConfig()
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections ({', '.join(_SECTION_CLASSES)}), "
                              f"got {type(data).__name__}")
        for section, values in data.items():
            try:
                _apply(cfg, str(section), values)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, key, value)
    return validate(cfg)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from a nested dict (as written by :meth:`RunConfig.to_dict`), validated."""
    cfg = RunConfig()
    for section, values in data.items():
        _apply(cfg, section, values)
    return validate(cfg)
