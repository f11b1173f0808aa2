"""The trainer: a YAML run config, then :func:`train` (L1 loss, AdamW, constant-then-cosine lr,
AMP, DDP via torchrun, atomic checkpoints and exact resume).

    from ddsa_model.pipeline.train import load_config, train
    summary = train(load_config("run.yaml", ["train.iterations=1000"]), resume="auto")
"""
from .config import ConfigError, RunConfig, config_from_dict, load_config, parse_override
from .checkpoints import list_checkpoints, resolve_resume
from .distributed import parameter_digest
from .loop import TrainingDiverged, config_summary, train, validate
from .schedule import ConstantCosineLR

__all__ = [
    "train", "validate", "TrainingDiverged", "ConstantCosineLR", "parameter_digest", "list_checkpoints",
    "resolve_resume", "config_summary", "ConfigError", "RunConfig", "load_config", "config_from_dict",
    "parse_override",
]
