"""What every op's Triton backend shares: where the kernels may run, and the device guard."""
from __future__ import annotations

import contextlib

import torch

from .._registry import triton_interpreter

INTERPRET = triton_interpreter()


def availability() -> tuple[bool, str]:
    """(True, "") when the Triton kernels can run here: a CUDA device, or the interpreter on CPU."""
    if INTERPRET or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (set TRITON_INTERPRET=1 to run the Triton kernels on CPU)"


def device_guard(*tensors: torch.Tensor) -> contextlib.AbstractContextManager:
    """Refuse non-CUDA tensors (unless interpreting); return a guard making their GPU current."""
    device = tensors[0].device
    if device.type != "cuda" and not INTERPRET:
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors (got {device}); set TRITON_INTERPRET=1 to run it on CPU"
        )
    # Triton launches on the current device, which need not be the tensors' one.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
