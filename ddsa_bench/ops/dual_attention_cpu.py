"""The CPU goal of the fused op: the "cpu" backend against the authors'-style code, side by side.

    python -m ddsa_bench.ops.dual_attention_cpu [--dtype float32] [--rounds 5] [--min-run-time 2.5] [--out DIR]

Runs the op benchmark (``ddsa_bench/ops/dual_attention.py``) at the four shapes of the CPU goal with DDSA's
branches, forward and forward+backward, timing in interleaved rounds: the eager baseline,
``torch.compile`` of it, the bare products (``floor(gemm)``: a lower bound for a kernel that
does the same matmuls), the "reference" backend and the compiled "cpu" backend. Writes
``op_cpu.json`` and ``op_cpu.md`` into the device's results folder (or ``--out``).

Goals: forward ≥ 2.0× eager and ≥ 1.6× torch.compile of it; forward+backward ≥ 1.8× eager.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

import torch

from .. import common
from . import dual_attention as op_bench

GOALS = {("fwd", "eager"): 2.0, ("fwd", "compile(eager)"): 1.6, ("fwd+bwd", "eager"): 1.8}
IMPLS = ("eager", "compile(eager)", op_bench.GEMM_FLOOR, "reference", "cpu")


def goal_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (shape, mode): the cpu backend's speed-ups and whether each goal is met."""
    rows = []
    for case in result["cases"]:
        res = case["results"]
        cpu = res.get("cpu", {}).get("median_ms")
        row = {"label": case["label"], "mode": case["mode"],
               **{f"{impl}_ms": res.get(impl, {}).get("median_ms") for impl in IMPLS}}
        for (mode, base), goal in GOALS.items():
            if mode != case["mode"]:
                continue
            speedup = common.ratio(res.get(base, {}).get("median_ms"), cpu)
            row[f"speedup_vs_{base}"] = speedup
            row[f"meets_{base}"] = speedup is not None and speedup >= goal
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    m, cfg = result["machine"], result["config"]
    rows = goal_rows(result)
    headers = ["B,H,C,N", "mode", *[f"{i} ms" for i in IMPLS], "cpu vs eager", "cpu vs compile"]
    table = [[r["label"], r["mode"], *[common.fmt(r[f"{i}_ms"]) for i in IMPLS],
              _x(r.get("speedup_vs_eager")), _x(r.get("speedup_vs_compile(eager)"))] for r in rows]
    met = all(r[key] for r in rows for key in r if key.startswith("meets_"))
    goals = "; ".join(f"{mode} ≥ {goal}× {base}" for (mode, base), goal in GOALS.items())
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


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=tuple(op_bench.DTYPES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all implementations")
    parser.add_argument("--min-run-time", type=float, default=2.5,
                        help="seconds of timing per implementation and case, split over the rounds")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: ddsa_bench/results/<cpu-slug>)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated shape names (default: " + ",".join(s.name for s in op_bench.CPU_GOAL_SHAPES) + ")")
    args = parser.parse_args(argv)
    from ddsa_kernels import build_info

    if build_info("dual_attention").get("cpu") != "available":
        raise SystemExit(f"the compiled cpu backend is not available: {build_info('dual_attention').get('cpu')}")
    device = torch.device("cpu")
    shapes = args.shapes.split(",") if args.shapes else [s.name for s in op_bench.CPU_GOAL_SHAPES]
    out = args.out or common.default_out_dir(device)
    result = op_bench.run_op_bench(
        device, quick=False, dtypes=[args.dtype], shapes=shapes, backends=IMPLS, compile_dtypes=[args.dtype],
        min_run_time=args.min_run_time, rounds=args.rounds)
    result["benchmark"] = "op_cpu_goal"
    result["goal_rows"] = goal_rows(result)
    out.mkdir(parents=True, exist_ok=True)
    common.write_json(out / "op_cpu.json", result)
    common.write_text(out / "op_cpu.md", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
