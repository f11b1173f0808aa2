"""Restormer's gated depth-wise feed-forward (GDFN): registration, autograd and the public functions.

x (B, C, H, W)::

    u = W_in · x + b_in              (B, 2h, H, W)     1×1 convolution
    d = dwconv(u)                    (B, 2h, H, W)     depth-wise K×K, zero "same" padding, bias b_dw
    y = gelu(d[:, :h]) · d[:, h:]    (B, h, H, W)      exact (erf) GELU
    z = W_out · y + b_out            (B, C_out, H, W)  1×1 convolution

u and d are 2h / C times larger than x (Restormer: 2·2.66 = 5.3), so unfused the block mostly moves them to
memory and back. The "cpu" backend's inference kernel walks the image in bands of rows and keeps u of one
band (and K//2 halo rows) in a per-thread buffer: one GEMM in, the depth-wise convolution and the gate per
channel pair, one GEMM out. With gradients, the 1×1 convolutions run as ``F.conv2d`` around
:func:`gated_depthwise`, whose CPU kernels fuse the depth-wise convolution with the gate forward and
backward. With ``backend="auto"`` maps under :data:`MIN_FUSED_PIXELS` run torch's ops.

Custom ops (one opaque node each under ``torch.compile``):

* ``ddsa::gated_ffn_fwd`` → z, inference only;
* ``ddsa::gated_depthwise_fwd`` → y, and ``ddsa::gated_depthwise_bwd`` → ``(du, dw_dw, db_dw)``. Autograd
  saves u and the weights only: the backward recomputes d from u (one more depth-wise convolution instead
  of keeping a 2h-channel map alive until the backward).

The backends are listed in ``ddsa_kernels._registry``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ... import _registry
from .._common import autocast_runs_eager, empty_block_output, empty_depthwise_grads, needs_grad
from ._common import check_gated_inputs, check_inputs

_OP = "gated_ffn"
# Rows per band: bands of 4 to 16 rows timed alike (within the noise of a busy machine, single-threaded, 256²
# at dim 16 and 48, 128² at dim 32); u of an 8-row band (+ 2 halo rows) at 256 columns takes 0.86 MB at dim 16
# (2h = 84) and 2.6 MB at dim 48 (2h = 254).
BAND_ROWS = 8
# backend="auto" on CPU runs the kernels on maps of at least this many pixels (H·W): the banded one without
# gradients, F.conv2d around the fused middle with them. `ddsa-bench gated-ffn` on the 2-core EPYC, 2 threads
# (ddsa_bench/results/cpu-amd-epyc/gated_ffn.json): from 64² up the banded kernel runs 1.4-2.8× as fast as
# torch's ops and the training step 1.3-3.0×; at 32² (dim 128) the banded kernel is slower than torch's
# (1.76 vs 1.42 ms). Below 64² (gated_ffn_small_maps.json, same machine and threads) the banded kernel still
# gains 1.4-2.1× at dim ≤ 64 but only ties at dim 128, and the training step gains 1.1× at most, so torch's
# ops run below 64².
MIN_FUSED_PIXELS = 64 * 64

Tensor = torch.Tensor


@torch.library.custom_op("ddsa::gated_ffn_fwd", mutates_args=())
def gated_ffn_fwd(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
                  w_out: Tensor, b_out: Optional[Tensor], backend: str, band: int) -> Tensor:
    return _registry.implementation(_OP, backend).forward(x, w_in, b_in, w_dw, b_dw, w_out, b_out, band)


@gated_ffn_fwd.register_fake
def _(x, w_in, b_in, w_dw, b_dw, w_out, b_out, backend, band):
    return empty_block_output(x, w_out)


@torch.library.custom_op("ddsa::gated_depthwise_fwd", mutates_args=())
def gated_depthwise_fwd(u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor], backend: str) -> Tensor:
    return _registry.implementation(_OP, backend).gated_forward(u, w_dw, b_dw)


@gated_depthwise_fwd.register_fake
def _(u, w_dw, b_dw, backend):
    return u.new_empty((u.shape[0], u.shape[1] // 2, u.shape[2], u.shape[3]))


@torch.library.custom_op("ddsa::gated_depthwise_bwd", mutates_args=())
def gated_depthwise_bwd(grad_y: Tensor, u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor],
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    du, dw, db = _registry.implementation(_OP, backend).gated_backward(grad_y.to(u.dtype), u, w_dw, b_dw)
    return du, dw, db


@gated_depthwise_bwd.register_fake
def _(grad_y, u, w_dw, b_dw, backend):
    return empty_depthwise_grads(u, w_dw)


def _setup_context(ctx, inputs, output):
    u, w_dw, b_dw, backend = inputs
    ctx.save_for_backward(u, w_dw, b_dw)
    ctx.backend = backend


def _backward(ctx, grad_y):
    u, w_dw, b_dw = ctx.saved_tensors
    du, dw, db = gated_depthwise_bwd(grad_y, u, w_dw, b_dw, ctx.backend)
    return du, dw, (db if b_dw is not None else None), None


gated_depthwise_fwd.register_autograd(_backward, setup_context=_setup_context)


def gated_depthwise(u: Tensor, w_dw: Tensor, b_dw: Optional[Tensor] = None, *, backend: str = "auto") -> Tensor:
    """``gelu(d[:, :h]) · d[:, h:]`` with d the depth-wise convolution of u (the middle of :func:`gated_ffn`).

    Args:
        u: (B, 2h, H, W), any strides, float16/bfloat16/float32/float64.
        w_dw: (2h, 1, K, K) with K odd, 1 ≤ K ≤ 7 (zero padding K // 2); b_dw: (2h,) or None. u's dtype and device.
        backend: "auto" (the "cpu" kernels for float32/float64 CPU tensors of at least
            :data:`MIN_FUSED_PIXELS` pixels outside autocast, else "eager"),
            "cpu", "reference" (plain tensor algebra) or "eager" (``F.conv2d`` and ``F.gelu``).

    Returns:
        (B, h, H, W) in u's dtype; differentiable w.r.t. u, w_dw and b_dw (the "cpu" backward recomputes d
        from u rather than saving it).
    """
    if autocast_runs_eager(backend, u):
        return _registry.implementation(_OP, "eager").gated_forward(u, w_dw, b_dw)
    check_gated_inputs(u, w_dw, b_dw)
    name = _registry.resolve_backend(backend, u.device, u.dtype, op=_OP)
    if _registry.is_fused(name, op=_OP) and backend == "auto" and u.shape[2] * u.shape[3] < MIN_FUSED_PIXELS:
        name = "eager"
    if not _registry.is_fused(name, op=_OP):
        return _registry.implementation(_OP, name).gated_forward(u, w_dw, b_dw)
    return gated_depthwise_fwd(u, w_dw, b_dw, name)


def gated_ffn(x: Tensor, w_in: Tensor, b_in: Optional[Tensor], w_dw: Tensor, b_dw: Optional[Tensor],
              w_out: Tensor, b_out: Optional[Tensor], *, backend: str = "auto") -> Tensor:
    """Restormer's ``FeedForward``: ``project_out(gelu(x1) · x2)`` with ``x1, x2 = dwconv(project_in(x)).chunk(2, 1)``.

    Args:
        x: (B, C, H, W), float16/bfloat16/float32/float64.
        w_in: (2h, C, 1, 1); b_in: (2h,) or None (``project_in``).
        w_dw: (2h, 1, K, K) with K odd, 1 ≤ K ≤ 7, zero padding K // 2; b_dw: (2h,) or None (``dwconv``).
        w_out: (C_out, h, 1, 1); b_out: (C_out,) or None (``project_out``). All of x's dtype and device.
        backend: "auto" (the "cpu" kernels for float32/float64 CPU tensors of at least
            :data:`MIN_FUSED_PIXELS` pixels outside autocast, else torch's ops), "cpu" (the banded inference
            kernel when no gradient is needed, else ``F.conv2d`` around :func:`gated_depthwise`), "reference"
            (plain tensor algebra) or "eager" (the authors' ``F.conv2d`` / ``F.gelu``).

    Returns:
        (B, C_out, H, W) in x's dtype; differentiable w.r.t. every input.
    """
    if autocast_runs_eager(backend, x):
        return _registry.implementation(_OP, "eager").forward(x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    check_inputs(x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    name = _registry.resolve_backend(backend, x.device, x.dtype, op=_OP)
    tensors = (x, w_in, b_in, w_dw, b_dw, w_out, b_out)
    if _registry.is_fused(name, op=_OP) and backend == "auto" and x.shape[2] * x.shape[3] < MIN_FUSED_PIXELS:
        name = "eager"
    if not _registry.is_fused(name, op=_OP):  # "reference" / "eager": plain autograd of their torch ops
        return _registry.implementation(_OP, name).forward(*tensors)
    if not needs_grad(*tensors):
        return gated_ffn_fwd(*tensors, name, BAND_ROWS)
    return F.conv2d(gated_depthwise_fwd(F.conv2d(x, w_in, b_in), w_dw, b_dw, name), w_out, b_out)


__all__ = ["gated_ffn", "gated_depthwise"]
