"""CPU speed of DRSformer's mixed-scale feed-forward (``ddsa_kernels.mixed_scale_ffn``) against torch's ops.

    ddsa-bench mixed-scale-ffn [--shapes 1,16,256,256 ...] [--rounds 3]
                                 [--min-run-time 0.2] [--out ddsa_bench/results/<device>]

Each shape B,C,H,W is a block on a (B, C, H, W) map with h = int(2.66·C) hidden channels (DRSformer's
expansion factor), the published kernel sizes (3×3 and 5×5 in both stages) and biases. Times of:

* ``eager``: the authors' formulation: ``F.conv2d`` 1×1, two depth-wise ``F.conv2d`` + ReLU, ``chunk``,
  ``cat``, two grouped ``F.conv2d`` + ReLU, ``cat``, ``F.conv2d`` 1×1 (oneDNN on x86);
* ``middle``: ``F.conv2d`` 1×1 around the fused depth-wise middle (what training runs, and ``auto`` for
  maps under ``MIN_FUSED_PIXELS``);
* ``cpu``: ``mixed_scale_ffn(..., backend="cpu")``: the banded kernel without gradients, the middle's
  forward and backward with them.

Every shape is timed forward under ``no_grad``; shapes with B > 1 are training steps and also timed
forward+backward (gradients of x and every weight). The default shapes are DRSformer's blocks at 256²
inference per level (C = 16 at 256², 32 at 128², 64 at 64², 128 at 32²) and a batch-2 training step on
128² crops. Medians over interleaved rounds at torch's current thread count. Writes
``mixed_scale_ffn.json`` and ``mixed_scale_ffn.md`` into ``--out``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, mixed_scale_ffn
from ddsa_kernels.testing import eager_mixed_scale_ffn
from ddsa_kernels.ops.mixed_scale_ffn import mixed_scale_middle

from .. import common
from . import _harness

FACTOR = 2.66
DEFAULT_SHAPES = ((1, 16, 256, 256), (1, 32, 128, 128), (1, 64, 64, 64), (1, 128, 32, 32), (2, 16, 128, 128))
METHODS = ("eager", "middle", "cpu")
PASS_LABELS = {"fwd": "inference", "fwdbwd": "forward+backward"}


def block_weights(c: int, gen: torch.Generator) -> list[torch.Tensor]:
    """w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out of a block on C channels."""
    h = int(c * FACTOR)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    return [rnd(2 * h, c, 1, 1, scale=c ** -0.5), rnd(2 * h, scale=0.1), rnd(2 * h, 1, 3, 3, scale=1 / 3),
            rnd(2 * h, scale=0.1), rnd(2 * h, 1, 5, 5, scale=1 / 5), rnd(2 * h, scale=0.1),
            rnd(h, 2, 3, 3, scale=1 / 3), rnd(h, scale=0.1), rnd(h, 2, 5, 5, scale=1 / 5), rnd(h, scale=0.1),
            rnd(c, 2 * h, 1, 1, scale=(2 * h) ** -0.5), rnd(c, scale=0.1)]


def bench_shape(shape: tuple[int, ...], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method for one (B, C, H, W) block: forward, and forward+backward when B > 1."""
    b, c, h, w_ = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w_, generator=gen)
    weights = block_weights(c, gen)
    dz = torch.randn(b, c, h, w_, generator=gen)
    methods = {"eager": lambda t, *ws: eager_mixed_scale_ffn(t, *ws)}
    if build_info("mixed_scale_ffn").get("cpu") == "available":
        methods["middle"] = lambda t, *ws: F.conv2d(mixed_scale_middle(F.conv2d(t, ws[0], ws[1]), *ws[2:10],
                                                                       backend="cpu"), ws[10], ws[11])
        methods["cpu"] = lambda t, *ws: mixed_scale_ffn(t, *ws, backend="cpu")
    train = {}
    if b > 1:  # with gradients "cpu" runs the middle
        train = {n: _harness.grad_step(fn, (x, *weights), dz) for n, fn in methods.items() if n != "middle"}
    return _harness.time_variants(
        {"shape": list(shape), "hidden": int(c * FACTOR)},
        {n: (lambda fn=fn: fn(x, *weights)) for n, fn in methods.items()}, train,
        rounds=rounds, min_run_time=min_run_time)


def render_markdown(result: dict[str, Any]) -> str:
    rows = []
    for row in result["rows"]:
        b, c, h, w = row["shape"]
        rows += _harness.pass_rows(row, [f"{b}×{c}×{h}×{w}, 2·{row['hidden']} hidden"], METHODS, ("middle", "cpu"),
                                   PASS_LABELS)
    table = common.markdown_table(
        ["B×C×H×W", "pass", "eager ms", "middle ms", "ddsa cpu ms", "middle vs eager", "cpu vs eager"], rows)
    return _harness.render_page(
        "DRSformer's mixed-scale feed-forward on CPU", result["machine"], [table], [common.memory_note(result)],
        ["eager = the authors' `F.conv2d` 1×1, depth-wise 3×3 and 5×5 + ReLU, chunk / cat, grouped 3×3 and "
         "5×5 + ReLU, cat, `F.conv2d` 1×1; middle = `F.conv2d` 1×1 around the fused depth-wise middle "
         "(`mixed_scale_middle(..., backend=\"cpu\")`); ddsa cpu = `ddsa_kernels.mixed_scale_ffn(..., "
         "backend=\"cpu\")`: the banded kernel for inference, the middle's forward and backward for training.",
         "inference under `no_grad`; forward+backward = gradients of x and all twelve weights and biases. "
         "Median over interleaved rounds."])


BENCHMARK = _harness.ShapeBenchmark(
    name="mixed_scale_ffn", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
    shapes_help="B,C,H,W ... (h = int(2.66·C) hidden channels; B > 1 also times forward+backward)",
    bench_shape=bench_shape, render_markdown=render_markdown)
main = BENCHMARK.main  # the command line (see the module docstring); returns the result it wrote


if __name__ == "__main__":
    main()
