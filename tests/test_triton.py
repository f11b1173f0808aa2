"""The Triton backend against the float64 autograd oracle ``naive_dual_attention``.

Without a GPU the kernels run on CPU tensors under the Triton interpreter (conftest sets
TRITON_INTERPRET=1); on a CUDA machine the same tests run on the GPU, compiled. Tests marked
``gpu`` add the sizes of the real network and need CUDA without the interpreter.

Accuracy rule: flash-attention's, with the summand scale for dq and dk (see tests/op_cases.py,
which holds the helpers shared with the CUDA backend's tests).
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from ddsa_kernels import available_backends, build_info, dual_attention  # noqa: E402
from ddsa_kernels.testing import naive_dual_attention  # noqa: E402
from ddsa_kernels.ops.dual_attention import triton as tda  # noqa: E402
from ddsa_kernels._registry import backend_spec, device_types  # noqa: E402
from ddsa_kernels.module import ddsa_topk, drsformer_topk, restormer_topk  # noqa: E402

import op_cases  # noqa: E402
from op_cases import ATOL, F64, NAMES, assert_ties_kept, error_scales, make_inputs, params, run, tie_inputs  # noqa: E402,F401

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"

if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("no CUDA device and TRITON_INTERPRET is not set", allow_module_level=True)

BRANCHES = {"ddsa": ddsa_topk, "drsformer": drsformer_topk, "restormer": restormer_topk}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def check_case(*args, **kwargs):
    """:func:`op_cases.check_case` on the Triton backend and this module's device."""
    return op_cases.check_case(*args, backend="triton", device=DEVICE, **kwargs)


# ---------------------------------------------------------------------------------------------
# values and all five gradients vs the float64 oracle
# ---------------------------------------------------------------------------------------------

CASES = [
    # (B, H, C, N, branches, layout)
    (1, 1, 8, 37, "ddsa", "contiguous"),
    (2, 2, 16, 1, "drsformer", "qkv"),
    (1, 1, 48, 1000, "ddsa", "qkv"),
    (2, 4, 96, 37, "restormer", "contiguous"),
    (1, 2, 48, 37, "drsformer", "n_major"),
    (1, 3, 16, 1000, "restormer", "qkv"),
]


@pytest.mark.parametrize("batch,heads,channels,pixels,branches,layout", CASES)
def test_matches_reference_fp32(batch, heads, channels, pixels, branches, layout):
    topk = BRANCHES[branches](channels)
    temperature, weights = params(heads, len(topk))
    check_case(*make_inputs(batch, heads, channels, pixels), temperature, weights, topk, layout=layout)


@pytest.mark.parametrize("channels,pixels", [(8, 37), (96, 37)])
def test_keep_counts_one_and_all(channels, pixels):
    topk = (1, channels, None)
    temperature, weights = params(2, len(topk))
    check_case(*make_inputs(2, 2, channels, pixels, seed=3), temperature, weights, topk, layout="qkv")


@pytest.mark.slow
@pytest.mark.parametrize("channels", [8, 16, 48, 96])
@pytest.mark.parametrize("pixels", [1, 37, 1000])
@pytest.mark.parametrize("branches", ["ddsa", "drsformer", "restormer"])
def test_matches_reference_fp32_grid(channels, pixels, branches):
    topk = BRANCHES[branches](channels)
    temperature, weights = params(4, len(topk))
    check_case(*make_inputs(2, 4, channels, pixels, seed=channels + pixels), temperature, weights, topk, layout="qkv")


# ---------------------------------------------------------------------------------------------
# the split-N reduction path and determinism
# ---------------------------------------------------------------------------------------------


def backend_run(q, k, v, temperature, weights, keep, grad_out, splits):
    out, probs, gram, norms = tda.forward(q, k, v, temperature, weights, keep, 1e-12, splits=splits)
    grads = tda.backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, 1e-12, splits=splits)
    return (out, probs, gram, norms, *grads)


@pytest.mark.parametrize("splits", [3, 8])
def test_split_n_matches_reference(splits):
    """Forced N-splits of both reduction sweeps (the B·H-too-small path) vs the oracle."""
    batch, heads, channels, pixels = 1, 2, 16, 1000
    q64, k64, v64 = make_inputs(batch, heads, channels, pixels, seed=5)
    topk = ddsa_topk(channels)
    keep = tuple(0 if x is None else x for x in topk)
    temperature, weights = params(heads, len(topk))
    go64 = torch.randn(q64.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    f32 = [t.to(DEVICE, torch.float32) for t in (q64, k64, v64, temperature, weights, go64)]
    got = backend_run(*f32[:5], keep, f32[5], splits)
    assert tda._outer_sweep(f32[0], f32[1], True, splits)[1] > 1
    oracle = run(lambda *a: naive_dual_attention(*a, topk), q64, k64, v64, temperature, weights, go64)
    scales = error_scales(oracle, q64, k64, v64, temperature, weights, go64, topk)
    for g, ref, scale, name in zip((got[0], *got[4:]), oracle, scales, NAMES):
        assert (g.cpu().double() - ref).abs().max().item() <= 1e-5 * scale, name


def test_split_counts_agree_and_reruns_are_bitwise_equal():
    """The tree reduction of the N-splits: a rerun is bitwise identical, and 1, 5 or 41 splits
    (more than one reduction block of _REDUCE_BLOCK_S rows) agree to fp32 rounding."""
    batch, heads, channels, pixels = 1, 2, 16, 2600
    q64, k64, v64 = make_inputs(batch, heads, channels, pixels, seed=21)
    keep = (0, 11)
    temperature, weights = params(heads, 2)
    go64 = torch.randn(q64.shape, generator=torch.Generator().manual_seed(22), dtype=F64)
    args = [t.to(DEVICE, torch.float32) for t in (q64, k64, v64, temperature, weights)]
    go = go64.to(DEVICE, torch.float32)
    many = 41
    assert many > tda._REDUCE_BLOCK_S
    assert tda._outer_sweep(args[0], args[1], True, many)[1] == many
    runs = {s: backend_run(*args, keep, go, s) for s in (1, 5, many)}
    again = backend_run(*args, keep, go, many)
    for a, b in zip(runs[many], again):
        assert torch.equal(a, b)
    for s in (5, many):
        for a, b, name in zip(runs[s], runs[1], ("out", "probs", "gram", "norms", *NAMES[1:])):
            scale = b.abs().max().item()
            assert (a - b).abs().max().item() <= 1e-5 * scale, (s, name)


def test_int64_offset_path(monkeypatch):
    """The kernels switch to int64 in-tile offsets for > 2^31-element strides; force that path."""
    monkeypatch.setattr(tda, "_needs_wide", lambda *args: True)
    topk = ddsa_topk(16)
    temperature, weights = params(2, len(topk))
    check_case(*make_inputs(1, 2, 16, 37, seed=4), temperature, weights, topk, layout="n_major")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_row_blocked_sweeps_of_ampere_configs(monkeypatch, dtype):
    """The sm_86 table splits the C×C products of the sweeps into BLOCK_M-row programs (C = 96:
    BLOCK_C 128, BLOCK_M 32 in fp32 and 64 in fp16): values and gradients vs the oracle, and 3
    forced N-splits agree with one."""
    # The launchers read the capability through _capability(device) on every device (the interpreter's
    # default, or the real GPU's): replacing it selects the sm_86 table on CPU and on an H100 alike.
    monkeypatch.setattr(tda, "_capability", lambda device: (8, 6))
    cfg = tda._block_sizes(96, dtype, torch.device(DEVICE))
    assert cfg == tda._block_sizes(96, dtype, arch=(8, 6)) != tda._block_sizes(96, dtype, arch=(9, 0))
    assert cfg.block_m < cfg.block_c
    topk = drsformer_topk(96)
    temperature, weights = params(2, len(topk))
    check_case(*make_inputs(1, 2, 96, 45, seed=31), temperature, weights, topk, dtype=dtype, layout="qkv")
    q64, k64, v64 = make_inputs(1, 2, 96, 300, seed=32)
    go64 = torch.randn(q64.shape, generator=torch.Generator().manual_seed(33), dtype=F64)
    args = [t.to(DEVICE, dtype) for t in (q64, k64, v64)] + [temperature.to(DEVICE), weights.to(DEVICE)]
    keep = tuple(0 if x is None else x for x in topk)
    one, split = (backend_run(*args, keep, go64.to(DEVICE, dtype), s) for s in (1, 3))
    for a, b in zip(one, split):
        assert (a.float() - b.float()).abs().max().item() <= 1e-3 * max(1.0, b.float().abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_deterministic(dtype):
    """Two runs give bitwise-identical outputs, statistics and gradients (split path included)."""
    batch, heads, channels, pixels = 1, 2, 48, 1000
    q64, k64, v64 = make_inputs(batch, heads, channels, pixels, seed=7)
    keep = (0, channels * 7 // 10)
    temperature, weights = params(heads, 2)
    go = torch.randn(q64.shape, generator=torch.Generator().manual_seed(8), dtype=F64)
    args = [t.to(DEVICE, dtype) for t in (q64, k64, v64)] + [t.to(DEVICE, torch.float32) for t in (temperature, weights)]
    first = backend_run(*args, keep, go.to(DEVICE, dtype), 3)
    second = backend_run(*args, keep, go.to(DEVICE, dtype), 3)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------------------------


def test_zero_and_tiny_rows_follow_normalize_eps_rule():
    """All-zero rows and rows with 0 < ‖row‖ < eps in q and k: finite and equal to the oracle.

    F.normalize divides by max(‖x‖, eps), so such rows get a gradient of size 1/eps and no
    projection term; each row is checked on its own scale.
    """
    batch, heads, channels, pixels = 1, 2, 16, 37
    q64, k64, v64 = make_inputs(batch, heads, channels, pixels, seed=9)
    special_q, special_k = (3, 7), (5, 9)
    q64[0, 0, 3] = 0.0
    q64[0, 0, 7] *= 1e-14
    k64[0, 0, 5] = 0.0
    k64[0, 0, 9] *= 1e-14
    k64[0, 1, 0] = 0.0
    assert 0 < q64[0, 0, 7].norm() < 1e-12 and 0 < k64[0, 0, 9].norm() < 1e-12
    topk = ddsa_topk(channels)
    temperature, weights = params(heads, len(topk))
    got, oracle, _ = check_case(q64, k64, v64, temperature, weights, topk)
    for index, special in ((1, special_q), (2, special_k)):
        grad, ref = got[index][0, 0].cpu().double(), oracle[index][0, 0]
        rest = torch.ones(channels, dtype=torch.bool)
        rest[list(special)] = False
        assert (grad[rest] - ref[rest]).abs().max() <= 1e-5 * ref[rest].abs().max()
        for row in special:
            assert ref[row].abs().max() > 0
            assert (grad[row] - ref[row]).abs().max() <= 1e-5 * ref[row].abs().max(), (NAMES[index], row)


def test_ties_at_the_threshold_are_all_kept():
    """k rows drawn from a pool of 3 integer vectors: exact scores with 3 tie groups per row."""
    q64, k64, v64 = tie_inputs(1, 2, 16, 37)
    topk = (1, 5, 8, 11)
    temperature, weights = params(2, len(topk))
    check_case(q64, k64, v64, temperature, weights, topk)
    q, k, v = (t.to(DEVICE, torch.float32) for t in (q64, k64, v64))
    probs = tda.forward(q, k, v, temperature.float().to(DEVICE), weights.float().to(DEVICE), topk, 1e-12)[1].cpu()
    assert_ties_kept(probs, q64, k64, temperature, topk)


@pytest.mark.parametrize("tau", [1e4, 1e-4])
def test_extreme_temperatures(tau):
    batch, heads, channels, pixels = 2, 1, 16, 37
    topk = ddsa_topk(channels)
    _, weights = params(heads, len(topk))
    temperature = torch.full((heads,), tau, dtype=F64)
    check_case(*make_inputs(batch, heads, channels, pixels, seed=12), temperature, weights, topk)


# ---------------------------------------------------------------------------------------------
# low precision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "batch,heads,channels,pixels,branches,layout",
    [(1, 2, 48, 200, "ddsa", "qkv"), (2, 1, 16, 1000, "drsformer", "contiguous")],
)
def test_low_precision(dtype, batch, heads, channels, pixels, branches, layout):
    topk = BRANCHES[branches](channels)
    temperature, weights = params(heads, len(topk))
    check_case(*make_inputs(batch, heads, channels, pixels, seed=13), temperature, weights, topk, dtype=dtype, layout=layout)


def test_fp16_dot_products_beyond_fp16_range():
    """q kᵀ and ‖q‖² overflow fp16 (> 65504) but not fp32: accumulation must be fp32."""
    batch, heads, channels, pixels = 1, 2, 16, 1000
    q64, k64, v64 = make_inputs(batch, heads, channels, pixels, seed=14)
    q64, k64 = 30.0 * q64, 30.0 * k64 + 20.0
    q16, k16 = q64.half().double(), k64.half().double()
    assert (q16 @ k16.transpose(-1, -2)).abs().max() > 65504
    assert q16.square().sum(-1).max() > 65504
    topk = ddsa_topk(channels)
    temperature, weights = params(heads, len(topk))
    check_case(q64, k64, v64, temperature, weights, topk, dtype=torch.float16)


# ---------------------------------------------------------------------------------------------
# autograd memory, the public API, registration
# ---------------------------------------------------------------------------------------------


def test_saved_tensors_beyond_inputs_are_order_c_squared():
    batch, heads, channels, pixels = 2, 2, 16, 1000
    q64, k64, v64 = make_inputs(batch, heads, channels, pixels, seed=15)
    q, k, v = (t.to(DEVICE, torch.float32).requires_grad_() for t in (q64, k64, v64))
    topk = drsformer_topk(channels)
    temperature = torch.ones(heads, 1, 1, device=DEVICE, requires_grad=True)
    weights = torch.full((len(topk),), 0.2, device=DEVICE, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = dual_attention(q, k, v, temperature, weights, topk, backend="triton")
    inputs = {t.data_ptr() for t in (q, k, v)}
    extra = sum(t.numel() for t in saved if t.data_ptr() not in inputs)
    allowed = batch * heads * ((len(topk) + 1) * channels**2 + 2 * channels) + heads + len(topk)
    assert extra <= allowed, f"{extra} saved elements beyond q, k, v; expected O(B·H·C²) ≤ {allowed}"
    assert all(t.numel() < channels * pixels for t in saved if t.data_ptr() not in inputs)
    # out.sum() hands the backward a stride-0 (expanded) grad_out.
    out.sum().backward()
    temp64, w64 = temperature.detach().cpu().double().flatten(), weights.detach().cpu().double()
    ones = torch.ones(q64.shape, dtype=F64)
    oracle = run(lambda *a: naive_dual_attention(*a, topk), q64, k64, v64, temp64, w64, ones)
    scales = error_scales(oracle, q64, k64, v64, temp64, w64, ones, topk)
    assert temperature.grad.shape == temperature.shape
    got = (q.grad, k.grad, v.grad, temperature.grad.flatten(), weights.grad)
    for g, ref, scale, name in zip(got, oracle[1:], scales[1:], NAMES[1:]):
        assert (g.cpu().double() - ref).abs().max() <= 1e-5 * scale, name


def test_registered_and_available():
    assert "triton" in available_backends(op="dual_attention")
    assert build_info("dual_attention")["triton"] == "available"
    backend = backend_spec("triton", op="dual_attention")
    assert DEVICE in device_types(backend)
    assert set(backend.dtypes) == {torch.float16, torch.bfloat16, torch.float32}
    assert device_types(backend) == (("cuda", "cpu") if INTERPRET else ("cuda",))


def test_float64_is_refused_with_a_clear_error():
    q = torch.randn(1, 1, 8, 5, dtype=F64, device=DEVICE)
    with pytest.raises(RuntimeError, match="triton"):
        dual_attention(q, q, q, torch.ones(1, dtype=F64, device=DEVICE), torch.ones(1, dtype=F64, device=DEVICE),
                       (None,), backend="triton")


# ---------------------------------------------------------------------------------------------
# GPU (compiled kernels, no interpreter): the network's real sizes
# ---------------------------------------------------------------------------------------------

gpu = pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(), reason="needs CUDA without TRITON_INTERPRET")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "batch,heads,channels,pixels,branches",
    [(1, 1, 48, 128 * 128, "ddsa"), (4, 2, 96, 64 * 64 + 3, "ddsa"), (2, 4, 96, 1000, "drsformer"),
     (8, 8, 48, 37, "restormer"), (1, 1, 8, 1, "ddsa"), (1, 1, 128, 5000, "drsformer")],
)
def test_gpu_matches_reference(dtype, batch, heads, channels, pixels, branches):
    topk = BRANCHES[branches](channels)
    temperature, weights = params(heads, len(topk))
    check_case(*make_inputs(batch, heads, channels, pixels, seed=16), temperature, weights, topk, dtype=dtype, layout="qkv")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_deterministic_with_automatic_splits(dtype):
    """B·H = 1 at 128×128 pixels: the heuristic splits N; two runs stay bitwise equal."""
    q64, k64, v64 = make_inputs(1, 1, 48, 128 * 128, seed=17)
    args = [t.to(DEVICE, dtype) for t in (q64, k64, v64)]
    assert tda._outer_sweep(args[0], args[1], True, None)[1] > 1
    temp, w = (t.to(DEVICE, torch.float32) for t in params(1, 2))
    go = torch.randn_like(args[0])
    first = backend_run(*args, temp, w, (0, 33), go, None)
    second = backend_run(*args, temp, w, (0, 33), go, None)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_opcheck_with_triton_backend():
    """torch.library.opcheck of the custom op running the Triton kernels (schema, fake kernel, autograd)."""
    q, k, v = (t.to(DEVICE, torch.float32).requires_grad_() for t in make_inputs(1, 2, 8, 5, seed=18))
    temperature = torch.ones(2, device=DEVICE, requires_grad=True)
    weights = torch.full((2,), 0.2, device=DEVICE, requires_grad=True)
    torch.library.opcheck(
        torch.ops.ddsa.dual_attention_fwd.default, (q, k, v, temperature, weights, [0, 5], 1e-12, "triton")
    )


# ---------------------------------------------------------------------------------------------
# Compilation for the GPUs people train on, without a GPU
# ---------------------------------------------------------------------------------------------

ARCH_CHECK = os.path.join(os.path.dirname(__file__), "triton_arch_check.py")
# Shared memory one block may use (the opt-in maximum), bytes: A100 163 KB, RTX 30xx / RTX 40xx
# and L4 99 KB, H100/H200 227 KB.
MAX_SHARED = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}
ARCHS = list(MAX_SHARED)


def arch_resources(arch, dtype_name, channels):
    """{kernel: {regs, stack, shared, ...}} of every launched kernel, compiled offline for arch."""
    import json
    import subprocess
    import sys

    import triton

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.exists(os.path.join(tools, "cuobjdump")):
        pytest.skip("the Triton wheel has no NVIDIA backend tools (ptxas, cuobjdump)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, ARCH_CHECK, arch, dtype_name, str(channels)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


ARCH_TESTS = ("test_kernels_compile_without_spills", "test_kernels_compile_without_spills_grid",
              "test_kernels_compile_for_hopper_without_spills_grid")


@pytest.fixture(scope="session")
def arch_usage(request):
    """Resources of every (arch, dtype, C) case selected in this session, compiled up front by
    parallel subprocesses (DDSA_COMPILE_JOBS of them, default: one per CPU core)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = []
    for item in request.session.items:
        if getattr(item, "originalname", None) in ARCH_TESTS:
            params = item.callspec.params
            case = (params.get("arch", "sm_90"), params["dtype_name"], params["channels"])
            if case not in cases:
                cases.append(case)
    jobs = int(os.environ.get("DDSA_COMPILE_JOBS", os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {case: pool.submit(arch_resources, *case) for case in cases}
    return futures


def check_arch(arch_usage, arch, dtype_name, channels):
    """No register spills and shared memory within the arch's per-block limit, for every kernel."""
    usage = arch_usage[(arch, dtype_name, channels)].result()
    assert {"outer_fwd", "reduce_splits", "forward_apply", "backward_apply", "norm_bwd"} <= set(usage)
    case = f"{arch} {dtype_name} C={channels}"
    for kernel, res in usage.items():
        assert res["stack"] == 0, f"{kernel} ({case}) spills registers: {res}"
        assert res["shared"] <= MAX_SHARED[arch], f"{kernel} ({case}) needs too much shared memory: {res}"


# One representative case per architecture in the default run, the rest of the grid with -m slow.
DEFAULT_CASES = [(arch, "fp16", 96) for arch in ARCHS] + [("sm_90", "fp32", 96)]
GRID = [(a, d, c) for a in ARCHS for d in ("fp16", "bf16", "fp32") for c in (48, 96)]


@pytest.mark.parametrize("arch,dtype_name,channels", DEFAULT_CASES)
def test_kernels_compile_without_spills(arch_usage, arch, dtype_name, channels):
    """Every kernel the launchers run at C = 96 (the largest tiles in the paper's nets) compiles for
    the arch with its launch configuration."""
    check_arch(arch_usage, arch, dtype_name, channels)


@pytest.mark.slow
@pytest.mark.parametrize("arch,dtype_name,channels", [c for c in GRID if c not in DEFAULT_CASES])
def test_kernels_compile_without_spills_grid(arch_usage, arch, dtype_name, channels):
    check_arch(arch_usage, arch, dtype_name, channels)


@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("channels", [8, 16, 32, 64, 128])
def test_kernels_compile_for_hopper_without_spills_grid(arch_usage, dtype_name, channels):
    """Other channel counts (other block sizes) on sm_90."""
    check_arch(arch_usage, "sm_90", dtype_name, channels)


def test_block_sizes_per_arch(monkeypatch):
    """The launcher picks its table by the device's compute capability (looked up once per
    device); without a GPU (or under the interpreter) it uses _DEFAULT_CAPABILITY's. Every lookup
    is pinned here, so the same assertions hold on CPU and on any GPU."""
    hopper, ampere = (tda._block_sizes(96, torch.float32, arch=a) for a in ((9, 0), (8, 6)))
    assert (hopper.block_c, hopper.block_m, ampere.block_c, ampere.block_m) == (128, 128, 128, 32)
    assert tda._arch_family((8, 6)) == tda._arch_family((8, 9)) == "sm86"
    assert tda._arch_family((8, 0)) == "sm80"
    assert tda._arch_family((9, 0)) == "sm90"
    for default, want in (((8, 6), ampere), ((9, 0), hopper)):
        monkeypatch.setattr(tda, "_DEFAULT_CAPABILITY", default)
        assert tda._block_sizes(96, torch.float32) == want
        assert tda._block_sizes(96, torch.float32, torch.device("cpu")) == want
    monkeypatch.setattr(tda, "_INTERPRET", False)
    monkeypatch.setattr(tda, "_device_capability", lambda index: {0: (8, 6), 1: (9, 0)}[index])
    assert tda._block_sizes(96, torch.float32, torch.device("cuda", 0)) == ampere
    assert tda._block_sizes(96, torch.float32, torch.device("cuda", 1)) == hopper
    assert tda._block_sizes(96, torch.float32, torch.device("cpu")) == hopper  # the default, not a device's


@pytest.mark.gpu
def test_capability_is_read_from_the_gpu():
    if INTERPRET or not torch.cuda.is_available():
        pytest.skip("needs a CUDA device without the interpreter")
    tda._device_capability.cache_clear()
    assert tda._capability(torch.device("cuda")) == torch.cuda.get_device_capability()
