"""The index math of the CUDA sweeps (csrc/cuda/apply.cu, csrc/cuda/gram.cu), replayed on the CPU.

The launch buckets (C ≤ …: the template arguments), the tile constants (CP, TN, VEC, GROUPS, FETCH,
KG, KPIX, LD) and the thread → (row group, pixel group) maps are read from the .cu files and
evaluated here, so the replay follows the kernels when they change. The remaining per-element
index expressions the replay uses are pinned: each must appear verbatim in its kernel, so a kernel
edit that changes one fails here until the replay is updated with it. What is checked: the thread
maps are bijective, every output element is written exactly once, every pixel accumulated exactly
once, shared-memory indices stay inside their buffers and global reads inside [0, C) × [0, N).
On a GPU, the cuda backend's outputs at the bucket and tile boundaries are checked against the
float64 oracle as well.
"""
import itertools
import re
from pathlib import Path

import pytest
import torch

CUDA_SRC = Path(__file__).resolve().parents[1] / "csrc" / "cuda"


def _source(name: str) -> str:
    """The .cu file without comments, one statement per ';'."""
    text = (CUDA_SRC / name).read_text()
    return re.sub(r"//[^\n]*", "", text)


def _split_top_level(decl: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in decl:
        depth += 1 if ch in "([" else -1 if ch in ")]" else 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def definitions(name: str) -> dict[str, str]:
    """NAME → C++ expression of the first ``const[expr] int[64_t] NAME = EXPR`` in the file."""
    out: dict[str, str] = {}
    for decl in re.findall(r"\b(?:constexpr|const)\s+(?:int|int64_t)\s+([^;{}]*?);", _source(name)):
        for part in _split_top_level(decl):
            m = re.fullmatch(r"\s*(\w+)\s*=\s*(.+?)\s*", part, flags=re.S)
            if m and m.group(1) not in out:
                out[m.group(1)] = m.group(2)
    return out


def evaluate(expr: str, **values) -> int:
    """A C++ integer expression of non-negative ints in Python (``/`` → ``//``)."""
    py = re.sub(r"static_cast<[^>]+>", "", expr).replace("sizeof(T)", "elem").replace("/", "//")
    return eval(py, {"__builtins__": {}}, values)  # noqa: S307 (our own source)


def buckets(name: str, launcher: str) -> list[tuple[int, ...]]:
    """(C ≤ bound, template int arguments...) of ``if (C <= bound) return launcher<T, ...>``."""
    found = re.findall(rf"if \(C <= (\d+)\) return {launcher}<T, ([\d, ]+)>", _source(name))
    return [(int(bound), *map(int, args.split(","))) for bound, args in found]


def assert_pinned(name: str, *statements: str) -> None:
    src = re.sub(r"\s+", " ", _source(name))
    for stmt in statements:
        assert re.sub(r"\s+", " ", stmt) in src, f"{name} no longer contains `{stmt}`: update this replay"


APPLY = definitions("apply.cu")
GRAM = definitions("gram.cu")
THREADS = evaluate(APPLY["kThreads"])
assert THREADS == evaluate(GRAM["kThreads"])
APPLY_BUCKETS = buckets("apply.cu", "launch_jobs")  # (C ≤, RM, RN)
GRAM_BUCKETS = buckets("gram.cu", "launch_typed")    # (C ≤, R, TG, TILE)


def test_sources_hold_the_expected_definitions():
    """The parse found what the replay needs (a rename in the kernels fails here, loudly)."""
    for key in ("kThreads", "CP", "TN", "VEC", "GROUPS", "FETCH", "lane", "warp", "ty", "tx"):
        assert key in APPLY, key
    for key in ("kThreads", "CP", "KG", "KPIX", "LD", "VEC", "GROUPS", "FETCH", "lane", "kg", "local", "ty", "tx"):
        assert key in GRAM, key
    assert [b[0] for b in APPLY_BUCKETS] == [16, 32, 48, 64, 96, 128]
    assert [b[0] for b in GRAM_BUCKETS] == [16, 32, 48, 64, 96, 128]
    assert all(len(b) == 3 for b in APPLY_BUCKETS) and all(len(b) == 4 for b in GRAM_BUCKETS)


def test_a_kernel_edit_reaches_the_replay(tmp_path, monkeypatch):
    """An edited thread map is what the replay evaluates (and it breaks the bijection); an edited
    pinned expression fails the pin."""
    text = (CUDA_SRC / "apply.cu").read_text()
    assert "const int ty = (warp >> 2) * 4 + (lane >> 3);" in text
    (tmp_path / "apply.cu").write_text(text.replace("const int ty = (warp >> 2) * 4 + (lane >> 3);",
                                                    "const int ty = (warp >> 2) * 2 + (lane >> 3);")
                                           .replace("const int r = ty * RM + i;", "const int r = ty * RM + i + 1;"))
    monkeypatch.setattr(f"{__name__}.CUDA_SRC", tmp_path)
    monkeypatch.setattr(f"{__name__}.APPLY", definitions("apply.cu"))
    with pytest.raises(AssertionError):
        test_apply_thread_map_is_a_bijection_with_4x8_lanes_per_warp()
    with pytest.raises(AssertionError, match="no longer contains"):
        assert_pinned("apply.cu", "const int r = ty * RM + i;")


def test_the_largest_bucket_is_the_registry_limit():
    from ddsa_kernels import _registry

    assert APPLY_BUCKETS[-1][0] == GRAM_BUCKETS[-1][0] == _registry.backend_spec("cuda", op="dual_attention").max_channels


def ceil_div(a, b):
    return (a + b - 1) // b


def apply_thread(tid):
    lane, warp = evaluate(APPLY["lane"], tid=tid), evaluate(APPLY["warp"], tid=tid)
    return evaluate(APPLY["ty"], lane=lane, warp=warp), evaluate(APPLY["tx"], lane=lane, warp=warp)


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
    CP, TN, VEC = (evaluate(APPLY[k], RM=RM, RN=RN, elem=elem) for k in ("CP", "TN", "VEC"))
    GROUPS = evaluate(APPLY["GROUPS"], TN=TN, VEC=VEC)
    FETCH = evaluate(APPLY["FETCH"], CP=CP, GROUPS=GROUPS, kThreads=THREADS)
    assert_pinned("apply.cu", "r = idx / GROUPS, n = t_lo * TN + (idx % GROUPS) * VEC",
                  "r = idx / GROUPS, j0 = (idx % GROUPS) * VEC", "xs[r * TN + j0 + i] = e[i]",
                  "const int64_t n = t * TN + tx * RN;", "const int r = ty * RM + i;",
                  "const int c = idx / CP, r = idx % CP;",
                  "ranges = std::min<int64_t>(tiles, std::max<int64_t>(1, ceil_div(wave, slices)))",
                  "jobs.tiles_per_block = ceil_div(tiles, ranges);")
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
    lane = evaluate(GRAM["lane"], tid=tid)
    kg, local = evaluate(GRAM["kg"], tid=tid, TG=TG), evaluate(GRAM["local"], tid=tid, TG=TG)
    return kg, evaluate(GRAM["ty"], local=local, lane=lane, TG=TG), evaluate(GRAM["tx"], lane=lane, TG=TG)


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
    env = dict(R=R, TG=TG, TILE=TILE, elem=elem, kThreads=THREADS)
    for key in ("CP", "KG", "KPIX", "LD", "VEC", "GROUPS", "FETCH"):
        env[key] = evaluate(GRAM[key], **env)
    CP, KG, LD, VEC, KPIX, GROUPS, FETCH = (env[k] for k in ("CP", "KG", "LD", "VEC", "KPIX", "GROUPS", "FETCH"))
    assert_pinned("gram.cu", "t_begin = split * tiles / splits, t_end = (split + 1) * tiles / splits",
                  "const int idx = tid + kThreads * f, r = idx / GROUPS, j0 = (idx % GROUPS) * VEC;",
                  "xs[(j0 + i) * LD + r] = ex[i];", "const int n = kg * KPIX + m;",
                  "const int r = ty * R + i;", "const int c = tx * R + j;",
                  "if (r < C && c < C) out[r * C + c] = acc[i][j];")
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


# ---------------------------------------------------------------------------------------------
# on a GPU: the kernels' outputs at the boundaries the replay is about
# ---------------------------------------------------------------------------------------------


def _boundary_cases():
    """C at each bucket's bound and one above the previous one; N at 1, a tile minus and plus one."""
    cases = []
    previous = 0
    for bound, _, rn in APPLY_BUCKETS:
        tn = 32 * rn
        cases += [(previous + 1, tn + 1), (bound, tn - 1)]
        previous = bound
    return cases + [(128, 1), (33, 2 * 64 + 3)]


@pytest.mark.gpu
@pytest.mark.parametrize("channels,pixels", _boundary_cases())
def test_cuda_backend_at_bucket_and_tile_boundaries(channels, pixels):
    import op_cases
    from ddsa_kernels import build_info

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if build_info("dual_attention").get("cuda") != "available":
        pytest.skip(f"cuda backend not available: {build_info('dual_attention').get('cuda')}")
    topk = (None, max(1, channels * 7 // 10))
    temperature, weights = op_cases.params(2, 2)
    for dtype in (torch.float32, torch.float16):
        op_cases.check_case(*op_cases.make_inputs(1, 2, channels, pixels, seed=channels), temperature, weights,
                            topk, backend="cuda", device="cuda", dtype=dtype, layout="qkv_shifted")
