"""Pieces shared by ddsa-derain, ddsa-eval and ddsa-demo: device/precision options and model loading."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence, Tuple

import torch


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2 (bad usage / setup) or 1."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="W", default=None,
                   help="checkpoint: model.safetensors from ddsa-train/save_model, a ddsa-train iter_*.pt, an "
                        "authors' .pth, or the name of shipped weights (ddsa_model.pretrained.SHIPPED_WEIGHTS; "
                        "default: the shipped default model)")
    p.add_argument("--preset", default=None,
                   help="only for a bare state dict in --weights: the preset it was trained with")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--half", action="store_true",
                   help="run under float16 autocast on CUDA (bfloat16 on CPU)")
    p.add_argument("--attention-backend", default="auto",
                   help="attention op backend, e.g. reference or cuda (default: auto; an unknown name is "
                        "reported with the names this build knows)")


def resolve_device(name: str, half: bool) -> Tuple[torch.device, torch.dtype]:
    """(device, compute dtype) for the --device/--half options; CLIError when unusable."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device: unsupported device type {device.type!r}")
    dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if half else torch.float32
    return device, dtype


def check_attention_backend(name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """``name`` when it is "auto" or a known attention backend that can run ``dtype`` on ``device``
    in this process; CLIError naming the option and the reason otherwise (before any image is read)."""
    from ddsa_kernels import _registry

    try:
        _registry.check_backend_name(name, "dual_attention")
    except ValueError as e:
        raise CLIError(f"--attention-backend: {e}") from None
    if name != "auto":
        try:
            _registry.resolve_backend(name, device, dtype, op="dual_attention")
        except RuntimeError as e:
            raise CLIError(f"--attention-backend {name} on {device} ({str(dtype).replace('torch.', '')}): {e}") from None
    return name


def load_model_for_cli(weights: Optional[str], preset: Optional[str], attention_backend: str,
                       device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The model for --weights (or the shipped default) on ``device``, its attention on
    ``attention_backend`` (checked first, for ``dtype``); CLIError with the reason."""
    from ddsa_model.pretrained import load_weights

    check_attention_backend(attention_backend, device, dtype)
    try:
        return load_weights(weights, attention_backend=attention_backend, map_location=str(device), preset=preset)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run_cli(build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], int],
            argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and run; a CLIError becomes one ``error:`` line and its exit status, ^C exits 130.

    Before running, glibc's malloc is told to keep freed memory, so that large CPU tensors stop
    page-faulting afresh (``ddsa_kernels.tune_cpu_memory``).
    """
    from ddsa_kernels import tune_cpu_memory

    args = build_parser().parse_args(argv)
    tune_cpu_memory()
    try:
        return run(args)
    except CLIError as e:
        error(str(e))
        return e.status
    except KeyboardInterrupt:
        error("interrupted")
        return 130
