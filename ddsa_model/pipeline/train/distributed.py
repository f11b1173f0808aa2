"""DDP set-up and tear-down from the torchrun environment (gloo on CPU, nccl on CUDA), and the few
collectives the trainer needs. With WORLD_SIZE unset or 1 everything is a single-process no-op."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .config import ConfigError

__all__ = ["DistInfo", "setup_distributed", "teardown_distributed", "all_mean", "sync_buffers",
           "parameter_digest", "check_ranks_agree"]


@dataclass
class DistInfo:
    """This process's place in the run: world size, ranks and its device."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> DistInfo:
    """Read WORLD_SIZE / RANK / LOCAL_RANK, pick the device ("auto", "cpu" or "cuda") and, with
    more than one process, initialise the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available (use train.device=cpu)")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(world, rank, local_rank, device)


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group that :func:`setup_distributed` created (if any)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(values: list[float], info: DistInfo) -> list[float]:
    """The mean of ``values`` over all ranks (float64)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def sync_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats). DDP broadcasts them before each
    forward, so after the last training step the other ranks still hold their own updates."""
    if info.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name and bytes (identical weights ⇔ identical digests)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_ranks_agree(model: torch.nn.Module, info: DistInfo) -> str:
    """Parameter digest of this rank; under DDP raises if any rank's weights differ."""
    digest = parameter_digest(model)
    if info.enabled:
        digests: list[str | None] = [None] * info.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights (digests {digests}); "
                               "this is a bug — please report it")
    return digest
