"""CPU speed of the channel LayerNorm ("cpu" backend) against the authors' wrapper.

    ddsa-bench channel-norm [--shape 4,48,128,128] [--dtype float32] [--rounds 5]
                              [--min-run-time 0.3] [--bias-free] [--out DIR]

Times the forward and the forward+backward (grads of x, weight, bias) of:

* ``eager``: the authors' wrapper (``ddsa_kernels.testing.eager_channel_norm``: permute to (B, H·W, C),
  mean / biased var over C, normalise, permute back), autograd through every step;
* ``layer_norm``: ``F.layer_norm`` over a permuted (B, H, W, C) view, permuted back;
* ``cpu`` and ``reference``: ``ddsa_kernels.channel_norm`` with that backend.

Each figure is the median over ``rounds`` interleaved rounds (every method timed in turn, so a
shared machine's load weighs on all alike) of torch.utils.benchmark medians after warm-up, at
torch's current thread count (set OMP_NUM_THREADS). Prints milliseconds and the ratios eager /
method; writes ``channel_norm.json`` (every figure, the machine, versions, commit and date) and
``channel_norm.md`` into ``--out`` (default: this device's results folder). Goal: cpu ≥ 3× eager
forward+backward.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, channel_norm
from ddsa_kernels.testing import eager_channel_norm

from .. import common

GOAL_FWDBWD = 3.0


def _layer_norm_permuted(x, w, b, eps, subtract_mean):
    if not subtract_mean:  # F.layer_norm has no bias-free-with-centred-variance form
        raise ValueError("layer_norm has no BiasFree variant")
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, eps).permute(0, 3, 1, 2)


def _methods(subtract_mean: bool) -> dict[str, Callable]:
    methods = {"eager": lambda x, w, b: eager_channel_norm(x, w, b, subtract_mean=subtract_mean)}
    if subtract_mean:
        methods["layer_norm"] = lambda x, w, b: _layer_norm_permuted(x, w, b, 1e-5, True)
    info = build_info("channel_norm")
    for name in ("cpu", "reference"):
        if info.get(name) == "available":
            methods[name] = (lambda x, w, b, name=name:
                             channel_norm(x, w, b, subtract_mean=subtract_mean, backend=name))
    return methods


def bench(shape, dtype, subtract_mean: bool, rounds: int, min_run_time: float) -> dict:
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=gen).to(dtype)
    w = (torch.rand(C, generator=gen) + 0.5).to(dtype)
    b = torch.randn(C, generator=gen).to(dtype) if subtract_mean else None
    dy = torch.randn(B, C, H, W, generator=gen).to(dtype)
    methods = _methods(subtract_mean)

    def forward(fn):
        with torch.no_grad():
            fn(x, w, b)

    row = {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "subtract_mean": subtract_mean}
    row["fwd"], row["speedup_fwd"] = common.interleaved_rounds(
        {n: (lambda fn=fn: forward(fn)) for n, fn in methods.items()}, "eager", rounds=rounds,
        min_run_time=min_run_time)
    leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]

    def step(fn):
        y = fn(*leaves, *([None] if len(leaves) == 2 else []))
        torch.autograd.grad(y, leaves, dy)

    row["fwdbwd"], row["speedup_fwdbwd"] = common.interleaved_rounds(
        {n: (lambda fn=fn: step(fn)) for n, fn in methods.items()}, "eager", rounds=rounds,
        min_run_time=min_run_time)
    if "cpu" in row["fwdbwd"]:
        row["meets_goal_fwdbwd"] = row["speedup_fwdbwd"]["cpu"] >= GOAL_FWDBWD
    return row


def render_markdown(result: dict) -> str:
    """The table of one ``--out`` JSON: ms per method, forward and forward+backward, and eager / method."""
    row = result["row"]
    headers = ["method", "fwd ms", "fwd+bwd ms", "eager / fwd", "eager / fwd+bwd"]
    table = [[n, f"{row['fwd'][n]['median_ms']:.2f}", f"{row['fwdbwd'][n]['median_ms']:.2f}",
              f"{row['speedup_fwd'][n]:.2f}×", f"{row['speedup_fwdbwd'][n]:.2f}×"] for n in row["fwd"]]
    machine = result["machine"]
    lines = [*common.markdown_heading("Channel LayerNorm on CPU", machine),
             f"Shape (B,C,H,W) {tuple(row['shape'])}, {row['dtype']}, subtract_mean={row['subtract_mean']}, "
             f"{machine['torch_threads']} threads, torch {machine['torch']}.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
             *("| " + " | ".join(r) + " |" for r in table)]
    if "meets_goal_fwdbwd" in row:
        lines += ["", f"Goal cpu ≥ {GOAL_FWDBWD}× eager forward+backward: "
                      f"{'met' if row['meets_goal_fwdbwd'] else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="ddsa-bench channel-norm", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4,48,128,128", help="B,C,H,W")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all methods")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per measurement")
    parser.add_argument("--bias-free", action="store_true", help="the subtract_mean=False variant")
    parser.add_argument("--out", default=None, help="folder for channel_norm.json / .md (default: this "
                                                    "device's ddsa_bench/results folder)")
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    row = bench(shape, getattr(torch, args.dtype), not args.bias_free, args.rounds, args.min_run_time)
    cpu = torch.device("cpu")
    result = {"benchmark": "channel_norm", "machine": common.machine_info(cpu, ops=["channel_norm"]), "row": row}
    print(f"channel_norm {args.shape} {args.dtype} subtract_mean={row['subtract_mean']} "
          f"threads={result['machine']['torch_threads']} load={result['machine']['loadavg_at_start']}")
    print(f"{'method':<12}{'fwd ms':>10}{'f+b ms':>10}{'eager/fwd':>11}{'eager/f+b':>11}")
    for name in row["fwd"]:
        print(f"{name:<12}{row['fwd'][name]['median_ms']:>10.2f}{row['fwdbwd'][name]['median_ms']:>10.2f}"
              f"{row['speedup_fwd'][name]:>10.2f}×{row['speedup_fwdbwd'][name]:>10.2f}×")
    if "meets_goal_fwdbwd" in row:
        print(f"goal cpu ≥ {GOAL_FWDBWD}× eager forward+backward: {'met' if row['meets_goal_fwdbwd'] else 'NOT met'}")
    common.write_results(result, render_markdown, cpu, args.out)
    return result


if __name__ == "__main__":
    main()
