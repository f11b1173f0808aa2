"""The "triton" backend: channel LayerNorm of NCHW maps in Triton, without a permuted copy.

A program owns a tile of BLOCK_N pixels of one batch element and reduces over the C channels of
each pixel (which sit at the channel stride apart). The tile is a (BLOCK_C, BLOCK_N) block with
pixels along the fast axis, so loads coalesce along pixels for NCHW memory; any strides are
accepted (they are passed in, pixel n = (h, w) = (n // W, n % W)).

* C ≤ ``_MAX_ONE_CHUNK_C``: all channels of the tile are held in registers; mean, then the centred
  variance from the same registers (two-pass), then y.
* larger C: the tile is walked in channel chunks of BLOCK_C, three times (Σx → μ; Σ(x−μ), Σ(x−μ)² →
  σ; write y). The extra reads hit L2; the two-pass scheme keeps the variance exact-ish when |μ| ≫ σ.

The float32 μ is exact only to half an ulp of |μ|, a sizeable part of x − μ on a near-constant pixel
far from zero; x − μ is therefore corrected by its residual mean r = mean_c (x − μ) wherever x̂ is
formed (forward and backward), and the saved mean is μ + r.

Backward: per tile, a pass for r (in registers when the tile fits), pass 1 reduces mean(g) and
mean(g·x̂) over channels (g = dy·w), pass 2 writes dx; each program also writes its partial Σ dy·x̂ (or Σ dy·x·rstd) and Σ dy per channel into a
(programs, 2, C) buffer, which is summed over programs by one fixed-shape torch reduction (no
atomics: bitwise reproducible).

Accumulation is fp32; y and dx are written in x's dtype, contiguous. On CPU the kernels run under
the Triton interpreter (``TRITON_INTERPRET=1``), for tests.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton  # an ImportError here is reported by the backend registry
import triton.language as tl

from .._triton_common import INTERPRET as _INTERPRET
from .._triton_common import availability, device_guard  # noqa: F401  (availability: read by the registry)

# Largest C whose whole (BLOCK_C, BLOCK_N) tile stays in registers.
_MAX_ONE_CHUNK_C = 256
# Elements of one tile: BLOCK_C · BLOCK_N (fp32 registers spread over the program's threads).
_TILE_ELEMENTS = 4096
_CHUNK_C = 64
# Triton's default; passed explicitly so that the offline compile checks use the same value.
_NUM_STAGES = 3


@triton.jit
def _pixel_offsets(b, t, N, W, s_b, s_h, s_w, BLOCK_N: tl.constexpr):
    """(pixel indices of tile t, their validity, element offsets of channel 0 of batch b)."""
    n = t * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    h = (n // W).to(tl.int64)
    w = (n % W).to(tl.int64)
    return n, n_ok, b.to(tl.int64) * s_b + h * s_h + w * s_w


@triton.jit
def _x_tile(x_ptr, c, C, n_ok, sx_c, x_pix):
    """Channels c of the tile's pixels: (c < C, the (channel, pixel) mask, x in fp32, 0 off the mask)."""
    c_ok = c < C
    mask = c_ok[:, None] & n_ok[None, :]
    x = tl.load(x_ptr + c.to(tl.int64)[:, None] * sx_c + x_pix[None, :], mask=mask, other=0.0).to(tl.float32)
    return c_ok, mask, x


@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr,
    C, N, W, tiles_per_batch, eps,
    sx_b, sx_c, sx_h, sx_w,
    HAS_BIAS: tl.constexpr, SUBTRACT_MEAN: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y = (x − μ)·rstd·w (+ b) or x·rstd·w for one tile of BLOCK_N pixels; stores μ and rstd."""
    pid = tl.program_id(0)
    b = pid // tiles_per_batch
    t = pid % tiles_per_batch
    n, n_ok, x_pix = _pixel_offsets(b, t, N, W, sx_b, sx_h, sx_w, BLOCK_N)
    y_pix = b.to(tl.int64) * C * N + n
    cs = tl.arange(0, BLOCK_C)
    if ONE_CHUNK:
        c_ok, mask, x = _x_tile(x_ptr, cs, C, n_ok, sx_c, x_pix)
        mean = tl.sum(x, axis=0) / C
        d = tl.where(mask, x - mean[None, :], 0.0)
        residual = tl.sum(d, axis=0) / C
        d = tl.where(mask, d - residual[None, :], 0.0)
        rstd = 1.0 / tl.sqrt_rn(tl.sum(d * d, axis=0) / C + eps)
        wv = tl.load(w_ptr + cs, mask=c_ok, other=0.0)
        if SUBTRACT_MEAN:
            y = d * rstd[None, :] * wv[:, None]
            if HAS_BIAS:
                y += tl.load(b_ptr + cs, mask=c_ok, other=0.0)[:, None]
        else:
            y = x * rstd[None, :] * wv[:, None]
        tl.store(y_ptr + cs.to(tl.int64)[:, None] * N + y_pix[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            _, _, x = _x_tile(x_ptr, c0 + cs, C, n_ok, sx_c, x_pix)
            acc += tl.sum(x, axis=0)
        mean = acc / C
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_d = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            _, mask, x = _x_tile(x_ptr, c0 + cs, C, n_ok, sx_c, x_pix)
            d = tl.where(mask, x - mean[None, :], 0.0)
            acc_d += tl.sum(d, axis=0)
            acc += tl.sum(d * d, axis=0)
        residual = acc_d / C
        rstd = 1.0 / tl.sqrt_rn(tl.maximum(acc / C - residual * residual, 0.0) + eps)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            c_ok, mask, x = _x_tile(x_ptr, c, C, n_ok, sx_c, x_pix)
            wv = tl.load(w_ptr + c, mask=c_ok, other=0.0)
            if SUBTRACT_MEAN:
                y = ((x - mean[None, :]) - residual[None, :]) * rstd[None, :] * wv[:, None]
                if HAS_BIAS:
                    y += tl.load(b_ptr + c, mask=c_ok, other=0.0)[:, None]
            else:
                y = x * rstd[None, :] * wv[:, None]
            tl.store(y_ptr + c.to(tl.int64)[:, None] * N + y_pix[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    stat = b.to(tl.int64) * N + n
    tl.store(mean_ptr + stat, mean + residual, mask=n_ok)
    tl.store(rstd_ptr + stat, rstd, mask=n_ok)


@triton.jit
def _backward_tile(c, C, n_ok, x_ptr, dy_ptr, w_ptr, sx_c, sg_c, x_pix, g_pix):
    """The backward's tile of channels c: (c < C, the (channel, pixel) mask, c as an int64 column, x and dy
    in fp32, g = dy·w)."""
    c_ok, mask, x = _x_tile(x_ptr, c, C, n_ok, sx_c, x_pix)
    c64 = c.to(tl.int64)[:, None]
    dy = tl.load(dy_ptr + c64 * sg_c + g_pix[None, :], mask=mask, other=0.0).to(tl.float32)
    g = dy * tl.load(w_ptr + c, mask=c_ok, other=0.0)[:, None]
    return c_ok, mask, c64, x, dy, g


@triton.jit
def _backward_kernel(
    dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, part_ptr,
    C, N, W, tiles_per_batch,
    sx_b, sx_c, sx_h, sx_w,
    sg_b, sg_c, sg_h, sg_w,
    SUBTRACT_MEAN: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dx for one tile of pixels, and this tile's Σ dy·x̂ (or Σ dy·x·rstd), Σ dy per channel into part."""
    pid = tl.program_id(0)
    b = pid // tiles_per_batch
    t = pid % tiles_per_batch
    n, n_ok, x_pix = _pixel_offsets(b, t, N, W, sx_b, sx_h, sx_w, BLOCK_N)
    _, _, g_pix = _pixel_offsets(b, t, N, W, sg_b, sg_h, sg_w, BLOCK_N)
    dx_pix = b.to(tl.int64) * C * N + n
    stat = b.to(tl.int64) * N + n
    mean = tl.load(mean_ptr + stat, mask=n_ok, other=0.0)
    rstd = tl.load(rstd_ptr + stat, mask=n_ok, other=0.0)  # 0 on padding: no contribution
    cs = tl.arange(0, BLOCK_C)
    part = part_ptr + pid.to(tl.int64) * 2 * C
    if ONE_CHUNK:
        c_ok, mask, c64, x, dy, g = _backward_tile(cs, C, n_ok, x_ptr, dy_ptr, w_ptr, sx_c, sg_c, x_pix, g_pix)
        d = tl.where(mask, x - mean[None, :], 0.0)
        residual = tl.sum(d, axis=0) / C
        xh = tl.where(mask, (d - residual[None, :]) * rstd[None, :], 0.0)  # padding stays 0 (no overflow)
        if SUBTRACT_MEAN:
            mean_g = tl.sum(g, axis=0) / C
            mean_gx = tl.sum(g * xh, axis=0) / C
            dx = (g - mean_g[None, :] - xh * mean_gx[None, :]) * rstd[None, :]
            dw = tl.sum(dy * xh, axis=1)
        else:
            xs = x * rstd[None, :]
            mean_gx = tl.sum(g * xs, axis=0) / C
            dx = (g - xh * mean_gx[None, :]) * rstd[None, :]
            dw = tl.sum(dy * xs, axis=1)
        tl.store(dx_ptr + c64 * N + dx_pix[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(part + cs, dw, mask=c_ok)
        tl.store(part + C + cs, tl.sum(dy, axis=1), mask=c_ok)
    else:
        residual = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            _, mask, x = _x_tile(x_ptr, c0 + cs, C, n_ok, sx_c, x_pix)
            residual += tl.sum(tl.where(mask, x - mean[None, :], 0.0), axis=0)
        residual = residual / C
        acc_g = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_gx = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            c_ok, mask, c64, x, dy, g = _backward_tile(c, C, n_ok, x_ptr, dy_ptr, w_ptr, sx_c, sg_c, x_pix, g_pix)
            if SUBTRACT_MEAN:
                xh = ((x - mean[None, :]) - residual[None, :]) * rstd[None, :]
                acc_g += tl.sum(g, axis=0)
            else:
                xh = x * rstd[None, :]
            acc_gx += tl.sum(g * xh, axis=0)
            # this tile's per-channel sums, written once per chunk
            tl.store(part + c, tl.sum(dy * xh, axis=1), mask=c_ok)
            tl.store(part + C + c, tl.sum(dy, axis=1), mask=c_ok)
        mean_g = acc_g / C
        mean_gx = acc_gx / C
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            c_ok, mask, c64, x, dy, g = _backward_tile(c, C, n_ok, x_ptr, dy_ptr, w_ptr, sx_c, sg_c, x_pix, g_pix)
            xh = tl.where(mask, ((x - mean[None, :]) - residual[None, :]) * rstd[None, :], 0.0)
            if SUBTRACT_MEAN:
                dx = (g - mean_g[None, :] - xh * mean_gx[None, :]) * rstd[None, :]
            else:
                dx = (g - xh * mean_gx[None, :]) * rstd[None, :]
            tl.store(dx_ptr + c64 * N + dx_pix[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _blocks(channels: int, block_c: Optional[int], backward: bool = False) -> tuple[int, int, bool, int]:
    """(BLOCK_C, BLOCK_N, one_chunk, num_warps) for C channels; ``block_c`` forces the chunk size.

    The backward holds about twice as many live tiles (x, dy, g, x̂, dx) as the forward: it runs
    twice the warps, so that it compiles without register spills on sm_80 to sm_90.
    """
    if block_c is None:
        full = triton.next_power_of_2(channels)
        block_c = full if full <= _MAX_ONE_CHUNK_C else _CHUNK_C
    block_c = triton.next_power_of_2(block_c)
    one_chunk = block_c >= channels
    block_n = max(16, min(256, _TILE_ELEMENTS // block_c))
    warps = 4 if block_c * block_n <= 4096 else 8
    if backward:
        warps *= 2
    return block_c, block_n, one_chunk, warps




def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())


def forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    eps: float,
    subtract_mean: bool,
    *,
    block_c: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend forward: x (B, C, H, W) any strides → (y contiguous in x's dtype, mean, rstd (B, H, W) fp32).

    ``block_c`` forces the channel chunk (tests of the chunked path); default: by C.
    """
    batch, channels, height, width = x.shape
    pixels = height * width
    f32 = dict(dtype=torch.float32, device=x.device)
    y = torch.empty((batch, channels, height, width), dtype=x.dtype, device=x.device)
    mean = torch.empty((batch, height, width), **f32)
    rstd = torch.empty((batch, height, width), **f32)
    if batch == 0 or pixels == 0:
        return y, mean, rstd
    bc, bn, one_chunk, warps = _blocks(channels, block_c)
    tiles = triton.cdiv(pixels, bn)
    w = weight.to(torch.float32).contiguous()
    b = bias.to(torch.float32).contiguous() if bias is not None else w
    with device_guard(x):
        _forward_kernel[(batch * tiles,)](
            x, w, b, y, mean, rstd,
            channels, pixels, width, tiles, float(eps),
            *_strides(x),
            HAS_BIAS=bias is not None, SUBTRACT_MEAN=bool(subtract_mean), ONE_CHUNK=one_chunk,
            BLOCK_C=bc, BLOCK_N=bn, num_warps=warps, num_stages=_NUM_STAGES,
        )
    return y, mean, rstd


def backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    subtract_mean: bool,
    *,
    block_c: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend backward → (dx (B, C, H, W) contiguous in x's dtype, dw (C,), db (C,) fp32)."""
    batch, channels, height, width = x.shape
    pixels = height * width
    f32 = dict(dtype=torch.float32, device=x.device)
    dx = torch.empty((batch, channels, height, width), dtype=x.dtype, device=x.device)
    if batch == 0 or pixels == 0:
        return dx, torch.zeros((channels,), **f32), torch.zeros((channels,), **f32)
    bc, bn, one_chunk, warps = _blocks(channels, block_c, backward=True)
    tiles = triton.cdiv(pixels, bn)
    part = torch.empty((batch * tiles, 2, channels), **f32)
    with device_guard(grad_y, x):
        _backward_kernel[(batch * tiles,)](
            grad_y, x, weight.to(torch.float32).contiguous(), mean.contiguous(), rstd.contiguous(), dx, part,
            channels, pixels, width, tiles,
            *_strides(x), *_strides(grad_y),
            SUBTRACT_MEAN=bool(subtract_mean), ONE_CHUNK=one_chunk,
            BLOCK_C=bc, BLOCK_N=bn, num_warps=warps, num_stages=_NUM_STAGES,
        )
    # One fixed-shape torch reduction over the programs' partials: deterministic (no atomics).
    return dx, part[:, 0].sum(dim=0), part[:, 1].sum(dim=0)
