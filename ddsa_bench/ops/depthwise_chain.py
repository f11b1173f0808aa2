"""CPU speed of the depth-wise ReLU chain ("cpu" backend) against the authors' torch ops.

    ddsa-bench depthwise-chain [--shapes 1,42,256,256 2,42,128,128] [--rounds 3]
                                 [--min-run-time 0.2] [--out ddsa_bench/results/<device>]

Each shape B,C,H,W is the chain of IDT-DDSA's SEFN on a (B, 3·C, H, W) map (C = hidden channels, one
shared 3×3 kernel): ``y1 = relu(d(x1))``, ``y2 = relu(d(y1 + x2))``, ``y3 = relu(d(y2 + x3))``,
concatenated. Times the forward (no_grad) and the forward+backward (grads of x and the weight) of:

* ``eager``: the chain as the authors write it — ``chunk``, three ``F.conv2d(..., groups=C)`` with
  ReLU and the additions, ``torch.cat`` (oneDNN on x86);
* ``cpu``: ``ddsa_kernels.depthwise_chain`` with the C++ kernel.

The default shapes are the SEFN blocks of the ``ddsa-small``-sized DDSA network of ``ddsa-bench patch``
(hidden 42 at level 1, 85 at level 2 and in the decoder's first level): 256² inference and the 128²
batch-2 training step. Medians over interleaved rounds at torch's current thread count. Writes
``depthwise_chain.json`` and ``depthwise_chain.md`` into ``--out``.
"""
from __future__ import annotations

from typing import Any

import torch

from ddsa_kernels import build_info, depthwise_chain
from ddsa_kernels.testing import eager_depthwise_chain

from .. import common
from . import _harness

DEFAULT_SHAPES = ((1, 42, 256, 256), (1, 85, 256, 256), (2, 42, 128, 128), (2, 85, 128, 128), (2, 85, 64, 64))
METHODS = ("eager", "cpu")


def bench_shape(shape: tuple[int, int, int, int], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method, forward and forward+backward, for one (B, C, H, W) chain of 3 groups."""
    b, c, h, w_ = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3 * c, h, w_, generator=gen)
    w = torch.randn(c, 1, 3, 3, generator=gen) / 3
    dy = torch.randn(b, 3 * c, h, w_, generator=gen)
    methods = {"eager": eager_depthwise_chain}
    if build_info("depthwise_chain").get("cpu") == "available":
        methods["cpu"] = lambda t, k: depthwise_chain(t, k, backend="cpu")
    return _harness.time_variants(
        {"shape": list(shape)}, {n: (lambda fn=fn: fn(x, w)) for n, fn in methods.items()},
        {n: _harness.grad_step(fn, (x, w), dy) for n, fn in methods.items()},
        rounds=rounds, min_run_time=min_run_time)


def render_markdown(result: dict[str, Any]) -> str:
    rows = []
    for row in result["rows"]:
        b, c, h, w = row["shape"]
        rows += _harness.pass_rows(row, [f"{b}×3·{c}×{h}×{w}"], METHODS, ("cpu",))
    table = common.markdown_table(["B×3·C×H×W", "pass", "eager ms", "ddsa cpu ms", "cpu vs eager"], rows)
    return _harness.render_page(
        "SEFN's depth-wise ReLU chain on CPU", result["machine"], [table], [],
        ["eager = chunk, three `F.conv2d(..., groups=C)` with ReLU and the additions, `torch.cat` (the authors' "
         "SEFN); ddsa cpu = `ddsa_kernels.depthwise_chain(..., backend=\"cpu\")`.",
         "forward+backward = gradients of x and the weight. Median over interleaved rounds."])


BENCHMARK = _harness.ShapeBenchmark(
    name="depthwise_chain", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
    shapes_help="B,C,H,W ... (C = channels per group; the map has 3·C)", bench_shape=bench_shape,
    render_markdown=render_markdown)
main = BENCHMARK.main  # the command line (see the module docstring); returns the result it wrote


if __name__ == "__main__":
    main()
