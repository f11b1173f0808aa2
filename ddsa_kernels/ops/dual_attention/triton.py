"""The "triton" backend: fused dual self-attention in Triton.

Forward, per (b, h) with q, k, v of shape (C, N):

1. ``_outer_sweep_kernel``  — Gram sweep: q kᵀ (C×C) and the squared row norms, fp32, tile by
   tile over N. When B·H is too small to fill the GPU, N is split over a second grid axis; each
   split writes its partial sums and the epilogue adds them in a fixed order (no atomics, so the
   result is bitwise reproducible).
2. ``_forward_epilogue_kernel`` — C×C work: normalise, × τ_h, per-row k-th-largest threshold
   (counting, per score, the larger ones in its row), masked softmaxes, A = Σ w_i A_i; one
   program per block of 16 rows.
3. ``_forward_apply_kernel`` — output sweep: out = A v, in the input dtype.

Backward: the same outer-product sweep gives dA = dO vᵀ, ``_backward_epilogue_kernel`` does the
C×C math of the backward (the Triton twin of
:func:`ddsa_kernels.ops.dual_attention.reference.backward_epilogue`), and
``_backward_apply_kernel`` writes dq = P k − s_q⊙q, dk = Pᵀ q − s_k⊙k and dv = Aᵀ dO in one
launch. dτ and dw are reduced over (B, H) from per-(b, h) partials in a fixed order.

Autograd (``ddsa_kernels.dual_attention``) saves only q, k, v and the O(C²) statistics (probs, gram, norms).

Precision. Accumulation is fp32 everywhere. The C×C fp32 matrices (A, P, Pᵀ, Aᵀ) multiply
fp16/bf16 tiles as a scaled hi + lo pair in the tile's dtype (each row divided by its max |·|,
so fp16 cannot overflow): two tensor-core products that keep ~22 (fp16) / ~16 (bf16) bits of
the fp32 matrix instead of rounding it to the I/O precision (see _apply_tiles). fp32 inputs
use 3×TF32 products ("tf32" when ``torch.backends.cuda.matmul.allow_tf32`` is set).

Launch configurations are chosen per architecture family (_SWEEP_CONFIGS, by the device's
compute capability): every one compiles without register spills and fits the shared memory of a
block on sm_80, sm_86, sm_89 and sm_90 (checked offline with ptxas); they have not been timed on
a GPU yet.

On CPU the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``), for tests.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
import triton  # an ImportError here is reported by the backend registry
import triton.language as tl

from .._triton_common import INTERPRET as _INTERPRET
from .._triton_common import availability, device_guard  # noqa: F401  (availability: read by the registry)

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# A split of the N axis covers at least this many tiles (a program that reads fewer spends a
# large share of its time on start-up and on writing its C×C partial sums).
_MIN_TILES_PER_SPLIT = 8
# The partial sums written by all splits (S·(C² + 2C)·4 bytes, read back once by the tree
# reduction) stay below this fraction of the bytes the sweep reads (2·C·N·elem).
_PARTIAL_TRAFFIC_FRACTION = 1 / 32
# Splits summed side by side by one program of the tree reduction (rows of its tile).
_REDUCE_BLOCK_S = 32
_REDUCE_BLOCK_E = 128


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _mm(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b. UPCAST: the interpreter multiplies bf16 (stored as uint16) wrongly."""
    if UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PREC)
    else:
        out = tl.dot(a, b, acc, input_precision=PREC)
    return out


@triton.jit
def _tile_offsets(s_c, s_n, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, WIDE: tl.constexpr):
    """Element offsets of a (BLOCK_C, BLOCK_N) tile; int64 only when int32 could overflow."""
    rows = tl.arange(0, BLOCK_C)
    cols = tl.arange(0, BLOCK_N)
    if WIDE:
        offs = rows.to(tl.int64)[:, None] * s_c + cols.to(tl.int64)[None, :] * s_n
    else:
        offs = rows[:, None] * s_c + cols[None, :] * s_n
    return offs


@triton.jit
def _epilogue_rows(n_row_blocks, H, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """An epilogue program's (b·H + h as int64, row block, h, its rows, the BLOCK_C columns, the offsets of
    its (rows, columns) in a BLOCK_C × BLOCK_C tile)."""
    pid = tl.program_id(0)
    bh = (pid // n_row_blocks).to(tl.int64)
    rb = pid % n_row_blocks
    h = bh % H
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    block = rows[:, None] * BLOCK_C + cols[None, :]
    return bh, rb, h, rows, cols, block


@triton.jit
def _square_masks(rows, cols, C):
    """(rows < C, cols < C, both, the offsets of (rows, cols) in a C × C matrix)."""
    row_ok = rows < C
    col_ok = cols < C
    ok = row_ok[:, None] & col_ok[None, :]
    cc = rows[:, None] * C + cols[None, :]
    return row_ok, col_ok, ok, cc


@triton.jit
def _apply_program(pid, n_tiles, tiles_per_prog, n_progs, H, BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr):
    """An apply program's (first of its BLOCK_M output rows, b·H + h, b and h as int64, its range of N
    tiles t_lo .. t_hi), from its index ``pid`` over (bh, tile range, row block)."""
    row0 = (pid % (BLOCK_C // BLOCK_M)) * BLOCK_M
    pid = pid // (BLOCK_C // BLOCK_M)
    bh = pid // n_progs
    t_lo = (pid % n_progs) * tiles_per_prog
    t_hi = tl.minimum(t_lo + tiles_per_prog, n_tiles)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    return row0, bh, b, h, t_lo, t_hi


@triton.jit
def _outer_sweep_kernel(
    a_ptr, b_ptr, part_ptr,
    C, N, H,
    sa_b, sa_h, sa_c, sa_n,
    sb_b, sb_h, sb_c, sb_n,
    n_tiles, tiles_per_split, n_splits,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, WITH_NORMS: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
):
    """part[bh, split] = Σ_n a[:, n] b[:, n]ᵀ over this split's tiles (BC² values), then (with
    norms) Σ a² and Σ b² per row (2·BC values).

    Program (bh, split, row block): rows rb·BLOCK_M .. of a against all of b (BLOCK_M < BLOCK_C
    keeps the accumulator in registers where a block has fewer of them); each row block writes
    its rows of the BC² values and of both norms.
    """
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rows = tl.arange(0, BLOCK_C)
    if BLOCK_M == BLOCK_C:  # one row block: the same row indices and masks for a and b
        rb = 0
        rows_m = rows
    else:
        rb = tl.program_id(2)
        rows_m = rb * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < C
    a_base = a_ptr + b * sa_b + h * sa_h
    if BLOCK_M != BLOCK_C:
        a_base += (rb * BLOCK_M).to(tl.int64) * sa_c
    b_base = b_ptr + b * sb_b + h * sb_h
    a_offs = _tile_offsets(sa_c, sa_n, BLOCK_M, BLOCK_N, WIDE)
    b_offs = _tile_offsets(sb_c, sb_n, BLOCK_C, BLOCK_N, WIDE)
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    # Squares accumulate element-wise; the row sums happen once, after the loop.
    sqa = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    sqb = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    t_lo = split * tiles_per_split
    t_hi = tl.minimum(t_lo + tiles_per_split, n_tiles)
    a_tile = a_base + t_lo.to(tl.int64) * BLOCK_N * sa_n
    b_tile = b_base + t_lo.to(tl.int64) * BLOCK_N * sb_n
    for t in range(t_lo, t_hi):
        col_ok = ((t * BLOCK_N + cols) < N)[None, :]
        a = tl.load(a_tile + a_offs, mask=(rows_m < C)[:, None] & col_ok, other=0.0)
        bt = tl.load(b_tile + b_offs, mask=row_ok[:, None] & col_ok, other=0.0)
        a_tile += BLOCK_N * sa_n
        b_tile += BLOCK_N * sb_n
        acc = _mm(a, tl.trans(bt), acc, PREC, UPCAST)
        if WITH_NORMS:
            af = a.to(tl.float32)
            bf = bt.to(tl.float32)
            sqa += af * af
            sqb += bf * bf
    pid = bh.to(tl.int64) * n_splits + split
    if WITH_NORMS:
        out = part_ptr + pid * (BLOCK_C * BLOCK_C + 2 * BLOCK_C)
    else:
        out = part_ptr + pid * (BLOCK_C * BLOCK_C)
    tl.store(out + rows_m[:, None] * BLOCK_C + rows[None, :], acc)
    if WITH_NORMS:
        tl.store(out + BLOCK_C * BLOCK_C + rows_m, tl.sum(sqa, axis=1))
        if BLOCK_M == BLOCK_C:
            tl.store(out + BLOCK_C * BLOCK_C + BLOCK_C + rows, tl.sum(sqb, axis=1))
        else:
            mine = (rows >= rb * BLOCK_M) & (rows < rb * BLOCK_M + BLOCK_M)
            tl.store(out + BLOCK_C * BLOCK_C + BLOCK_C + rows, tl.sum(sqb, axis=1), mask=mine)


@triton.jit
def _reduce_splits_kernel(
    src_ptr, dst_ptr, n_splits, n_elems,
    BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """dst[bh, e] = Σ_s src[bh, s, e]: program (bh, block of BLOCK_E elements).

    A (BLOCK_S, BLOCK_E) accumulator adds splits s, s + BLOCK_S, ... element-wise, then one
    tl.sum over the BLOCK_S rows (a tree whose shape depends only on the constexprs). Every
    addition happens in an order fixed by (n_splits, BLOCK_S): bitwise reproducible, and
    n_splits / BLOCK_S + log2(BLOCK_S) dependent adds instead of n_splits.
    """
    bh = tl.program_id(0).to(tl.int64)
    elems = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = elems < n_elems
    lanes = tl.arange(0, BLOCK_S)
    src = src_ptr + bh * n_splits * n_elems + lanes.to(tl.int64)[:, None] * n_elems + elems[None, :]
    acc = tl.zeros((BLOCK_S, BLOCK_E), dtype=tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        mask = ((s0 + lanes) < n_splits)[:, None] & e_ok[None, :]
        acc += tl.load(src, mask=mask, other=0.0)
        src += BLOCK_S * n_elems
    tl.store(dst_ptr + bh * n_elems + elems, tl.sum(acc, axis=0), mask=e_ok)


@triton.jit
def _forward_epilogue_kernel(
    sums_ptr, temp_ptr, w_ptr,
    probs_ptr, gram_ptr, norms_ptr, attn_ptr,
    C, H, n_row_blocks, eps,
    KEEP: tl.constexpr, NB: tl.constexpr, HAS_SPARSE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Per (b, h, block of BLOCK_R rows): Gram sums → gram, norms, branch softmaxes, A.

    sums: (BH, BC·BC + 2·BC) — q kᵀ summed over N, then ‖q_r‖², ‖k_r‖² (the reduced splits).

    Rows are independent here, so a (b, h) is spread over C/BLOCK_R programs.
    """
    bh, rb, h, rows, cols, block = _epilogue_rows(n_row_blocks, H, BLOCK_C, BLOCK_R)
    sums = sums_ptr + bh * (BLOCK_C * BLOCK_C + 2 * BLOCK_C)
    qk = tl.load(sums + block)
    sqq = tl.load(sums + BLOCK_C * BLOCK_C + rows)
    sqk = tl.load(sums + BLOCK_C * BLOCK_C + BLOCK_C + cols)
    norm_q = tl.sqrt(sqq)
    norm_k = tl.sqrt(sqk)
    gram = qk / (tl.maximum(norm_q, eps)[:, None] * tl.maximum(norm_k, eps)[None, :])
    tau = tl.load(temp_ptr + h)
    scores = gram * tau

    row_ok, col_ok, ok, cc = _square_masks(rows, cols, C)
    gram_rows = gram_ptr + bh * C * C + rows * C
    tl.store(gram_rows[:, None] + cols[None, :], gram, mask=ok)
    tl.store(norms_ptr + bh * 2 * C + rows, norm_q, mask=row_ok)
    tl.store(norms_ptr + bh * 2 * C + C + cols, norm_k, mask=cols + rb * BLOCK_C < C)  # row block 0 only

    masked = tl.where(col_ok[None, :], scores, float("-inf"))
    if HAS_SPARSE:
        # above[r, c] = #{j : S_rj > S_rc}. S_rc is ≥ the k-th largest of its row exactly when
        # fewer than k values exceed it: ties at the threshold are all kept. The columns S[:, j]
        # come back from the gram rows just stored (bitwise the same products with τ).
        tl.debug_barrier()
        above = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.int32)
        for j in range(C):
            s_j = tl.load(gram_rows + j, mask=row_ok, other=0.0) * tau
            above += (s_j[:, None] > scores).to(tl.int32)
    attn = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(NB):
        if KEEP[i] == 0:
            x = masked
        else:
            x = tl.where(above < KEEP[i], masked, float("-inf"))
        row_max = tl.max(x, axis=1)
        e = tl.exp(x - row_max[:, None])
        p = e / tl.sum(e, axis=1)[:, None]
        tl.store(probs_ptr + (bh * NB + i) * C * C + cc, p, mask=ok)
        attn += tl.load(w_ptr + i) * p
    tl.store(attn_ptr + bh * (BLOCK_C * BLOCK_C) + block, tl.where(ok, attn, 0.0))


@triton.jit
def _backward_epilogue_kernel(
    sums_ptr, probs_ptr, gram_ptr, norms_ptr, temp_ptr, w_ptr,
    p_ptr, attn_ptr, scale_q_ptr, ck_ptr, dtemp_ptr, dw_ptr,
    C, H, n_row_blocks, eps,
    NB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Per (b, h, block of rows): dA → P, A, s_q, and partial sums of c_k, dτ, dw.

    sums: (BH, BC·BC) — dA = dO vᵀ summed over N (the reduced splits).
    """
    bh, rb, h, rows, cols, block = _epilogue_rows(n_row_blocks, H, BLOCK_C, BLOCK_R)
    d_attn = tl.load(sums_ptr + bh * (BLOCK_C * BLOCK_C) + block)

    row_ok, col_ok, ok, cc = _square_masks(rows, cols, C)
    gram = tl.load(gram_ptr + bh * C * C + cc, mask=ok, other=0.0)
    d_scores = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    attn = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    part = bh * n_row_blocks + rb
    for i in tl.static_range(NB):
        a_i = tl.load(probs_ptr + (bh * NB + i) * C * C + cc, mask=ok, other=0.0)
        w_i = tl.load(w_ptr + i)
        tl.store(dw_ptr + part * NB + i, tl.sum(tl.sum(d_attn * a_i, axis=1), axis=0))
        wd = w_i * d_attn
        d_scores += a_i * (wd - tl.sum(wd * a_i, axis=1)[:, None])
        attn += w_i * a_i
    tl.store(dtemp_ptr + part, tl.sum(tl.sum(d_scores * gram, axis=1), axis=0))

    d_gram = tl.load(temp_ptr + h) * d_scores
    dg_g = d_gram * gram
    tl.store(ck_ptr + part * BLOCK_C + cols, tl.sum(dg_g, axis=0))  # c_k: summed by the dk sweep
    norm_q = tl.load(norms_ptr + bh * 2 * C + rows, mask=row_ok, other=0.0)
    norm_k = tl.load(norms_ptr + bh * 2 * C + C + cols, mask=col_ok, other=0.0)
    nq = tl.maximum(norm_q, eps)
    nk = tl.maximum(norm_k, eps)
    p = d_gram / (nq[:, None] * nk[None, :])
    # F.normalize divides by max(‖x‖, eps): rows below eps get no projection term.
    scale_q = tl.where(norm_q >= eps, tl.sum(dg_g, axis=1) / (nq * nq), 0.0)
    tl.store(scale_q_ptr + bh * BLOCK_C + rows, scale_q)
    tl.store(p_ptr + bh * (BLOCK_C * BLOCK_C) + block, tl.where(ok, p, 0.0))
    tl.store(attn_ptr + bh * (BLOCK_C * BLOCK_C) + block, tl.where(ok, attn, 0.0))


@triton.jit
def _apply_tiles(
    m_ptr, x_ptr, sx_c, sx_n, y_ptr, sy_c, sy_n, y_scale, dst_ptr, sd_c, sd_n,
    C, N, t_lo, t_hi, row0,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, TRANS: tl.constexpr,
    HAS_Y: tl.constexpr, SPLIT: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
    WIDE: tl.constexpr,
):
    """dst[r, tile] = M[r, :] @ x[:, tile] (− y_scale ⊙ y[r, tile]) for the BLOCK_M rows r from
    row0 and tiles t_lo..t_hi of one (b, h).

    M: padded fp32 (BLOCK_C, BLOCK_C) at m_ptr (its transpose if TRANS). SPLIT: M is applied to
    fp16/bf16 tiles as diag(scale)·(hi + lo) in the tile dtype, |hi| ≤ 1 row-wise — two tensor
    core products keeping ~22 (fp16) / ~16 (bf16) bits of M, without fp16 overflow.
    x_ptr, y_ptr, dst_ptr point at (b, h); y_scale holds BLOCK_M rows (or is a scalar).
    """
    rows = tl.arange(0, BLOCK_C)
    rows_m = row0 + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < C
    m_ok = rows_m < C
    x_offs = _tile_offsets(sx_c, sx_n, BLOCK_C, BLOCK_N, WIDE)
    d_offs = _tile_offsets(sd_c, sd_n, BLOCK_M, BLOCK_N, WIDE)
    if HAS_Y:
        y_offs = _tile_offsets(sy_c, sy_n, BLOCK_M, BLOCK_N, WIDE)
    if TRANS:
        m = tl.load(m_ptr + rows[None, :] * BLOCK_C + rows_m[:, None])
    else:
        m = tl.load(m_ptr + rows_m[:, None] * BLOCK_C + rows[None, :])
    if SPLIT:
        dt = x_ptr.dtype.element_ty
        amax = tl.max(tl.abs(m), axis=1)
        m_scale = tl.where(amax > 0.0, amax, 1.0)[:, None]
        ms = m / m_scale
        m_hi = ms.to(dt)
        m_lo = (ms - m_hi.to(tl.float32)).to(dt)
    start = t_lo.to(tl.int64) * BLOCK_N
    x_tile = x_ptr + start * sx_n
    y_tile = y_ptr + start * sy_n + row0.to(tl.int64) * sy_c
    d_tile = dst_ptr + start * sd_n + row0.to(tl.int64) * sd_c
    for t in range(t_lo, t_hi):
        col_ok = ((t * BLOCK_N + cols) < N)[None, :]
        x = tl.load(x_tile + x_offs, mask=row_ok[:, None] & col_ok, other=0.0)
        mask = m_ok[:, None] & col_ok
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if SPLIT:
            acc = _mm(m_lo, x, acc, PREC, UPCAST)
            acc = _mm(m_hi, x, acc, PREC, UPCAST)
            acc = acc * m_scale
        else:
            acc = _mm(m, x, acc, PREC, UPCAST)
        if HAS_Y:
            y = tl.load(y_tile + y_offs, mask=mask, other=0.0)
            acc -= y_scale * y.to(tl.float32)
        tl.store(d_tile + d_offs, acc.to(dst_ptr.dtype.element_ty), mask=mask)
        x_tile += BLOCK_N * sx_n
        y_tile += BLOCK_N * sy_n
        d_tile += BLOCK_N * sd_n


@triton.jit
def _forward_apply_kernel(
    attn_ptr, v_ptr, out_ptr,
    C, N, H,
    sv_b, sv_h, sv_c, sv_n,
    so_b, so_h, so_c, so_n,
    n_tiles, tiles_per_prog, n_progs,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
):
    """out = A v. Flat grid: program = (bh, range of N tiles, block of BLOCK_M output rows); the
    row blocks of a tile range are neighbours, so v is read from DRAM about once."""
    row0, bh, b, h, t_lo, t_hi = _apply_program(tl.program_id(0), n_tiles, tiles_per_prog, n_progs, H, BLOCK_C,
                                                BLOCK_M)
    _apply_tiles(
        attn_ptr + bh.to(tl.int64) * (BLOCK_C * BLOCK_C),
        v_ptr + b * sv_b + h * sv_h, sv_c, sv_n, v_ptr, sv_c, sv_n, 0.0,
        out_ptr + b * so_b + h * so_h, so_c, so_n,
        C, N, t_lo, t_hi, row0, BLOCK_C, BLOCK_N, BLOCK_M, False, False, SPLIT, PREC, UPCAST, WIDE,
    )


@triton.jit
def _backward_apply_kernel(
    p_ptr, attn_ptr, scale_q_ptr, ck_ptr, norms_ptr,
    q_ptr, k_ptr, g_ptr, dq_ptr, dk_ptr, dv_ptr,
    C, N, H, n_row_blocks, eps,
    sq_b, sq_h, sq_c, sq_n,
    sk_b, sk_h, sk_c, sk_n,
    sg_b, sg_h, sg_c, sg_n,
    sd_b, sd_h, sd_c, sd_n,
    n_tiles, tiles_per_prog, n_progs,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
):
    """dq = P k − s_q⊙q, dk = Pᵀ q − s_k⊙k, dv = Aᵀ dO.

    Flat grid: program = (bh, range of N tiles, block of BLOCK_M output rows, which of the
    three). One C×C operand (BLOCK_M of its rows) per program keeps registers/shared memory
    small at C = 128 even in fp32; the dq and dk programs of a tile range are neighbours, so the
    second read of q and k mostly hits L2.
    """
    pid = tl.program_id(0)
    which = pid % 3
    row0, bh, b, h, t_lo, t_hi = _apply_program(pid // 3, n_tiles, tiles_per_prog, n_progs, H, BLOCK_C, BLOCK_M)
    bh64 = bh.to(tl.int64)
    square = bh64 * (BLOCK_C * BLOCK_C)
    rows = row0 + tl.arange(0, BLOCK_M)
    q = q_ptr + b * sq_b + h * sq_h
    k = k_ptr + b * sk_b + h * sk_h
    d_off = b * sd_b + h * sd_h
    if which == 0:
        scale_q = tl.load(scale_q_ptr + bh64 * BLOCK_C + rows)[:, None]
        _apply_tiles(p_ptr + square, k, sk_c, sk_n, q, sq_c, sq_n, scale_q, dq_ptr + d_off, sd_c, sd_n,
                     C, N, t_lo, t_hi, row0, BLOCK_C, BLOCK_N, BLOCK_M, False, True, SPLIT, PREC, UPCAST, WIDE)
    elif which == 1:
        c_k = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for rb in range(n_row_blocks):  # fixed order: deterministic
            c_k += tl.load(ck_ptr + (bh64 * n_row_blocks + rb) * BLOCK_C + rows)
        norm_k = tl.load(norms_ptr + bh64 * 2 * C + C + rows, mask=rows < C, other=0.0)
        nk = tl.maximum(norm_k, eps)
        scale_k = tl.where(norm_k >= eps, c_k / (nk * nk), 0.0)[:, None]
        _apply_tiles(p_ptr + square, q, sq_c, sq_n, k, sk_c, sk_n, scale_k, dk_ptr + d_off, sd_c, sd_n,
                     C, N, t_lo, t_hi, row0, BLOCK_C, BLOCK_N, BLOCK_M, True, True, SPLIT, PREC, UPCAST, WIDE)
    else:
        g = g_ptr + b * sg_b + h * sg_h
        _apply_tiles(attn_ptr + square, g, sg_c, sg_n, g, sg_c, sg_n, 0.0, dv_ptr + d_off, sd_c, sd_n,
                     C, N, t_lo, t_hi, row0, BLOCK_C, BLOCK_N, BLOCK_M, True, False, SPLIT, PREC, UPCAST, WIDE)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


class _SweepConfig(NamedTuple):
    """Launch configuration of the N-sweeps (outer-product sweeps and apply kernels)."""

    block_c: int
    block_n: int
    block_m: int  # rows of the C×C products per program of the sweeps (divides block_c)
    warps: int
    stages: int
    block_r: int  # rows per program of the C×C epilogues


# BLOCK_C -> (BLOCK_N, BLOCK_M, num_warps, num_stages) of the N-sweeps, per architecture family
# and precision ("low": fp16/bf16, "fp32": 3×TF32 products, which need more registers). tl.dot
# needs every dimension ≥ 16.
# Each entry is the largest tile that compiles without register spills and whose buffers fit the
# shared memory one block may use on that family (tests/triton_arch_check.py compiles them
# offline for sm_80, sm_86, sm_89 and sm_90 at C = 48 and 96; the other entries on sm_90 only).
# Hopper's wgmma keeps whole C×C products in one program. Ampere/Ada's mma holds its operands and
# accumulator in registers (and 3×TF32 the hi/lo halves of the C×C operand in shared memory), so
# from BLOCK_C = 128 a program computes BLOCK_M = 64 (fp16/bf16) or 32 (fp32) rows of them.
_SWEEP_CONFIGS = {
    "sm90": {  # H100/H200: 227 KB of shared memory per block
        "low": {16: (256, 16, 4, 3), 32: (256, 32, 8, 3), 64: (128, 64, 8, 3), 128: (64, 128, 8, 3),
                256: (32, 256, 8, 3)},
        "fp32": {16: (64, 16, 4, 2), 32: (32, 32, 8, 3), 64: (32, 64, 8, 3), 128: (16, 128, 8, 3),
                 256: (16, 256, 8, 3)},
    },
    "sm86": {  # RTX 30xx (sm_86), RTX 40xx / L4 / L40 (sm_89): 99 KB per block
        "low": {16: (256, 16, 4, 3), 32: (256, 32, 8, 3), 64: (128, 64, 8, 3), 128: (64, 64, 8, 3),
                256: (32, 64, 8, 3)},
        "fp32": {16: (64, 16, 4, 2), 32: (32, 32, 8, 3), 64: (32, 64, 8, 3), 128: (16, 32, 8, 3),
                 256: (16, 32, 8, 3)},
    },
}
# A100 (163 KB per block): registers, not shared memory, limit these tiles, the same as on sm_86.
_SWEEP_CONFIGS["sm80"] = _SWEEP_CONFIGS["sm86"]
# BLOCK_C beyond the tables (C > 256): smallest tiles, not compile-checked.
_FALLBACK_SWEEP = (16, 32, 8, 3)
# Table used without a GPU (interpreter, offline checks without an explicit arch).
_DEFAULT_CAPABILITY = (9, 0)
# The tree reduction of the splits and the C×C epilogues: element-wise work, one config for all.
_REDUCE_WARPS, _REDUCE_STAGES = 4, 2
_EPILOGUE_WARPS, _EPILOGUE_STAGES = 4, 1


def _arch_family(capability: tuple[int, int]) -> str:
    """Key of _SWEEP_CONFIGS for a compute capability, by the shared memory a block may use:
    sm_80/sm_87 (163 KB), sm_90 and later datacenter parts (227 KB), and the consumer parts
    sm_86/sm_89/sm_12x (99 KB). Unknown older parts get the smallest (sm86) table."""
    if capability in ((8, 0), (8, 7)):
        return "sm80"
    if capability[0] in (9, 10):
        return "sm90"
    return "sm86"


@functools.lru_cache(maxsize=None)
def _device_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _capability(device: Optional[torch.device]) -> tuple[int, int]:
    """Compute capability of a CUDA device (cached per device); _DEFAULT_CAPABILITY otherwise."""
    if device is None or device.type != "cuda" or _INTERPRET:
        return _DEFAULT_CAPABILITY
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_capability(index)


def _block_sizes(channels: int, dtype: torch.dtype, device: Optional[torch.device] = None, *,
                 arch: Optional[tuple[int, int]] = None) -> _SweepConfig:
    """Launch configuration for C channels on ``device`` (or on compute capability ``arch``, as
    the offline compile checks use it). C ≤ 256 is tuned; larger C still runs."""
    capability = arch if arch is not None else _capability(device)
    block_c = max(16, triton.next_power_of_2(channels))
    table = _SWEEP_CONFIGS[_arch_family(capability)]["low" if dtype in _LOW_PRECISION else "fp32"]
    block_n, block_m, warps, stages = table.get(block_c, _FALLBACK_SWEEP)
    return _SweepConfig(block_c, block_n, min(block_m, block_c), warps, stages, _row_blocks(block_c)[0])


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda" and not _INTERPRET:
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter runs programs one by one; a few splits are enough to test


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "tf32x3"
    return "tf32"  # ignored by tl.dot for fp16/bf16 operands


def _num_stages(default: int) -> int:
    return 1 if _INTERPRET else default


def _pick_splits(bh: int, n_tiles: int, block_n: int, channels: int, block_c: int, itemsize: int,
                 device: torch.device) -> int:
    """Number of N-splits of the reduction sweeps (1 when B·H programs already fill the GPU).

    The smallest of:
    * about one wave: 2 programs per SM over all (b, h) — more splits add partial sums without
      adding bandwidth;
    * n_tiles / _MIN_TILES_PER_SPLIT — each split streams ≥ 8 tiles;
    * the traffic cap: S splits write S·(BC² + 2·BC)·4 bytes of partial sums (read back once by
      the tree reduction) while the sweep reads 2·C·N·itemsize bytes; keeping the former below
      _PARTIAL_TRAFFIC_FRACTION (1/32) of the latter gives
      S ≤ 2·C·N·itemsize / (32 · 4 · (BC² + 2·BC)).
    Example (1, 1, 48, 1024²) fp16 on an H200 (132 SMs): wave 264, tiles 8192 / 8 = 1024, traffic
    2·48·2²⁰·2 / (128 · 4224) = 372 → 264 splits, 2.2 MB of partial sums (1.1 % of the 201 MB
    read), summed by the tree reduction in ⌈264/32⌉ + 5 dependent adds per element.
    """
    target = 2 * _sm_count(device)
    if bh >= target:
        return 1
    pixels = n_tiles * block_n
    traffic_cap = int(2 * channels * pixels * itemsize * _PARTIAL_TRAFFIC_FRACTION) // (
        4 * (block_c * block_c + 2 * block_c))
    return max(1, min(triton.cdiv(target, bh), n_tiles // _MIN_TILES_PER_SPLIT, traffic_cap))


def _tiles_per_program(bh: int, n_tiles: int, device: torch.device) -> int:
    """Tiles per program of the element-wise sweeps: about 4 waves of programs, at most 8 tiles."""
    return max(1, min(8, (n_tiles * bh) // (4 * _sm_count(device))))


def _outer_sweep(
    a: torch.Tensor, b: torch.Tensor, with_norms: bool, splits: Optional[int]
) -> tuple[torch.Tensor, int]:
    """a bᵀ (and squared row norms) summed over N: ((BH, BC² [+ 2·BC]) float32, number of splits)."""
    batch, heads, channels, pixels = a.shape
    block_c, block_n, block_m, warps, stages, _ = _block_sizes(channels, a.dtype, a.device)
    bh = batch * heads
    n_tiles = triton.cdiv(pixels, block_n)
    if splits is None:
        splits = _pick_splits(bh, n_tiles, block_n, channels, block_c, a.element_size(), a.device)
    n_splits = max(1, min(int(splits), n_tiles, 65535))
    tiles_per_split = triton.cdiv(n_tiles, n_splits) if n_tiles else 0
    if tiles_per_split:
        n_splits = triton.cdiv(n_tiles, tiles_per_split)  # no empty split
    n_elems = block_c * block_c + (2 * block_c if with_norms else 0)
    part = torch.empty((bh, n_splits, n_elems), dtype=torch.float32, device=a.device)
    _outer_sweep_kernel[(bh, n_splits, block_c // block_m)](
        a, b, part,
        channels, pixels, heads,
        *a.stride(), *b.stride(),
        n_tiles, tiles_per_split, n_splits,
        BLOCK_C=block_c, BLOCK_N=block_n, BLOCK_M=block_m, WITH_NORMS=with_norms,
        PREC=_dot_precision(a.dtype), UPCAST=_INTERPRET and a.dtype == torch.bfloat16,
        WIDE=_needs_wide(block_c, block_n, a, b),
        num_warps=warps, num_stages=_num_stages(stages),
    )
    if n_splits == 1:
        return part.view(bh, n_elems), 1
    sums = torch.empty((bh, n_elems), dtype=torch.float32, device=a.device)
    _reduce_splits_kernel[(bh, triton.cdiv(n_elems, _REDUCE_BLOCK_E))](
        part, sums, n_splits, n_elems,
        BLOCK_S=_REDUCE_BLOCK_S, BLOCK_E=_REDUCE_BLOCK_E,
        num_warps=_REDUCE_WARPS, num_stages=_num_stages(_REDUCE_STAGES),
    )
    return sums, n_splits


def _needs_wide(block_c: int, block_n: int, *tensors: torch.Tensor) -> bool:
    """Whether in-tile element offsets (row·s_c + col·s_n) can overflow int32."""
    return any(block_c * abs(t.stride(2)) + block_n * abs(t.stride(3)) >= 2**31 for t in tensors)


def _row_blocks(block_c: int) -> tuple[int, int]:
    """(BLOCK_R, number of row blocks) of the C×C epilogues."""
    block_r = min(block_c, 16)
    return block_r, block_c // block_r




def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    keep: tuple[int, ...],
    eps: float,
    *,
    splits: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend forward (see ddsa_kernels._registry): q, k, v (B, H, C, N) → (out, probs, gram, norms).

    ``splits`` forces the number of N-splits of the Gram sweep (tests); default: heuristic.
    """
    with device_guard(q, k, v):
        return _forward(q, k, v, temperature, weights, keep, eps, splits)


def _forward(q, k, v, temperature, weights, keep, eps, splits):
    batch, heads, channels, pixels = q.shape
    device, dtype = q.device, q.dtype
    bh = batch * heads
    n_branches = len(keep)
    f32 = dict(dtype=torch.float32, device=device)
    out = torch.empty((batch, heads, channels, pixels), dtype=dtype, device=device)
    probs = torch.empty((batch, heads, n_branches, channels, channels), **f32)
    gram = torch.empty((batch, heads, channels, channels), **f32)
    norms = torch.empty((batch, heads, 2, channels), **f32)
    if bh == 0:
        return out, probs, gram, norms
    block_c, block_n, block_m, warps, stages, block_r = _block_sizes(channels, dtype, device)
    n_row_blocks = block_c // block_r
    split = dtype in _LOW_PRECISION

    sums, _ = _outer_sweep(q, k, True, splits)
    attn = torch.empty((bh, block_c, block_c), **f32)
    _forward_epilogue_kernel[(bh * n_row_blocks,)](
        sums, temperature.contiguous(), weights.contiguous(),
        probs, gram, norms, attn,
        channels, heads, n_row_blocks, eps,
        KEEP=tuple(int(x) for x in keep), NB=n_branches, HAS_SPARSE=any(x != 0 for x in keep),
        BLOCK_C=block_c, BLOCK_R=block_r,
        num_warps=_EPILOGUE_WARPS, num_stages=_EPILOGUE_STAGES,
    )

    n_tiles = triton.cdiv(pixels, block_n)
    if n_tiles:
        per_prog = _tiles_per_program(bh * (block_c // block_m), n_tiles, device)
        n_progs = triton.cdiv(n_tiles, per_prog)
        _forward_apply_kernel[(bh * n_progs * (block_c // block_m),)](
            attn, v, out,
            channels, pixels, heads,
            *v.stride(), *out.stride(),
            n_tiles, per_prog, n_progs,
            BLOCK_C=block_c, BLOCK_N=block_n, BLOCK_M=block_m, SPLIT=split,
            PREC=_dot_precision(dtype), UPCAST=_INTERPRET and dtype == torch.bfloat16,
            WIDE=_needs_wide(block_c, block_n, v, out),
            num_warps=warps, num_stages=_num_stages(stages),
        )
    return out, probs, gram, norms


def backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    weights: torch.Tensor,
    probs: torch.Tensor,
    gram: torch.Tensor,
    norms: torch.Tensor,
    keep: tuple[int, ...],
    eps: float,
    *,
    splits: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend backward (see ddsa_kernels._registry) → (dq, dk, dv, d_temperature (H,), d_weights (n,))."""
    with device_guard(grad_out, q, k, v):
        return _backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps, splits)


def _backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps, splits):
    batch, heads, channels, pixels = q.shape
    device, dtype = q.device, q.dtype
    bh = batch * heads
    n_branches = len(keep)
    f32 = dict(dtype=torch.float32, device=device)
    dq, dk, dv = (torch.empty((batch, heads, channels, pixels), dtype=dtype, device=device) for _ in range(3))
    if bh == 0:
        return dq, dk, dv, torch.zeros((heads,), **f32), torch.zeros((n_branches,), **f32)
    block_c, block_n, block_m, warps, stages, block_r = _block_sizes(channels, dtype, device)
    n_row_blocks = block_c // block_r
    split = dtype in _LOW_PRECISION

    sums, _ = _outer_sweep(grad_out, v, False, splits)
    p_mat = torch.empty((bh, block_c, block_c), **f32)
    attn = torch.empty((bh, block_c, block_c), **f32)
    scale_q = torch.empty((bh, block_c), **f32)
    c_k = torch.empty((bh, n_row_blocks, block_c), **f32)
    d_temp = torch.empty((batch, heads, n_row_blocks), **f32)
    d_w = torch.empty((batch, heads, n_row_blocks, n_branches), **f32)
    _backward_epilogue_kernel[(bh * n_row_blocks,)](
        sums, probs.contiguous(), gram.contiguous(), norms.contiguous(),
        temperature.contiguous(), weights.contiguous(),
        p_mat, attn, scale_q, c_k, d_temp, d_w,
        channels, heads, n_row_blocks, eps,
        NB=n_branches, BLOCK_C=block_c, BLOCK_R=block_r,
        num_warps=_EPILOGUE_WARPS, num_stages=_EPILOGUE_STAGES,
    )

    n_tiles = triton.cdiv(pixels, block_n)
    if n_tiles:
        per_prog = _tiles_per_program(3 * bh * (block_c // block_m), n_tiles, device)
        n_progs = triton.cdiv(n_tiles, per_prog)
        _backward_apply_kernel[(3 * bh * n_progs * (block_c // block_m),)](
            p_mat, attn, scale_q, c_k, norms.contiguous(),
            q, k, grad_out, dq, dk, dv,
            channels, pixels, heads, n_row_blocks, eps,
            *q.stride(), *k.stride(), *grad_out.stride(), *dq.stride(),
            n_tiles, per_prog, n_progs,
            BLOCK_C=block_c, BLOCK_N=block_n, BLOCK_M=block_m, SPLIT=split,
            PREC=_dot_precision(dtype), UPCAST=_INTERPRET and dtype == torch.bfloat16,
            WIDE=_needs_wide(block_c, block_n, q, k, grad_out, dq),
            num_warps=warps, num_stages=_num_stages(stages),
        )
    # Fixed-shape torch reductions are deterministic (no atomics).
    return dq, dk, dv, d_temp.sum(dim=(0, 2)), d_w.sum(dim=(0, 1, 2))
