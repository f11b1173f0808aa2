"""CPU speed of the depth-wise convolution ("cpu" backend) against torch's own convolution.

    python -m benchmarks.bench_depthwise_conv [--shapes 1,170,256,256 2,96,128,128] [--rounds 3]
                                              [--min-run-time 0.2] [--out benchmarks/results/<device>]

For each (B, C, H, W) and a 3×3 kernel, times the forward (no_grad) and the forward+backward (grads of
x and the weight, as in training) of:

* ``conv2d``: ``F.conv2d(..., groups=C)`` on the NCHW map — what an ``nn.Conv2d`` in the authors'
  networks runs (oneDNN on x86);
* ``conv2d_nhwc``: the same on a channels-last copy made beforehand (not timed): what a user gets by
  converting the whole network to ``torch.channels_last``;
* ``cpu``: ``ddsa_kernels.depthwise_conv`` with the C++ kernel, directly on NCHW.

The default shapes are the depth-wise convolutions of the ``ddsa-small``-sized networks of
``ddsa-bench patch``: 256² inference and the 128² batch-2 training step. Each figure is the median over
interleaved rounds (every method in turn, so a shared machine's load weighs on all alike) at torch's
current thread count. Writes ``depthwise_conv.json`` and ``depthwise_conv.md`` into ``--out``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, depthwise_conv

from . import common

DEFAULT_SHAPES = ((1, 170, 256, 256), (1, 96, 256, 256), (2, 170, 128, 128), (2, 96, 128, 128), (2, 340, 64, 64))


def _methods(x: torch.Tensor) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    c = x.shape[1]
    methods: dict[str, Callable] = {
        "conv2d": lambda t, w: F.conv2d(t, w, padding=1, groups=c),
        "conv2d_nhwc": lambda t, w: F.conv2d(t, w, padding=1, groups=c),
    }
    if build_info("depthwise_conv").get("cpu") == "available":
        methods["cpu"] = lambda t, w: depthwise_conv(t, w, backend="cpu")
    return methods


def bench_shape(shape: tuple[int, int, int, int], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method, forward and forward+backward, for one (B, C, H, W)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    w = torch.randn(shape[1], 1, 3, 3, generator=gen)
    dy = torch.randn(*shape, generator=gen)
    inputs = {"conv2d": x, "conv2d_nhwc": x.contiguous(memory_format=torch.channels_last), "cpu": x}
    grads = {"conv2d": dy, "conv2d_nhwc": dy.contiguous(memory_format=torch.channels_last), "cpu": dy}
    methods = _methods(x)
    with torch.no_grad():
        want = F.conv2d(x, w, padding=1, groups=shape[1])
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

    row: dict[str, Any] = {"shape": list(shape), "max_abs_diff_fwd": max_diff}
    for task, make in (("fwd", forward), ("fwdbwd", train)):
        row[task], row[f"speedup_{task}"] = common.interleaved_rounds(
            {n: make(n) for n in methods}, "conv2d", rounds=rounds, min_run_time=min_run_time)
    return row


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"## Depth-wise 3×3 convolution on CPU ({m['device_name']})", ""]
    warning = common.busy_warning(m)
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    rows = []
    for row in result["rows"]:
        for task in ("fwd", "fwdbwd"):
            res, sp = row[task], row[f"speedup_{task}"]
            rows.append(["×".join(map(str, row["shape"])), "forward" if task == "fwd" else "forward+backward",
                         *(common.fmt(res[n]["median_ms"]) if n in res else "–" for n in ("conv2d", "conv2d_nhwc", "cpu")),
                         f"×{sp['cpu']:.2f}" if sp.get("cpu") else "–",
                         f"×{sp['conv2d_nhwc']:.2f}" if sp.get("conv2d_nhwc") else "–"])
    lines.append(common.markdown_table(
        ["B×C×H×W", "pass", "conv2d NCHW ms", "conv2d channels-last ms", "ddsa cpu ms", "cpu vs NCHW",
         "channels-last vs NCHW"], rows))
    lines += ["", f"torch {m['torch']}, {m['torch_threads']} thread(s), fp32, commit "
              f"{(m['commit'] or {}).get('sha') or '?'}.", "",
              "* conv2d = `F.conv2d(x, w, padding=1, groups=C)` as an `nn.Conv2d` runs it; channels-last = the "
              "same on an NHWC copy made beforehand (untimed); ddsa cpu = `ddsa_kernels.depthwise_conv(..., "
              "backend=\"cpu\")` on the NCHW map.",
              "* forward+backward = gradients of x and the weight. Median over interleaved rounds."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict[str, Any]:
    return common.shape_bench_main(
        argv, benchmark="depthwise_conv", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
        shapes_help="B,C,H,W ...", bench_shape=bench_shape, render_markdown=render_markdown,
        build_info=build_info("depthwise_conv"))

if __name__ == "__main__":
    main()
