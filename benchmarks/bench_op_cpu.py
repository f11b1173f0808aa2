"""CPU speed of the fused op ("cpu" backend) against the authors'-style eager computation.

    python -m benchmarks.bench_op_cpu [--dtype float32] [--rounds 5] [--min-run-time 0.5] [--out DIR]

For each shape (B, H, C, N) with DDSA's branches (dense + top-70 %), times the forward and the
forward+backward of: the eager baseline (``ddsa_kernels.eager_dual_attention``), the "reference"
backend (the two-sweep algorithm in plain PyTorch), the compiled "cpu" backend, and the floor —
the two GEMM-like sweeps alone (``q @ kᵀ`` then ``A @ v``; for the backward the three products
of DESIGN §2 as well). Each figure is the median over `rounds` interleaved rounds (every method
timed in turn, so a shared machine's load weighs on all alike) of torch.utils.benchmark medians
after warm-up. Writes ``op_cpu.json`` (machine, load, versions, threads, commit, every figure and
round) and ``op_cpu.md`` into benchmarks/results/cpu/ (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
from typing import Callable

import torch
import torch.utils.benchmark as tb

from ddsa_kernels import build_info, dual_attention, eager_dual_attention
from ddsa_model.atomic import atomic_write_text

SHAPES = ((1, 1, 48, 384 * 384), (4, 1, 48, 128 * 128), (2, 8, 48, 32 * 32), (2, 1, 96, 128 * 128))
GOALS = {"forward": 2.0, "forward+backward": 1.8}
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu")


def _median_ms(fn: Callable[[], object], min_run_time: float) -> float:
    fn()  # warm-up (first-call allocations, lazy init)
    timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_run_time: float) -> dict[str, dict]:
    """Times every fn in turn, `rounds` times over: on a shared machine the load then weighs on
    all methods alike. Reports the median of the per-round medians (and the rounds)."""
    per_round = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per_round[name].append(_median_ms(fn, min_run_time))
    return {name: {"median_ms": statistics.median(v), "rounds_ms": v} for name, v in per_round.items()}


def _inputs(shape, dtype, grad: bool):
    """q, k, v as channel views of one qkv tensor (as in the model), plus temperature and weights."""
    B, H, C, N = shape
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, H, 3 * C, N, generator=gen, dtype=dtype).requires_grad_(grad)
    q, k, v = qkv.chunk(3, dim=2)
    temperature = torch.ones(H, dtype=dtype, requires_grad=grad)
    weights = torch.full((2,), 0.2, dtype=dtype, requires_grad=grad)
    return q, k, v, temperature, weights


def _methods(topk):
    def eager(q, k, v, t, w):
        return eager_dual_attention(q, k, v, t, w, topk)

    def backend(name):
        return lambda q, k, v, t, w: dual_attention(q, k, v, t, w, topk, backend=name)

    return {"eager": eager, "reference": backend("reference"), "cpu": backend("cpu")}


def _floor_forward(q, k, v, attn):
    """The two GEMM-like sweeps alone: q kᵀ and attn v (attn a fixed, well-scaled C×C)."""
    return q @ k.transpose(-2, -1), attn @ v


def _floor_backward(q, k, v, go, attn):
    """The backward's products alone: dO vᵀ, then P k, Pᵀ q, attnᵀ dO (P stand-in: attn)."""
    return go @ v.transpose(-2, -1), attn @ k, attn.transpose(-2, -1) @ q, attn.transpose(-2, -1) @ go


def bench_shape(shape, dtype, min_run_time: float, rounds: int) -> dict:
    B, H, C, N = shape
    topk = (None, C * 7 // 10)
    row: dict = {"shape": list(shape), "topk": [None, C * 7 // 10]}
    methods = _methods(topk)
    raw = {}
    with torch.no_grad():
        q, k, v, t, w = _inputs(shape, dtype, grad=False)
        go = torch.randn_like(q)
        # A softmax of scores in [-1, 1], like the op's: no denormals to slow the products down.
        attn = torch.softmax(torch.rand(B, H, C, C, generator=torch.Generator().manual_seed(2), dtype=dtype) * 2 - 1,
                             dim=-1)
        fwd = {name: (lambda fn=fn: fn(q, k, v, t, w)) for name, fn in methods.items()}
        fwd["floor"] = lambda: _floor_forward(q, k, v, attn)
        fwd["floor_bwd_only"] = lambda: _floor_backward(q, k, v, go, attn)
        raw["fwd"] = _interleaved(fwd, rounds, min_run_time)
    q, k, v, t, w = _inputs(shape, dtype, grad=True)
    grad = torch.randn(B, H, C, N, dtype=dtype, generator=torch.Generator().manual_seed(1))

    def step(fn):
        out = fn(q, k, v, t, w)
        torch.autograd.grad(out, (q, k, v, t, w), grad)

    raw["fwdbwd"] = _interleaved({name: (lambda fn=fn: step(fn)) for name, fn in methods.items()}, rounds,
                                 min_run_time)
    for name in methods:
        row[f"{name}_fwd_ms"] = raw["fwd"][name]["median_ms"]
        row[f"{name}_fwdbwd_ms"] = raw["fwdbwd"][name]["median_ms"]
    row["floor_fwd_ms"] = raw["fwd"]["floor"]["median_ms"]
    row["floor_fwdbwd_ms"] = row["floor_fwd_ms"] + raw["fwd"]["floor_bwd_only"]["median_ms"]
    row["rounds"] = raw
    for kind, key in (("forward", "fwd"), ("forward+backward", "fwdbwd")):
        row[f"speedup_{key}"] = row[f"eager_{key}_ms"] / row[f"cpu_{key}_ms"]
        row[f"meets_goal_{key}"] = row[f"speedup_{key}"] >= GOALS[kind]
    return row


def _commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_1_5_15": load}


def _fmt_load(load) -> str:
    return "n/a" if not load else "/".join(f"{x:.1f}" for x in load)


def _markdown(result: dict) -> str:
    lines = [
        f"# Dual attention op on CPU ({result['dtype']}, {result['threads']} threads)",
        "",
        f"Machine: {result['machine']['cpu']} ({result['machine']['logical_cpus']} logical CPUs), "
        f"load average (1, 5, 15 min) at start {_fmt_load(result['machine']['loadavg_1_5_15'])}, at end "
        f"{_fmt_load(result['machine'].get('loadavg_at_end'))}; torch {result['torch']}; "
        f"commit {result['commit'][:12]}; CPU GEMM: {result['cpu_gemm']}.",
        "Branches: DDSA (dense + top C·7//10). Milliseconds: median over interleaved rounds of "
        "torch.utils.benchmark medians (after warm-up). "
        "Floor = the GEMM-like products alone (q kᵀ and A v; backward adds dO vᵀ, P k, Pᵀ q, Aᵀ dO).",
        "",
        "| B,H,C,N | eager fwd | reference fwd | cpu fwd | floor fwd | speed-up fwd | "
        "eager f+b | reference f+b | cpu f+b | floor f+b | speed-up f+b |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        b, h, c, n = r["shape"]
        lines.append(
            f"| {b},{h},{c},{n} | {r['eager_fwd_ms']:.2f} | {r['reference_fwd_ms']:.2f} | {r['cpu_fwd_ms']:.2f} | "
            f"{r['floor_fwd_ms']:.2f} | **{r['speedup_fwd']:.2f}×** | {r['eager_fwdbwd_ms']:.2f} | "
            f"{r['reference_fwdbwd_ms']:.2f} | {r['cpu_fwdbwd_ms']:.2f} | {r['floor_fwdbwd_ms']:.2f} | "
            f"**{r['speedup_fwdbwd']:.2f}×** |"
        )
    ok = all(r["meets_goal_fwd"] and r["meets_goal_fwdbwd"] for r in result["rows"])
    lines += ["", f"Goal (forward ≥ {GOALS['forward']}×, forward+backward ≥ {GOALS['forward+backward']}× "
              f"vs eager at every shape): {'met' if ok else 'NOT met'}.", ""]
    return "\n".join(lines)


def _write_atomic(path: str, text: str) -> None:
    atomic_write_text(path, text)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"))
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timing per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all methods")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for op_cpu.json and op_cpu.md")
    parser.add_argument("--shapes", default=None, help="e.g. '1,1,48,147456;2,8,48,1024' (default: the issue's)")
    args = parser.parse_args(argv)
    info = build_info()
    if info.get("cpu") != "available":
        raise SystemExit(f"the compiled cpu backend is not available: {info.get('cpu')}")
    dtype = getattr(torch, args.dtype)
    shapes = SHAPES if args.shapes is None else tuple(
        tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";"))
    from ddsa_kernels import _C

    result = {
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": _commit(),
        "machine": _machine(),
        "cpu_gemm": _C.cpu_gemm_provider(),
        "min_run_time_s": args.min_run_time,
        "rounds": args.rounds,
        "goals": GOALS,
        "rows": [],
    }
    for shape in shapes:
        row = bench_shape(shape, dtype, args.min_run_time, args.rounds)
        result["rows"].append(row)
        print(f"{shape}: fwd eager {row['eager_fwd_ms']:.2f} ms / cpu {row['cpu_fwd_ms']:.2f} ms "
              f"({row['speedup_fwd']:.2f}x, floor {row['floor_fwd_ms']:.2f}); f+b eager {row['eager_fwdbwd_ms']:.2f} "
              f"/ cpu {row['cpu_fwdbwd_ms']:.2f} ({row['speedup_fwdbwd']:.2f}x, floor {row['floor_fwdbwd_ms']:.2f})",
              flush=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    os.makedirs(args.out, exist_ok=True)
    _write_atomic(os.path.join(args.out, "op_cpu.json"), json.dumps(result, indent=2) + "\n")
    _write_atomic(os.path.join(args.out, "op_cpu.md"), _markdown(result))
    print(_markdown(result))
    return result


if __name__ == "__main__":
    main()
