"""CPU model of the index math of the CUDA sweeps (csrc/cuda/apply.cu, csrc/cuda/gram.cu).

No GPU here, so the tiling loops are replayed in Python on small shapes: thread → (row group,
pixel group) maps are bijective, every output element is written exactly once, every pixel is
accumulated exactly once, shared-memory indices stay inside their buffers and global reads
stay inside [0, C) × [0, N). Keep the formulas in step with the kernels.
"""
import itertools

import pytest

THREADS = 256
APPLY_BUCKETS = [(16, 2, 4), (32, 4, 4), (48, 6, 4), (64, 8, 4), (96, 12, 2), (128, 16, 2)]  # C ≤, RM, RN
GRAM_BUCKETS = [(16, 2, 8, 64), (32, 4, 8, 64), (48, 6, 8, 64), (64, 8, 8, 64), (96, 6, 16, 32), (128, 8, 16, 32)]


def ceil_div(a, b):
    return (a + b - 1) // b


def apply_thread(tid):
    lane, warp = tid & 31, tid >> 5
    return (warp >> 2) * 4 + (lane >> 3), (warp & 3) * 8 + (lane & 7)


def test_apply_thread_map_is_a_bijection_with_4x8_lanes_per_warp():
    assert sorted(apply_thread(t) for t in range(THREADS)) == [(ty, tx) for ty in range(8) for tx in range(32)]
    for w in range(8):
        lanes = [apply_thread(32 * w + lane) for lane in range(32)]
        assert len({ty for ty, _ in lanes}) == 4 and len({tx for _, tx in lanes}) == 8


@pytest.mark.parametrize("C,N,elem,wave,jobs", [
    (5, 1, 2, 7, 1), (16, 130, 4, 3, 3), (17, 257, 2, 50, 1), (48, 1000, 2, 9, 3), (64, 64, 4, 1, 1),
    (80, 333, 2, 11, 3), (128, 129, 4, 5, 3), (96, 64 * 5, 2, 100, 1),
])
def test_apply_tiling_writes_each_output_once(C, N, elem, wave, jobs):
    _, RM, RN = next(b for b in APPLY_BUCKETS if C <= b[0])
    CP, TN, VEC = 8 * RM, 32 * RN, 16 // elem
    GROUPS = TN // VEC
    FETCH = ceil_div(CP * GROUPS, THREADS)
    assert CP >= C and TN % VEC == 0 and (CP * 4) % 16 == 0
    tiles = ceil_div(N, TN)
    ranges = min(tiles, max(1, ceil_div(wave, jobs)))  # BH = 1
    per_block = ceil_div(tiles, ranges)
    used = ceil_div(tiles, per_block)
    written = {}
    mt_size, xs_size = C * CP, C * TN
    for bx in range(used * jobs):
        job = bx % jobs
        t_lo = (bx // jobs) * per_block
        t_hi = min(t_lo + per_block, tiles)
        assert t_lo < t_hi
        for idx in range(0, C * CP):
            c, r = divmod(idx, CP)
            assert idx < mt_size and c < C
        for t in range(t_lo, t_hi):
            staged = set()
            for tid, f in itertools.product(range(THREADS), range(FETCH)):
                idx = tid + THREADS * f
                r, g = divmod(idx, GROUPS)
                if r >= C:
                    continue
                n = t * TN + g * VEC
                assert n % VEC == 0  # 16-byte aligned when the row start is
                for i in range(VEC):
                    assert r * TN + g * VEC + i < xs_size
                    staged.add((r, g * VEC + i))
            assert staged == {(r, j) for r in range(C) for j in range(TN)}
            for tid in range(THREADS):
                ty, tx = apply_thread(tid)
                assert (ty * RM) % (4 if RM % 4 == 0 else 2) == 0 and (tx * RN) % RN == 0
                assert (C - 1) * CP + ty * RM + RM <= mt_size
                assert (C - 1) * TN + tx * RN + RN <= xs_size
                n = t * TN + tx * RN
                if n >= N:
                    continue
                for i, j in itertools.product(range(RM), range(RN)):
                    r = ty * RM + i
                    if r < C and (N % RN == 0 or n + j < N):
                        assert n + j < N
                        key = (job, r, n + j)
                        assert key not in written
                        written[key] = True
    assert len(written) == jobs * C * N


def gram_thread(tid, TG):
    lane = tid & 31
    kg, local = divmod(tid, TG * TG)
    return kg, (local // 32) * (32 // TG) + lane // TG, lane % TG


@pytest.mark.parametrize("TG", [8, 16])
def test_gram_thread_map_is_a_bijection(TG):
    KG = THREADS // (TG * TG)
    got = sorted(gram_thread(t, TG) for t in range(THREADS))
    assert got == [(kg, ty, tx) for kg in range(KG) for ty in range(TG) for tx in range(TG)]
    for w in range(8):  # a warp lies in one k-group
        assert len({gram_thread(32 * w + lane, TG)[0] for lane in range(32)}) == 1


@pytest.mark.parametrize("C,N,elem,splits", [
    (3, 1, 2, 1), (16, 200, 4, 3), (33, 129, 2, 2), (48, 1000, 2, 5), (64, 64, 4, 1), (96, 97, 2, 4),
    (128, 300, 4, 3), (70, 0, 2, 1),
])
def test_gram_tiling_covers_each_pixel_and_output_once(C, N, elem, splits):
    _, R, TG, TILE = next(b for b in GRAM_BUCKETS if C <= b[0])
    CP, KG, LD, VEC = TG * R, THREADS // (TG * TG), TG * R + 4, 16 // elem
    KPIX, GROUPS = TILE // KG, TILE // VEC
    FETCH = ceil_div(CP * GROUPS, THREADS)
    assert CP >= C and TILE % KG == 0 and (LD * 4) % 16 == 0
    assert KG == 1 or CP * CP <= 2 * TILE * LD
    tiles = ceil_div(N, TILE)
    counted = {}
    outputs = set()
    for split in range(splits):
        t_begin, t_end = split * tiles // splits, (split + 1) * tiles // splits
        for t in range(t_begin, t_end):
            staged = set()
            for tid, f in itertools.product(range(THREADS), range(FETCH)):
                r, g = divmod(tid + THREADS * f, GROUPS)
                if r < C:
                    for i in range(VEC):
                        assert (g * VEC + i) * LD + r < TILE * LD
                        staged.add((g * VEC + i, r))
            assert staged == {(n, r) for n in range(TILE) for r in range(C)}
            for tid in range(THREADS):
                kg, ty, tx = gram_thread(tid, TG)
                if ty or tx:
                    continue  # one thread per k-group is enough to count pixels
                for m in range(KPIX):
                    n = t * TILE + kg * KPIX + m
                    assert (kg * KPIX + m) * LD + CP <= TILE * LD
                    if n < N:
                        counted[n] = counted.get(n, 0) + 1
        for tid in range(THREADS):
            kg, ty, tx = gram_thread(tid, TG)
            if kg == 0:
                for i, j in itertools.product(range(R), range(R)):
                    r, c = ty * R + i, tx * R + j
                    assert (ty * R + i) * CP + tx * R + j < CP * CP
                    if r < C and c < C:
                        assert (split, r, c) not in outputs
                        outputs.add((split, r, c))
    assert counted == {n: 1 for n in range(N)}
    assert len(outputs) == splits * C * C
