"""CPU speed of the depth-wise convolution ("cpu" backend) against torch's own convolution.

    ddsa-bench depthwise-conv [--shapes 1,170,256,256 2,16,128,128,5,2] [--rounds 3]
                                [--min-run-time 0.2] [--threads N] [--tune-cpu-memory]
                                [--out ddsa_bench/results/<device>]

Each shape is B,C,H,W (a 3×3 kernel, dilation 1) or B,C,H,W,K,D (a K×K kernel with dilation D, zero
padding D·(K // 2)). For each, times the forward (no_grad) and the forward+backward (grads of x and the
weight, as in training) of:

* ``conv2d``: ``F.conv2d(..., groups=C)`` on the NCHW map — what an ``nn.Conv2d`` in the authors'
  networks runs (oneDNN on x86);
* ``conv2d_nhwc``: the same on a channels-last copy made beforehand (not timed): what a user gets by
  converting the whole network to ``torch.channels_last``;
* ``cpu``: ``ddsa_kernels.depthwise_conv`` with the C++ kernel, directly on NCHW.

The default shapes are the depth-wise convolutions of the ``ddsa-small``-sized networks of
``ddsa-bench patch`` (3×3): 256² inference and the 128² batch-2 training step; and the dilated ones
(dilation 2, K = 3, 5, 7, C = 16 and 32) of DRSformer's level-0 MEFC subnet at the same two sizes. Each
figure is the median over interleaved rounds (every method in turn, so a shared machine's load weighs on
all alike) at torch's current thread count. Writes ``depthwise_conv.json`` and ``depthwise_conv.md`` into
``--out``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, depthwise_conv

from .. import common

DEFAULT_SHAPES = ((1, 170, 256, 256), (1, 96, 256, 256), (2, 170, 128, 128), (2, 96, 128, 128), (2, 340, 64, 64))
# DRSformer's MEFC subnet: DilConv's depth-wise K×K convolutions with dilation 2 (B, C, H, W, K, D)
DILATED_SHAPES = tuple((b, c, s, s, k, 2) for b, s in ((1, 256), (2, 128)) for c in (16, 32) for k in (3, 5, 7))


def _methods(c: int, k: int, d: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    pad = d * (k // 2)
    methods: dict[str, Callable] = {
        "conv2d": lambda t, w: F.conv2d(t, w, padding=pad, dilation=d, groups=c),
        "conv2d_nhwc": lambda t, w: F.conv2d(t, w, padding=pad, dilation=d, groups=c),
    }
    if build_info("depthwise_conv").get("cpu") == "available":
        methods["cpu"] = lambda t, w: depthwise_conv(t, w, dilation=d, backend="cpu")
    return methods


def bench_shape(shape: tuple[int, ...], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method, forward and forward+backward, for one (B, C, H, W) (3×3, dilation 1)
    or (B, C, H, W, K, D)."""
    size, (k, d) = tuple(shape[:4]), (tuple(shape[4:]) or (3, 1))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*size, generator=gen)
    w = torch.randn(size[1], 1, k, k, generator=gen)
    dy = torch.randn(*size, generator=gen)
    inputs = {"conv2d": x, "conv2d_nhwc": x.contiguous(memory_format=torch.channels_last), "cpu": x}
    grads = {"conv2d": dy, "conv2d_nhwc": dy.contiguous(memory_format=torch.channels_last), "cpu": dy}
    methods = _methods(size[1], k, d)
    with torch.no_grad():
        want = methods["conv2d"](x, w)
        max_diff = {n: float((fn(inputs[n], w) - want).abs().max()) for n, fn in methods.items()}

    def forward(name):
        def run():
            with torch.no_grad():
                methods[name](inputs[name], w)
        return run

    def train(name):
        xin = inputs[name].detach().requires_grad_(True)
        win = w.detach().requires_grad_(True)

        def run():
            torch.autograd.grad(methods[name](xin, win), (xin, win), grads[name])
        return run

    row: dict[str, Any] = {"shape": list(size), "kernel": k, "dilation": d, "max_abs_diff_fwd": max_diff}
    for task, make in (("fwd", forward), ("fwdbwd", train)):
        row[task], row[f"speedup_{task}"] = common.interleaved_rounds(
            {n: make(n) for n in methods}, "conv2d", rounds=rounds, min_run_time=min_run_time)
    return row


def _table_rows(rows: list[dict[str, Any]], with_kernel: bool) -> list[list[str]]:
    out = []
    for row in rows:
        for task in ("fwd", "fwdbwd"):
            res, sp = row[task], row[f"speedup_{task}"]
            kernel = [f"{row['kernel']}×{row['kernel']}", str(row["dilation"])] if with_kernel else []
            times = (common.fmt(res[n]["median_ms"]) if n in res else "–" for n in ("conv2d", "conv2d_nhwc", "cpu"))
            out.append(["×".join(map(str, row["shape"])), *kernel, "forward" if task == "fwd" else "forward+backward",
                        *times,
                        f"×{sp['cpu']:.2f}" if sp.get("cpu") else "–",
                        f"×{sp['conv2d_nhwc']:.2f}" if sp.get("conv2d_nhwc") else "–"])
    return out


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = common.markdown_heading("Depth-wise convolution on CPU", m)
    times = ["conv2d NCHW ms", "conv2d channels-last ms", "ddsa cpu ms", "cpu vs NCHW", "channels-last vs NCHW"]
    plain = [r for r in result["rows"] if (r.get("kernel", 3), r.get("dilation", 1)) == (3, 1)]
    other = [r for r in result["rows"] if r not in plain]
    if plain:
        lines += ["### 3×3, dilation 1", "", common.markdown_table(["B×C×H×W", "pass", *times],
                                                                   _table_rows(plain, False)), ""]
    if other:
        lines += ["### Other kernels and dilations (dilation 2: DRSformer's MEFC subnet)", "",
                  common.markdown_table(["B×C×H×W", "kernel", "dilation", "pass", *times], _table_rows(other, True)),
                  ""]
    lines += [f"torch {m['torch']}, {m['torch_threads']} thread(s), fp32, commit "
              f"{(m['commit'] or {}).get('sha') or '?'}.", "",
              "* conv2d = `F.conv2d(x, w, padding=d·(K // 2), dilation=d, groups=C)` as an `nn.Conv2d` runs it; "
              "channels-last = the same on an NHWC copy made beforehand (untimed); ddsa cpu = "
              "`ddsa_kernels.depthwise_conv(..., dilation=d, backend=\"cpu\")` on the NCHW map.",
              "* forward+backward = gradients of x and the weight. Median over interleaved rounds."]
    return "\n".join(lines) + "\n"


def _parse_shape(text: str) -> Optional[tuple[int, ...]]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    if len(parts) not in (4, 6) or min(parts) < 1 or (len(parts) == 6 and parts[4] % 2 == 0):
        return None
    return parts


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """The command line (see the module docstring); returns the result written to depthwise_conv.json."""
    parser = argparse.ArgumentParser(prog="ddsa-bench depthwise-conv",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=[",".join(map(str, s)) for s in DEFAULT_SHAPES + DILATED_SHAPES],
                        help="B,C,H,W (3×3, dilation 1) or B,C,H,W,K,D (K odd) ...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timing per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
    parser.add_argument("--out", default=None, help="output folder (default: ddsa_bench/results/<device-slug>)")
    parser.add_argument("--tune-cpu-memory", action="store_true",
                        help="call ddsa_kernels.tune_cpu_memory() first (glibc keeps freed memory), "
                             "as the ddsa CLIs do")
    args = parser.parse_args(argv)
    shapes = [_parse_shape(text) for text in args.shapes]
    for text, shape in zip(args.shapes, shapes):
        if shape is None:
            parser.error(f"--shapes takes B,C,H,W or B,C,H,W,K,D (positive, K odd) each, got {text!r}")
    cpu_memory = common.tuned_cpu_memory(args.tune_cpu_memory)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    result = {"benchmark": "depthwise_conv", "machine": common.machine_info(device),
              "build_info": build_info("depthwise_conv"), "cpu_memory": cpu_memory, "rows": []}
    for shape in shapes:
        row = bench_shape(shape, args.rounds, args.min_run_time)
        result["rows"].append(row)
        label = "×".join(map(str, row["shape"])) + f" {row['kernel']}×{row['kernel']} d{row['dilation']}"
        print(f"[depthwise_conv] {label:<24} " + "  | ".join(
            f"{name}: " + "  ".join(f"{n} {r['median_ms']:.2f} ms" for n, r in row[task].items())
            for task, name in (("fwd", "fwd"), ("fwdbwd", "f+b"))))
    result["machine"]["loadavg_at_end"] = common.loadavg()
    out = Path(args.out) if args.out else common.default_out_dir(device)
    out.mkdir(parents=True, exist_ok=True)
    common.write_json(out / "depthwise_conv.json", result)
    common.write_text(out / "depthwise_conv.md", render_markdown(result))
    print(f"wrote {out / 'depthwise_conv.md'}")
    return result


if __name__ == "__main__":
    main()
