"""DRSformer's mixed-scale feed-forward block (MSFN): registration, autograd and the public function.

x (B, C, H, W), u = W_in · x + b_in (B, 2h, H, W); two depth-wise stages with their ReLUs and the
chunk / cat shuffles turn u into m = cat(p, q) (B, 2h, H, W) (see :mod:`.naive` for the formulas);
z = W_out · m + b_out. Unfused, the block writes six 2h- or h-channel maps to memory and reads them back,
and torch's NCHW depth-wise convolutions are slow on CPU.

* Inference (no gradient needed, CPU, float32/float64): the "cpu" backend's banded kernel computes u and
  m of one band of rows in per-thread buffers, one GEMM in and one out. ``ddsa-bench mixed-scale-ffn``
  on a 2-core CPU (2 threads) found it 1.8-5.2× as fast as torch's ops on small maps (4×4 to 32², C = 16
  to 128), ahead of the training path's middle except at C = 128 up to 16² (within 10 %), and ahead from
  128² up, so ``backend="auto"`` uses it from :data:`MIN_FUSED_PIXELS` up.
* Training: ``F.conv2d`` 1×1 around ``ddsa::mixed_scale_ffn_mid_fwd`` (u → m, one task per plane of m),
  whose backward ``ddsa::mixed_scale_ffn_mid_bwd`` recomputes both stage-1 maps from the saved u (and
  reads the stage-2 ReLU masks off the saved m, which the 1×1 after it keeps anyway) instead of storing
  them.

``ddsa::mixed_scale_ffn_fwd`` (the banded kernel) is one opaque node under ``torch.compile``, as are the
middle's two ops. The backends are listed in ``ddsa_kernels._registry``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ... import _registry
from .._common import autocast_runs_eager, empty_block_output, needs_grad
from ._common import check_inputs, check_middle

_OP = "mixed_scale_ffn"
BAND_ROWS = 16  # rows per band (fewer on short maps, so that every thread gets rows)
MIN_FUSED_PIXELS = 8 * 8  # backend="auto" runs the banded kernel on maps of at least this many pixels (H·W)

Tensor = torch.Tensor
OptTensor = Optional[Tensor]


@torch.library.custom_op("ddsa::mixed_scale_ffn_fwd", mutates_args=())
def mixed_scale_ffn_fwd(x: Tensor, w_in: Tensor, b_in: OptTensor, w3: Tensor, b3: OptTensor, w5: Tensor,
                        b5: OptTensor, w3_1: Tensor, b3_1: OptTensor, w5_1: Tensor, b5_1: OptTensor, w_out: Tensor,
                        b_out: OptTensor, backend: str, band: int) -> Tensor:
    return _registry.implementation(_OP, backend).forward(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1,
                                                          w_out, b_out, band)


@mixed_scale_ffn_fwd.register_fake
def _(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out, backend, band):
    return empty_block_output(x, w_out)


@torch.library.custom_op("ddsa::mixed_scale_ffn_mid_fwd", mutates_args=())
def mixed_scale_ffn_mid_fwd(u: Tensor, w3: Tensor, b3: OptTensor, w5: Tensor, b5: OptTensor, w3_1: Tensor,
                            b3_1: OptTensor, w5_1: Tensor, b5_1: OptTensor, backend: str) -> Tensor:
    return _registry.implementation(_OP, backend).middle_forward(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)


@mixed_scale_ffn_mid_fwd.register_fake
def _(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, backend):
    return u.new_empty(u.shape)


@torch.library.custom_op("ddsa::mixed_scale_ffn_mid_bwd", mutates_args=())
def mixed_scale_ffn_mid_bwd(grad_m: Tensor, u: Tensor, m: Tensor, w3: Tensor, b3: OptTensor, w5: Tensor,
                            b5: OptTensor, w3_1: Tensor, b3_1: OptTensor, w5_1: Tensor, b5_1: OptTensor,
                            backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                                   Tensor]:
    grads = _registry.implementation(_OP, backend).middle_backward(grad_m.to(u.dtype), u, m, w3, b3, w5, b5, w3_1,
                                                                   b3_1, w5_1, b5_1)
    return tuple(grads)


@mixed_scale_ffn_mid_bwd.register_fake
def _(grad_m, u, m, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, backend):
    out = [u.new_empty(u.shape)]
    for w in (w3, w5, w3_1, w5_1):
        out += [w.new_empty(w.shape), w.new_empty(w.shape[:1])]
    return tuple(out)


def _setup_context(ctx, inputs, output):
    u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, backend = inputs
    ctx.save_for_backward(u, output, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)
    ctx.backend = backend


def _backward(ctx, grad_m):
    u, m, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1 = ctx.saved_tensors
    du, dw3, db3, dw5, db5, dw3_1, db3_1, dw5_1, db5_1 = mixed_scale_ffn_mid_bwd(
        grad_m, u, m, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, ctx.backend)
    bias = lambda b, g: g if b is not None else None  # noqa: E731
    return (du, dw3, bias(b3, db3), dw5, bias(b5, db5), dw3_1, bias(b3_1, db3_1), dw5_1, bias(b5_1, db5_1), None)


mixed_scale_ffn_mid_fwd.register_autograd(_backward, setup_context=_setup_context)


def mixed_scale_middle(u: Tensor, w3: Tensor, b3: OptTensor, w5: Tensor, b5: OptTensor, w3_1: Tensor,
                       b3_1: OptTensor, w5_1: Tensor, b5_1: OptTensor, *, backend: str = "auto") -> Tensor:
    """The block between its two 1×1 convolutions: u (B, 2h, H, W) → cat(p, q) (B, 2h, H, W).

    Differentiable w.r.t. u and the four depth-wise weights and biases; the fused backward recomputes the
    stage-1 maps from u rather than saving them. ``backend``: "auto" (the "cpu" kernels for float32/float64
    CPU tensors, else torch's convolutions), "cpu", "reference" (plain tensor algebra) or "eager" (torch's
    convolutions).
    """
    if not isinstance(u, torch.Tensor) or u.dim() != 4:
        raise ValueError(f"u must be a (B, 2h, H, W) tensor, got {getattr(u, 'shape', type(u).__name__)}")
    check_middle(u, u.shape[1], w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)
    name = _registry.resolve_backend(backend, u.device, u.dtype, op=_OP)
    if not _registry.is_fused(name, op=_OP):
        return _registry.implementation(_OP, name).middle_forward(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1)
    return mixed_scale_ffn_mid_fwd(u, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, name)


def mixed_scale_ffn(x: Tensor, w_in: Tensor, b_in: OptTensor, w3: Tensor, b3: OptTensor, w5: Tensor, b5: OptTensor,
                    w3_1: Tensor, b3_1: OptTensor, w5_1: Tensor, b5_1: OptTensor, w_out: Tensor, b_out: OptTensor,
                    *, backend: str = "auto") -> Tensor:
    """DRSformer's mixed-scale feed-forward: ``project_out(m(project_in(x)))`` with the weights in
    ``nn.Conv2d`` layouts.

    Args:
        x: (B, C, H, W), float16/bfloat16/float32/float64.
        w_in: (2h, C, 1, 1); b_in: (2h,) or None (``project_in``).
        w3, w5: (2h, 1, K, K); b3, b5: (2h,) or None (``dwconv3x3``, ``dwconv5x5``, depth-wise).
        w3_1, w5_1: (h, 2, K, K); b3_1, b5_1: (h,) or None (``dwconv3x3_1``, ``dwconv5x5_1``, h groups).
        w_out: (C_out, 2h, 1, 1); b_out: (C_out,) or None (``project_out``). Every K odd, 1 to 7 (the
            published block: 3, 5, 3, 5); all of x's dtype and device.
        backend: "auto" (on CPU the "cpu" kernels for float32/float64 outside autocast, the banded
            inference kernel from :data:`MIN_FUSED_PIXELS` pixels up; elsewhere "eager"), "cpu",
            "reference" (plain tensor algebra, float64 capable) or "eager" (torch's convolutions as the
            authors write them).

    Returns:
        (B, C_out, H, W) in x's dtype; differentiable w.r.t. every input (the banded kernel runs only when
        no gradient is needed).
    """
    tensors = (x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out)
    if autocast_runs_eager(backend, x):
        return _registry.implementation(_OP, "eager").forward(*tensors)
    check_inputs(*tensors)
    name = _registry.resolve_backend(backend, x.device, x.dtype, op=_OP)
    if not _registry.is_fused(name, op=_OP):  # "reference" / "eager": plain autograd of their torch ops
        return _registry.implementation(_OP, name).forward(*tensors)
    if not needs_grad(*tensors) and (backend != "auto" or x.shape[2] * x.shape[3] >= MIN_FUSED_PIXELS):
        return mixed_scale_ffn_fwd(*tensors, name, BAND_ROWS)
    m = mixed_scale_ffn_mid_fwd(F.conv2d(x, w_in, b_in), w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, name)
    return F.conv2d(m, w_out, b_out)


__all__ = ["mixed_scale_ffn", "mixed_scale_middle"]
