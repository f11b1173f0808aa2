"""CPU speed of Restormer's gated feed-forward (GDFN) through ``ddsa_kernels.gated_ffn`` against torch's ops.

    ddsa-bench gated-ffn [--shapes 1,16,256,256,42 ...] [--rounds 3] [--min-run-time 0.2]
                           [--out ddsa_bench/results/<device>]

Each shape B,C,H,W,h is a block on a (B, C, H, W) map with 2h hidden channels, a 3×3 depth-wise kernel, biases
off (Restormer's default) and C output channels. For every shape it times

* the forward under ``no_grad`` of
  ``eager``: Restormer's ``FeedForward``: ``F.conv2d`` 1×1, depth-wise ``F.conv2d``, ``chunk``, ``F.gelu``,
  product, ``F.conv2d`` 1×1 (oneDNN on x86);
  ``middle``: the same with ``ddsa_kernels.gated_depthwise`` for the depth-wise convolution and the gate
  (what training runs, from 64² up under ``backend="auto"``);
  ``cpu``: ``ddsa_kernels.gated_ffn(..., backend="cpu")``, the banded kernel;
* one training step, forward and backward w.r.t. x and all weights, of ``eager`` and of ``middle``.

The default shapes are the GDFN blocks of a ``ddsa-small``-sized Restormer (dim 16, expansion 2.66) at 256²
inference, level by level, and the training crop (2, 16, 128²). Medians over interleaved rounds at torch's
current thread count. Writes ``gated_ffn.json`` and ``gated_ffn.md`` into ``--out``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, gated_depthwise, gated_ffn
from ddsa_kernels.testing import eager_gated_ffn

from .. import common
from . import _harness

DEFAULT_SHAPES = ((1, 16, 256, 256, 42), (1, 32, 128, 128, 85), (1, 64, 64, 64, 170), (1, 128, 32, 32, 340),
                  (2, 16, 128, 128, 42))
FWD_METHODS = ("eager", "middle", "cpu")
STEP_METHODS = ("eager", "middle")


def _block(name: str, x: torch.Tensor, w_in: torch.Tensor, w_dw: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    if name == "eager":
        return eager_gated_ffn(x, w_in, None, w_dw, None, w_out, None)
    if name == "middle":
        return F.conv2d(gated_depthwise(F.conv2d(x, w_in), w_dw, None, backend="cpu"), w_out)
    return gated_ffn(x, w_in, None, w_dw, None, w_out, None, backend="cpu")


def bench_shape(shape: tuple[int, ...], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method's forward and of the training step for one (B, C, H, W, h) block."""
    b, c, h, w_, hidden = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w_, generator=gen)
    w_in = torch.randn(2 * hidden, c, 1, 1, generator=gen) / c ** 0.5
    w_dw = torch.randn(2 * hidden, 1, 3, 3, generator=gen) / 3
    w_out = torch.randn(c, hidden, 1, 1, generator=gen) / hidden ** 0.5
    grad = torch.randn(b, c, h, w_, generator=gen)
    have_cpu = build_info("gated_ffn").get("cpu") == "available"
    inputs = (x, w_in, w_dw, w_out)
    return _harness.time_variants(
        {"shape": list(shape)},
        {n: (lambda n=n: _block(n, *inputs)) for n in FWD_METHODS if have_cpu or n == "eager"},
        {n: _harness.grad_step(lambda *t, n=n: _block(n, *t), inputs, grad)
         for n in STEP_METHODS if have_cpu or n == "eager"},
        rounds=rounds, min_run_time=min_run_time, compare_grads=True)


def render_markdown(result: dict[str, Any]) -> str:
    fwd_rows, step_rows = [], []
    for row in result["rows"]:
        b, c, h, w, hidden = row["shape"]
        label = f"{b}×{c}×{h}×{w}, 2·{hidden} hidden"
        fwd_rows.append([label, *_harness.median_cells(row["fwd"], FWD_METHODS),
                         *_harness.speedup_cells(row["speedup_fwd"], ("middle", "cpu"))])
        step_rows.append([label, *_harness.median_cells(row["fwdbwd"], STEP_METHODS),
                          *_harness.speedup_cells(row["speedup_fwdbwd"], ("middle",))])
    body = ["### Inference (forward under no_grad)", "",
            common.markdown_table(["B×C×H×W", "eager ms", "middle ms", "banded cpu ms", "middle vs eager",
                                   "banded vs eager"], fwd_rows),
            "", "### Training step (forward + backward w.r.t. x and the weights)", "",
            common.markdown_table(["B×C×H×W", "eager ms", "middle ms", "middle vs eager"], step_rows)]
    return _harness.render_page(
        "Restormer's gated feed-forward (GDFN) on CPU", result["machine"], body,
        ["no biases", common.memory_note(result)],
        ["eager = Restormer's `FeedForward`: `F.conv2d` 1×1, depth-wise `F.conv2d`, `chunk`, `F.gelu`, "
         "product, `F.conv2d` 1×1; middle = `F.conv2d` 1×1 around `ddsa_kernels.gated_depthwise` (depth-wise "
         "convolution + GELU gate fused, forward and backward; what training runs, from 64² up under "
         "`backend=\"auto\"`); banded cpu = `ddsa_kernels.gated_ffn(..., backend=\"cpu\")` "
         "without gradients (what `backend=\"auto\"` runs from 64² up).",
         "Median over interleaved rounds."])


BENCHMARK = _harness.ShapeBenchmark(
    name="gated_ffn", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
    shapes_help="B,C,H,W,h ... (h = hidden channels; the block has 2h after project_in)",
    bench_shape=bench_shape, render_markdown=render_markdown)
main = BENCHMARK.main  # the command line (see the module docstring); returns the result it wrote


if __name__ == "__main__":
    main()
