"""The learning-rate schedule of the paper: constant, then cosine annealing."""
from __future__ import annotations

import math

import torch

__all__ = ["ConstantCosineLR"]


class ConstantCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """lr = base for t < ``constant_steps``, then cosine from base to ``eta_min`` at ``total_steps``.

    The paper's schedule (constant 1e-4 for 92K of 300K iterations, then cosine annealing).
    ``t`` is the number of optimizer steps taken so far.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, constant_steps: int,
                 eta_min: float = 1e-6, last_epoch: int = -1) -> None:
        self.total_steps, self.constant_steps, self.eta_min = total_steps, constant_steps, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base: float) -> float:
        if step < self.constant_steps:
            return base
        span = max(1, self.total_steps - self.constant_steps)
        progress = min(1.0, (step - self.constant_steps) / span)
        return self.eta_min + (base - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]
