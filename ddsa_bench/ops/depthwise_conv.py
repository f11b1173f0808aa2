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

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, depthwise_conv

from .. import common
from . import _harness

DEFAULT_SHAPES = ((1, 170, 256, 256), (1, 96, 256, 256), (2, 170, 128, 128), (2, 96, 128, 128), (2, 340, 64, 64))
# DRSformer's MEFC subnet: DilConv's depth-wise K×K convolutions with dilation 2 (B, C, H, W, K, D)
DILATED_SHAPES = tuple((b, c, s, s, k, 2) for b, s in ((1, 256), (2, 128)) for c in (16, 32) for k in (3, 5, 7))
METHODS = ("conv2d", "conv2d_nhwc", "cpu")


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
    return _harness.time_variants(
        {"shape": list(size), "kernel": k, "dilation": d},
        {n: (lambda n=n, fn=fn: fn(inputs[n], w)) for n, fn in methods.items()},
        {n: _harness.grad_step(fn, (inputs[n], w), grads[n]) for n, fn in methods.items()},
        rounds=rounds, min_run_time=min_run_time)


def _table_rows(rows: list[dict[str, Any]], with_kernel: bool) -> list[list[str]]:
    out = []
    for row in rows:
        kernel = [f"{row['kernel']}×{row['kernel']}", str(row["dilation"])] if with_kernel else []
        out += _harness.pass_rows(row, [_harness.shape_label(row), *kernel], METHODS, ("cpu", "conv2d_nhwc"))
    return out


def render_markdown(result: dict[str, Any]) -> str:
    times = ["conv2d NCHW ms", "conv2d channels-last ms", "ddsa cpu ms", "cpu vs NCHW", "channels-last vs NCHW"]
    plain = [r for r in result["rows"] if (r.get("kernel", 3), r.get("dilation", 1)) == (3, 1)]
    other = [r for r in result["rows"] if r not in plain]
    body: list[str] = []
    if plain:
        body += ["### 3×3, dilation 1", "", common.markdown_table(["B×C×H×W", "pass", *times],
                                                                  _table_rows(plain, False))]
    if other:
        body += [""] if body else []
        body += ["### Other kernels and dilations (dilation 2: DRSformer's MEFC subnet)", "",
                 common.markdown_table(["B×C×H×W", "kernel", "dilation", "pass", *times], _table_rows(other, True))]
    return _harness.render_page(
        "Depth-wise convolution on CPU", result["machine"], body, [],
        ["conv2d = `F.conv2d(x, w, padding=d·(K // 2), dilation=d, groups=C)` as an `nn.Conv2d` runs it; "
         "channels-last = the same on an NHWC copy made beforehand (untimed); ddsa cpu = "
         "`ddsa_kernels.depthwise_conv(..., dilation=d, backend=\"cpu\")` on the NCHW map.",
         "forward+backward = gradients of x and the weight. Median over interleaved rounds."])


def _parse_shape(text: str) -> Optional[tuple[int, ...]]:
    parts = _harness.sizes(text, (4, 6))
    return None if parts is None or (len(parts) == 6 and parts[4] % 2 == 0) else parts


def _row_label(row: dict[str, Any]) -> str:
    return _harness.shape_label(row) + f" {row['kernel']}×{row['kernel']} d{row['dilation']}"


BENCHMARK = _harness.ShapeBenchmark(
    name="depthwise_conv", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES + DILATED_SHAPES,
    shapes_help="B,C,H,W (3×3, dilation 1) or B,C,H,W,K,D (K odd) ...", bench_shape=bench_shape,
    render_markdown=render_markdown, parse_shape=_parse_shape,
    shapes_rule="B,C,H,W or B,C,H,W,K,D (positive, K odd) each", row_label=_row_label, label_width=24)
main = BENCHMARK.main  # the command line (see the module docstring); returns the result it wrote


if __name__ == "__main__":
    main()
