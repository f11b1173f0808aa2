"""Pieces every op folder shares: argument checks (every bad input named in the error), the autocast
rule of ``backend="auto"``, the holder of an unfused backend's entry points, and the shapes the custom
ops' fake (meta) implementations return."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_KERNEL = 7  # the largest (odd) depth-wise kernel the ops accept


class Unfused(SimpleNamespace):
    """An unfused backend ("eager", or a "reference" that is plain autograd of torch ops): its entry
    points (``forward``, and e.g. ``gated_forward`` for an op with a public middle) are ordinary
    differentiable functions taking the op's public arguments, called without a custom op."""


def autocast_runs_eager(backend: str, x: object) -> bool:
    """True when ``backend="auto"`` meets an enabled autocast on x's device: the op then runs its "eager"
    backend, so that autocast picks each torch op's dtype as it does for an ``nn.Conv2d``."""
    return (backend == "auto" and isinstance(x, torch.Tensor) and x.device.type != "meta"  # meta has no autocast
            and torch.is_autocast_enabled(x.device.type))


def needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """True when autograd will record an op on these tensors (grad mode on and one of them requires grad):
    the inference-only kernels cannot run then."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def empty_depthwise_grads(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uninitialised (dx, dweight, dbias) of a depth-wise convolution's backward, for a custom op's fake:
    x's shape, weight's (C, 1, K, K) and (C,)."""
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[:1])


def empty_block_output(x: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """Uninitialised output of a block over x (B, C, H, W) that ends in the 1×1 convolution w_out
    (C_out, ·, 1, 1), for a custom op's fake: (B, C_out, H, W) in x's dtype."""
    return x.new_empty((x.shape[0], w_out.shape[0], x.shape[2], x.shape[3]))


def check_tensor_types(named: dict[str, object]) -> None:
    """TypeError unless every value is a tensor; a bias (a name starting with "b") may be None."""
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) and not (t is None and name.startswith("b")):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_map(name: str, t: torch.Tensor, what: str = "(B, C, H, W)") -> None:
    """ValueError unless t is a 4-D floating-point map; ``what`` names the expected shape."""
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape {what}, got {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}; expected float16, bfloat16, float32 or float64")


def check_kernel(name: str, weight: torch.Tensor) -> int:
    """ValueError unless the (…, K, K) weight's K is odd and at most :data:`MAX_KERNEL`; returns K."""
    k = weight.shape[-1]
    if k % 2 != 1 or k > MAX_KERNEL:
        raise ValueError(f"{name} has a {k}×{k} kernel; supported: odd sizes 1 to {MAX_KERNEL}")
    return k


def check_weight_and_bias(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], channels: int,
                          same_dtype: bool = True, names: tuple[str, str] = ("weight", "bias")) -> None:
    """weight and bias on x's device (and of x's dtype unless ``same_dtype=False``), bias (channels,) or None;
    errors call them by ``names``."""
    for name, t in zip(names, (weight, bias)):
        if t is None:
            continue
        if same_dtype and t.dtype != x.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but x has dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != channels):
        raise ValueError(f"{names[1]} must have shape (C,) with C={channels}, got {tuple(bias.shape)}")


def check_pointwise_in(x: torch.Tensor, w_in: torch.Tensor, what: str) -> int:
    """ValueError unless w_in is a 1×1 convolution (outputs, C, 1, 1) over x's C channels (``what`` names
    its outputs in the error); returns the number of outputs."""
    channels = x.shape[1]
    if w_in.dim() != 4 or w_in.shape[1] != channels or w_in.shape[2:] != (1, 1) or w_in.shape[0] < 1:
        raise ValueError(f"w_in must have shape ({what}, C, 1, 1) with C={channels} (x's dim 1), "
                         f"got {tuple(w_in.shape)}")
    return w_in.shape[0]


def check_pointwise_out(w_out: torch.Tensor, hidden: int, origin: str) -> None:
    """ValueError unless w_out is a 1×1 convolution (C_out, hidden, 1, 1); ``origin`` says where
    ``hidden`` comes from."""
    if w_out.dim() != 4 or w_out.shape[1] != hidden or w_out.shape[2:] != (1, 1) or w_out.shape[0] < 1:
        raise ValueError(f"w_out must have shape (C_out, {hidden}, 1, 1) ({origin}), got {tuple(w_out.shape)}")


def naive_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The oracles' 1×1 convolution: a channel contraction of x (B, C, H, W) with weight (O, C, 1, 1)."""
    out = torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias[:, None, None]


def matmul_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The reference backends' 1×1 convolution: (O, C) @ (B, C, H·W), back to (B, O, H, W)."""
    batch, _, height, width = x.shape
    out = (weight[:, :, 0, 0] @ x.reshape(batch, x.shape[1], -1)).view(batch, -1, height, width)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
