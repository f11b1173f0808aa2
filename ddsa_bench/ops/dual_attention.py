"""Op benchmark: the fused dual attention op against the authors'-style eager code and torch.compile.

For every shape × dtype × mode ("fwd" = inference forward under no_grad, "fwd+bwd" = forward
then ``torch.autograd.grad`` of all five inputs) it times, in one run:

* ``eager`` — ``dual_attention(..., backend="eager")``, the unfused authors'-style computation;
* ``compile(eager)`` — ``torch.compile(eager_dual_attention, dynamic=False)`` (recompiled per shape;
  a compile failure is recorded with its reason, not fatal);
* every package backend ``available_backends(device)`` lists (``reference``, ``cpu``, ``cuda``,
  ``triton``) — except Triton on CPU, whose interpreter is a correctness tool, not a backend to time;

plus a device copy of the op's DRAM-floor bytes, the speed-ups against both baselines, the
achieved bandwidth, the bytes saved for backward and (CUDA) the peak allocated memory
(``ddsa-bench op`` → op.json). The CPU goal (``ddsa-bench op-cpu`` → op_cpu.json, op_cpu.md) runs the
same cases at the four shapes of CPU_GOAL_SHAPES with the bare products as a lower bound.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .. import common

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("fwd", "fwd+bwd")
BASELINES = ("eager", "compile(eager)")
# The products alone, with plain autograd: S = q kᵀ (scaled, so no overflow), out = S v; its
# backward runs dO vᵀ, S k, Sᵀ q and Sᵀ dO. A diagnostic lower bound for the CPU kernels, which
# do the same matmuls plus the C×C epilogue.
GEMM_FLOOR = "floor(gemm)"


@dataclass(frozen=True)
class OpShape:
    """One benchmarked problem: q, k, v of shape (batch, heads, channels, side²)."""

    name: str
    kind: str  # "inference" | "training" | "level" | "drsformer"
    batch: int
    heads: int
    channels: int
    side: int
    branches: str = "ddsa"  # "ddsa" (dense + top-70 %) or "drsformer" (four top-k)

    @property
    def pixels(self) -> int:
        return self.side * self.side

    def topk(self) -> tuple[Optional[int], ...]:
        from ddsa_kernels import ddsa_topk, drsformer_topk

        return ddsa_topk(self.channels) if self.branches == "ddsa" else drsformer_topk(self.channels)

    def label(self) -> str:
        return f"({self.batch},{self.heads},{self.channels},{self.side}²)"


# The CPU goal: the fused op against the authors'-style code at four shapes of the DDSA network.
CPU_GOAL_SHAPES = [
    OpShape("cpu-infer-384", "inference", 1, 1, 48, 384),
    OpShape("cpu-train-L1", "training", 4, 1, 48, 128),
    OpShape("cpu-train-L4", "level", 2, 8, 48, 32),
    OpShape("cpu-train-C96", "level", 2, 1, 96, 128),
]


def select_shapes(device: torch.device, quick: bool) -> list[OpShape]:
    """The benchmark shapes (DDSA inference, training and deeper levels, DRSformer); on CPU in quick mode a subset (N ≤ 256², batch 4 instead of 16)."""
    if quick and device.type == "cpu":
        b = 4
        return [
            OpShape("infer-128", "inference", 1, 1, 48, 128),
            OpShape("infer-256", "inference", 1, 1, 48, 256),
            OpShape("train-L1", "training", b, 1, 48, 128),
            OpShape("train-L2", "level", b, 2, 48, 64),
            OpShape("train-L4", "level", b, 8, 48, 16),
            OpShape("drsformer-train-L1", "drsformer", b, 1, 48, 128, "drsformer"),
        ]
    sides = [128, 256, 512, 1024] + ([2048] if device.type == "cuda" and not quick else [])
    shapes = [OpShape(f"infer-{s}", "inference", 1, 1, 48, s) for s in sides]
    shapes += [
        OpShape("train-L1", "training", 16, 1, 48, 128),
        OpShape("train-L2", "level", 16, 2, 48, 64),
        OpShape("train-L4", "level", 16, 8, 48, 16),
        OpShape("drsformer-train-L1", "drsformer", 16, 1, 48, 128, "drsformer"),
        OpShape("drsformer-infer-512", "drsformer", 1, 1, 48, 512, "drsformer"),
    ]
    return shapes


QUICK_NOTE_CPU = (
    "CPU quick subset: inference N ∈ {128², 256²}; training and deeper-level shapes at batch 4 "
    "instead of 16; DRSformer at (4,1,48,128²). Run `ddsa-bench op --full` for the full list."
)


def package_backends(device: torch.device) -> list[str]:
    """The package's backends worth timing on ``device`` (Triton's CPU interpreter is left out)."""
    from ddsa_kernels import available_backends

    names = [n for n in available_backends(device, op="dual_attention") if n not in BASELINES]
    if device.type != "cuda":
        names = [n for n in names if n != "triton"]
    return names


def _supports(name: str, device: torch.device, dtype: torch.dtype, channels: int) -> bool:
    from ddsa_kernels._registry import resolve_backend

    try:
        resolve_backend(name, device, dtype, channels, op="dual_attention")
    except RuntimeError:
        return False
    return True


def auto_backend(device: torch.device, dtype: torch.dtype, channels: int) -> str:
    """The backend ``backend="auto"`` picks for these tensors."""
    from ddsa_kernels._registry import resolve_backend

    return resolve_backend("auto", device, dtype, channels, op="dual_attention")


def make_inputs(shape: OpShape, dtype: torch.dtype, device: torch.device, requires_grad: bool, seed: int = 0):
    """Random q, k, v (B,H,C,N), temperature (H,) = 1 and weights = 0.2 (the authors' init), grad_out."""
    gen = torch.Generator(device=device).manual_seed(seed)  # on the device: 2048² inputs are large
    size = (shape.batch, shape.heads, shape.channels, shape.pixels)
    q, k, v, g = (torch.randn(size, generator=gen, device=device).to(dtype) for _ in range(4))
    temperature = torch.ones(shape.heads, device=device)
    weights = torch.full((len(shape.topk()),), 0.2, device=device)
    for t in (q, k, v, temperature, weights):
        t.requires_grad_(requires_grad)
    return (q, k, v, temperature, weights), g


def _callable(impl: str, compiled: Optional[Callable] = None) -> Callable:
    """f(q, k, v, temperature, weights, topk) -> out for one implementation name."""
    from ddsa_kernels import dual_attention

    if impl == "compile(eager)":
        assert compiled is not None
        return compiled
    if impl == GEMM_FLOOR:
        def floor(q, k, v, t, w, topk):
            scale = t.sum() * w.sum() / q.shape[-1]
            return ((q @ k.transpose(-2, -1)) * scale) @ v
        return floor
    backend = "eager" if impl == "eager" else impl
    return lambda q, k, v, t, w, topk: dual_attention(q, k, v, t, w, topk, backend=backend)


def _step(fn: Callable, inputs, grad_out, topk, mode: str) -> Callable[[], Any]:
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(*inputs, topk)
    else:
        def run():
            out = fn(*inputs, topk)
            return torch.autograd.grad(out, inputs, grad_out)
    return run


def _error(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:500]


def bench_case(
    shape: OpShape,
    dtype_name: str,
    mode: str,
    device: torch.device,
    impls: Sequence[str],
    *,
    min_run_time: float,
    compile_fn: Optional[Callable] = None,
    compile_error: Optional[str] = None,
    rounds: int = 1,
    skip: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Time every implementation on one (shape, dtype, mode); returns the case record.

    With ``rounds`` > 1 the implementations are timed in turn, round after round (alternating
    order), and each figure is the median over rounds: a burst of outside load then hits every
    implementation alike instead of one of them.
    """
    dtype = DTYPES[dtype_name]
    elem = torch.empty((), dtype=dtype).element_size()
    floor = common.dram_floor_bytes(shape.batch, shape.heads, shape.channels, shape.pixels, elem, mode)
    copy = common.copy_time(floor, dtype, device, min_run_time=min_run_time)
    case: dict[str, Any] = {
        "shape": shape.name,
        "kind": shape.kind,
        "label": shape.label(),
        "B": shape.batch, "H": shape.heads, "C": shape.channels, "N": shape.pixels, "side": shape.side,
        "branches": shape.branches,
        "topk": list(shape.topk()),
        "dtype": dtype_name,
        "mode": mode,
        "floor_bytes": floor,
        "copy_ms": copy.median_ms,
        "copy_gbps": common.bandwidth_gbps(floor, copy.median_ms),
        "auto_backend": auto_backend(device, dtype, shape.channels),
        "results": {},
    }
    inputs, grad_out = make_inputs(shape, dtype, device, requires_grad=(mode == "fwd+bwd"))
    topk = shape.topk()
    oracle = _fp32_reference(inputs, topk) if mode == "fwd" else None
    runners: dict[str, Callable[[], Any]] = {}
    for impl in impls:
        rec: dict[str, Any] = {"status": "ok", "error": None, "median_ms": None, "min_ms": None, "iqr_ms": None,
                               "runs": None, "timer": None, "compile_s": None, "saved_bytes": None,
                               "saved_bytes_excluding_inputs": None, "peak_mem_bytes": None,
                               "max_abs_err_vs_fp32_reference": None}
        case["results"][impl] = rec
        if skip and impl in skip:
            rec.update(status="skipped", error=skip[impl])
            continue
        if impl == "compile(eager)" and compile_fn is None:
            skipped = compile_error is None or compile_error.startswith("not run")
            rec.update(status="skipped" if skipped else "error", error=compile_error or "not run")
            continue
        if impl not in (*BASELINES, GEMM_FLOOR) and not _supports(impl, device, dtype, shape.channels):
            rec.update(status="skipped", error=f"backend {impl} does not support {dtype_name} on {device.type}")
            continue
        try:
            run = _step(_callable(impl, compile_fn), inputs, grad_out, topk, mode)
            t0 = time.perf_counter()
            out = run()  # first call: compiles for torch.compile, loads kernels for the others
            common.synchronize(device)
            first = time.perf_counter() - t0
            if oracle is not None and impl != GEMM_FLOOR:  # a fast wrong answer is worth nothing
                rec["max_abs_err_vs_fp32_reference"] = (out.float() - oracle).abs().max().item()
            del out
            if impl == "compile(eager)":
                rec["compile_s"] = first
            rec["peak_mem_bytes"] = common.peak_memory_bytes(run, device)
            if mode == "fwd+bwd":
                fwd = _callable(impl, compile_fn)
                saved = common.saved_tensor_bytes(lambda: fwd(*inputs, topk), exclude=inputs)
                rec["saved_bytes"] = saved["all"]
                rec["saved_bytes_excluding_inputs"] = saved["excluding_inputs"]
            runners[impl] = run
        except Exception as exc:  # one failing implementation must not sink the run
            rec.update(status="error", error=_error(exc))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    _time_rounds(case, runners, device, min_run_time, rounds)
    add_derived(case)
    del inputs, grad_out, oracle
    gc.collect()
    return case


def _time_rounds(case: dict[str, Any], runners: dict[str, Callable[[], Any]], device: torch.device,
                 min_run_time: float, rounds: int) -> None:
    per_round: dict[str, list[common.Timing]] = {impl: [] for impl in runners}
    order = list(runners)
    for r in range(max(1, rounds)):
        for impl in (order if r % 2 == 0 else order[::-1]):
            rec = case["results"][impl]
            if rec["status"] != "ok":
                continue
            try:
                per_round[impl].append(common.time_fn(runners[impl], device, min_run_time=min_run_time / rounds))
            except Exception as exc:
                rec.update(status="error", error=_error(exc))
    for impl, timings in per_round.items():
        rec = case["results"][impl]
        if rec["status"] != "ok" or not timings:
            continue
        rec.update(
            median_ms=statistics.median(t.median_ms for t in timings),
            min_ms=_combine(min, [t.min_ms for t in timings]),
            iqr_ms=_combine(statistics.median, [t.iqr_ms for t in timings]),
            runs=_combine(sum, [t.runs for t in timings]),
            timer=timings[0].timer,
            round_medians_ms=[t.median_ms for t in timings],
        )


def _combine(fn: Callable, values: list) -> Any:
    values = [v for v in values if v is not None]
    return fn(values) if values else None


def _fp32_reference(inputs, topk) -> torch.Tensor:
    """The op's output from the reference backend in float32 on the same (rounded) inputs."""
    from ddsa_kernels import dual_attention

    q, k, v, t, w = (x.detach().float() for x in inputs)
    with torch.no_grad():
        return dual_attention(q, k, v, t, w, topk, backend="reference")


def add_derived(case: dict[str, Any]) -> None:
    """Fill speed-ups vs each baseline, achieved GB/s and % of the floor into every result of a case."""
    base = {b: case["results"].get(b, {}).get("median_ms") for b in BASELINES}
    for rec in case["results"].values():
        ms = rec.get("median_ms")
        rec["speedup_vs_eager"] = common.ratio(base["eager"], ms)
        rec["speedup_vs_compile"] = common.ratio(base["compile(eager)"], ms)
        rec["achieved_gbps"] = common.bandwidth_gbps(case["floor_bytes"], ms)
        rec["pct_of_floor"] = None if ms is None else 100.0 * case["copy_ms"] / ms
    eager_saved = case["results"].get("eager", {}).get("saved_bytes")
    for rec in case["results"].values():
        rec["saved_ratio_eager_over_this"] = common.ratio(eager_saved, rec.get("saved_bytes"))


def _make_compiled(device: torch.device) -> tuple[Optional[Callable], Optional[str]]:
    """A fresh ``torch.compile`` of the eager function, or (None, why) when it cannot be built."""
    from ddsa_kernels.testing import eager_dual_attention

    try:
        torch._dynamo.reset()
        return torch.compile(eager_dual_attention, dynamic=False), None
    except Exception as exc:
        return None, _error(exc)


def run_op_bench(
    device: torch.device,
    *,
    quick: bool,
    dtypes: Optional[Sequence[str]] = None,
    modes: Sequence[str] = MODES,
    shapes: Optional[Sequence[str]] = None,
    backends: Optional[Sequence[str]] = None,
    compile_dtypes: Optional[Sequence[str]] = None,
    compile_shapes: Optional[Sequence[str]] = None,
    baseline_shapes: Optional[Sequence[str]] = None,
    min_run_time: float = 0.3,
    rounds: Optional[int] = None,
    time_budget_s: Optional[float] = None,
    on_case: Optional[Callable[[dict[str, Any]], None]] = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the op benchmark; returns the JSON-able result (machine info, config, one record per case).

    ``compile_dtypes``: dtypes at which the torch.compile baseline runs (default: all on CPU,
    float16 only on CUDA, to keep compile time inside a short GPU lease); [] disables it.
    ``compile_shapes``: shape names at which it runs (default: every shape).
    ``baseline_shapes``: shape names at which the eager and compile baselines run at all (default:
    every shape); elsewhere they are recorded as skipped, to spend a short GPU lease on the kernels.
    ``rounds``: interleaved timing rounds per case (default 3 on CPU, where other load comes in
    bursts, 1 on CUDA); ``min_run_time`` is split between them.
    ``on_case`` is called with the partial result after every case (to write it incrementally).
    Cases not started within ``time_budget_s`` are listed under ``skipped_cases``.
    """
    if dtypes is None:
        dtypes = ["float32"] if device.type == "cpu" else ["float16", "bfloat16", "float32"]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if rounds is None:
        rounds = 3 if device.type == "cpu" else 1
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    if compile_dtypes is None:
        compile_dtypes = list(dtypes) if device.type == "cpu" else ["float16"]
    all_shapes = select_shapes(device, quick)
    if shapes:
        known = {s.name: s for s in CPU_GOAL_SHAPES + select_shapes(device, False) + all_shapes}
        missing = [s for s in shapes if s not in known]
        if missing:
            raise ValueError(f"unknown shape(s) {missing}; choose from {', '.join(known)}")
        all_shapes = [known[s] for s in shapes]
    pkg = package_backends(device)
    if backends is not None:
        unknown = [b for b in backends if b not in (*BASELINES, GEMM_FLOOR, *pkg)]
        if unknown:
            raise ValueError(f"backend(s) {unknown} not available on {device.type}; "
                             f"available: {', '.join((*BASELINES, GEMM_FLOOR, *pkg))}")
        impls = [b for b in (*BASELINES, GEMM_FLOOR, *pkg) if b in backends]
    else:
        impls = [*BASELINES, *pkg]
    result: dict[str, Any] = {
        "benchmark": "op",
        "machine": common.machine_info(device, ops=("dual_attention",)),
        "config": {
            "quick": quick,
            "quick_note": QUICK_NOTE_CPU if (quick and device.type == "cpu") else None,
            "dtypes": list(dtypes),
            "modes": list(modes),
            "impls": impls,
            "compile_dtypes": list(compile_dtypes),
            "compile_shapes": None if compile_shapes is None else list(compile_shapes),
            "baseline_shapes": None if baseline_shapes is None else list(baseline_shapes),
            "compile_options": "torch.compile(eager_dual_attention, dynamic=False), default mode, reset per shape",
            "min_run_time_s": min_run_time,
            "rounds": rounds,
            "time_budget_s": time_budget_s,
            "floor_tensors": common.FLOOR_TENSORS,
            "notes": [
                "fwd = forward under torch.no_grad(); fwd+bwd = forward + torch.autograd.grad w.r.t. q, k, v, "
                "temperature, weights.",
                "floor_bytes = FLOOR_TENSORS[mode]·B·H·C·N·bytes (fwd: read q,k,v + write out; bwd adds read "
                "q,k,v,dO + write dq,dk,dv); pct_of_floor = copy_ms / median_ms, where copy_ms times a device "
                "copy moving the same bytes.",
                "saved_bytes: unique storages autograd saves for backward (saved-tensor hooks), inputs included; "
                "saved_bytes_excluding_inputs leaves out the storages of q, k, v, temperature, weights.",
                "Triton on CPU runs through its interpreter and is not timed.",
                "max_abs_err_vs_fp32_reference (fwd): max |out − reference backend in fp32 on the same inputs|, "
                "so a fast wrong kernel shows.",
            ],
        },
        "shapes": [asdict(s) | {"pixels": s.pixels, "topk": list(s.topk())} for s in all_shapes],
        "cases": [],
        "skipped_cases": [],
    }
    start = time.perf_counter()
    for dtype_name in dtypes:  # dtype-major: a time budget trims the later dtypes first
        for shape in all_shapes:
            for mode in modes:
                if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                    result["skipped_cases"].append({"shape": shape.name, "dtype": dtype_name, "mode": mode,
                                                    "reason": f"time budget of {time_budget_s:.0f} s spent"})
                    log(f"[op] {shape.name} {dtype_name} {mode}: skipped (time budget spent)")
                    continue
                why = (f"not run at {dtype_name} (compile_dtypes={list(compile_dtypes)})" if compile_dtypes
                       else "not run: the torch.compile baseline was disabled (--no-compile)")
                compiled = None
                if compile_shapes is not None and shape.name not in compile_shapes:
                    why = f"not run at {shape.name} (compile_shapes={list(compile_shapes)})"
                elif "compile(eager)" in impls and dtype_name in compile_dtypes:
                    compiled, why = _make_compiled(device)
                skip = None
                if baseline_shapes is not None and shape.name not in baseline_shapes:
                    skip = {b: f"baselines run only at {list(baseline_shapes)}" for b in BASELINES}
                    compiled = None
                t0 = time.perf_counter()
                case = bench_case(shape, dtype_name, mode, device, impls, min_run_time=min_run_time,
                                  compile_fn=compiled, compile_error=why, rounds=rounds, skip=skip)
                result["cases"].append(case)
                log(_case_line(case, time.perf_counter() - t0))
                result["machine"]["loadavg_at_end"] = common.loadavg()
                if on_case is not None:
                    on_case(result)
    return result


def _case_line(case: dict[str, Any], seconds: float) -> str:
    parts = []
    for impl, rec in case["results"].items():
        if rec["median_ms"] is not None:
            parts.append(f"{impl} {rec['median_ms']:.3g} ms")
        else:
            parts.append(f"{impl} {rec['status']}")
    return f"[op] {case['shape']:<20} {case['dtype']:<8} {case['mode']:<7} " + ", ".join(parts) + f"  ({seconds:.0f} s)"


# ----------------------------------------------------------------------------- the CPU goal
# ``ddsa-bench op-cpu``: the op benchmark at CPU_GOAL_SHAPES with DDSA's branches, forward and
# forward+backward, in interleaved rounds: eager, torch.compile of it, the bare products (floor(gemm), a
# lower bound for a kernel doing the same matmuls), the "reference" and the compiled "cpu" backend.
# Goals: forward ≥ 2.0× eager and ≥ 1.6× torch.compile of it; forward+backward ≥ 1.8× eager.
CPU_GOALS = {("fwd", "eager"): 2.0, ("fwd", "compile(eager)"): 1.6, ("fwd+bwd", "eager"): 1.8}
CPU_GOAL_IMPLS = ("eager", "compile(eager)", GEMM_FLOOR, "reference", "cpu")


def cpu_goal_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (shape, mode): the cpu backend's speed-ups and whether each goal is met."""
    rows = []
    for case in result["cases"]:
        res = case["results"]
        cpu = res.get("cpu", {}).get("median_ms")
        row = {"label": case["label"], "mode": case["mode"],
               **{f"{impl}_ms": res.get(impl, {}).get("median_ms") for impl in CPU_GOAL_IMPLS}}
        for (mode, base), goal in CPU_GOALS.items():
            if mode != case["mode"]:
                continue
            speedup = common.ratio(res.get(base, {}).get("median_ms"), cpu)
            row[f"speedup_vs_{base}"] = speedup
            row[f"meets_{base}"] = speedup is not None and speedup >= goal
        rows.append(row)
    return rows


def cpu_goal_markdown(result: dict[str, Any]) -> str:
    m, cfg = result["machine"], result["config"]
    rows = cpu_goal_rows(result)
    headers = ["B,H,C,N", "mode", *[f"{i} ms" for i in CPU_GOAL_IMPLS], "cpu vs eager", "cpu vs compile"]
    table = [[r["label"], r["mode"], *[common.fmt(r[f"{i}_ms"]) for i in CPU_GOAL_IMPLS],
              _x(r.get("speedup_vs_eager")), _x(r.get("speedup_vs_compile(eager)"))] for r in rows]
    met = all(r[key] for r in rows for key in r if key.startswith("meets_"))
    goals = "; ".join(f"{mode} ≥ {goal}× {base}" for (mode, base), goal in CPU_GOALS.items())
    lines = [
        f"# Dual attention op on CPU ({', '.join(cfg['dtypes'])}, {m['torch_threads']} threads)",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} logical CPUs), load average at start "
        f"{m['loadavg_at_start']}, at end {m.get('loadavg_at_end')}; torch {m['torch']}; commit "
        f"{(m['commit'].get('sha') or 'unknown')[:12]}{' (dirty)' if m['commit'].get('dirty') else ''}.",
        f"DDSA branches (dense + top C·7//10). Milliseconds: median over {cfg['rounds']} interleaved rounds "
        "of torch.utils.benchmark medians after warm-up. `floor(gemm)` = the products alone.",
        "",
        common.markdown_table(headers, table),
        "",
        f"Goals ({goals}): {'met' if met else 'NOT met'} at every shape.",
    ]
    warning = common.busy_warning(m)
    if warning:
        lines += ["", f"**{warning}**"]
    return "\n".join(lines) + "\n"


def _x(value: Optional[float]) -> str:
    return "–" if value is None else f"**{value:.2f}×**"


def cpu_goal_main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """``ddsa-bench op-cpu``: the CPU goal at CPU_GOAL_SHAPES → op_cpu.json and op_cpu.md."""
    parser = argparse.ArgumentParser(prog="ddsa-bench op-cpu", description="the CPU goal of the fused op: "
                                     "the cpu backend against eager, torch.compile and the bare products")
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all implementations")
    parser.add_argument("--min-run-time", type=float, default=2.5,
                        help="seconds of timing per implementation and case, split over the rounds")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: ddsa_bench/results/<cpu-slug>)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated shape names (default: " + ",".join(s.name for s in CPU_GOAL_SHAPES) + ")")
    args = parser.parse_args(argv)
    from ddsa_kernels import build_info

    if build_info("dual_attention").get("cpu") != "available":
        raise SystemExit(f"the compiled cpu backend is not available: {build_info('dual_attention').get('cpu')}")
    device = torch.device("cpu")
    shapes = args.shapes.split(",") if args.shapes else [s.name for s in CPU_GOAL_SHAPES]
    out = args.out or common.default_out_dir(device)
    result = run_op_bench(
        device, quick=False, dtypes=[args.dtype], shapes=shapes, backends=CPU_GOAL_IMPLS, compile_dtypes=[args.dtype],
        min_run_time=args.min_run_time, rounds=args.rounds)
    result["benchmark"] = "op_cpu_goal"
    result["goal_rows"] = cpu_goal_rows(result)
    out.mkdir(parents=True, exist_ok=True)
    common.write_json(out / "op_cpu.json", result)
    common.write_text(out / "op_cpu.md", cpu_goal_markdown(result))
    print(cpu_goal_markdown(result))
    return result

