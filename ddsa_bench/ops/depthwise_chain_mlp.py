"""CPU inference speed of SEFN's 1×1 → depth-wise ReLU chain → 1×1 ("cpu" backend) against torch's ops.

    ddsa-bench depthwise-chain-mlp [--shapes 1,32,256,256,85 ...] [--rounds 3]
                                     [--min-run-time 0.2] [--out ddsa_bench/results/<device>]

Each shape B,C,H,W,C_h is a block on a (B, C, H, W) map with 3·C_h hidden channels, one shared 3×3
kernel and C output channels. Times the forward under ``no_grad`` of:

* ``eager``: the authors' SEFN without its gate: ``F.conv2d`` 1×1, ``chunk``, three ``F.conv2d(...,
  groups=C_h)`` with ReLU and the additions, ``torch.cat``, ``F.conv2d`` 1×1 (oneDNN on x86);
* ``chain``: the same with the chain as ``ddsa_kernels.depthwise_chain`` (what training runs);
* ``cpu``: ``ddsa_kernels.depthwise_chain_mlp(..., backend="cpu")``, the banded kernel.

The default shapes are the SEFN blocks of the ``ddsa-small``-sized DDSA network of ``ddsa-bench patch``
at 256² inference (level 1 and the decoder's first level, 128² at level 2) and two smaller maps where
``backend="auto"`` keeps the unfused ops. Medians over interleaved rounds at torch's current thread
count. Writes ``depthwise_chain_mlp.json`` and ``depthwise_chain_mlp.md`` into ``--out``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ddsa_kernels import build_info, depthwise_chain, depthwise_chain_mlp
from ddsa_kernels.testing import eager_depthwise_chain_mlp

from .. import common
from . import _harness

DEFAULT_SHAPES = ((1, 16, 256, 256, 42), (1, 32, 256, 256, 85), (1, 32, 128, 128, 85), (1, 64, 64, 64, 170),
                  (1, 128, 32, 32, 340))
METHODS = ("eager", "chain", "cpu")


def bench_shape(shape: tuple[int, ...], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method's forward for one (B, C, H, W, C_h) block."""
    b, c, h, w_, hidden = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w_, generator=gen)
    w_in = torch.randn(3 * hidden, c, 1, 1, generator=gen) / c ** 0.5
    w_dw = torch.randn(hidden, 1, 3, 3, generator=gen) / 3
    w_out = torch.randn(c, 3 * hidden, 1, 1, generator=gen) / (3 * hidden) ** 0.5
    methods = {"eager": lambda: eager_depthwise_chain_mlp(x, w_in, None, w_dw, None, w_out)}
    if build_info("depthwise_chain_mlp").get("cpu") == "available":
        methods["chain"] = lambda: F.conv2d(depthwise_chain(F.conv2d(x, w_in), w_dw, backend="cpu"), w_out)
        methods["cpu"] = lambda: depthwise_chain_mlp(x, w_in, None, w_dw, None, w_out, backend="cpu")
    return _harness.time_variants({"shape": list(shape)}, methods, rounds=rounds, min_run_time=min_run_time)


def render_markdown(result: dict[str, Any]) -> str:
    rows = []
    for row in result["rows"]:
        b, c, h, w, hidden = row["shape"]
        rows.append([f"{b}×{c}×{h}×{w}, 3·{hidden} hidden", *_harness.median_cells(row["fwd"], METHODS),
                     *_harness.speedup_cells(row["speedup_fwd"], ("chain", "cpu"))])
    table = common.markdown_table(
        ["B×C×H×W", "eager ms", "chain ms", "ddsa cpu ms", "chain vs eager", "cpu vs eager"], rows)
    return _harness.render_page(
        "SEFN's 1×1 → depth-wise ReLU chain → 1×1, inference on CPU", result["machine"], [table],
        ["forward under no_grad", common.memory_note(result)],
        ["eager = `F.conv2d` 1×1, the chain as chunk + three `F.conv2d(..., groups=C_h)` + ReLU + additions + "
         "`torch.cat`, `F.conv2d` 1×1 (the authors' SEFN without its gate); chain = the same with "
         "`ddsa_kernels.depthwise_chain` in the middle; ddsa cpu = `ddsa_kernels.depthwise_chain_mlp(..., "
         "backend=\"cpu\")`, the banded kernel (`backend=\"auto\"` uses it from 128² up).",
         "Median over interleaved rounds."])


BENCHMARK = _harness.ShapeBenchmark(
    name="depthwise_chain_mlp", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
    shapes_help="B,C,H,W,C_h ... (C_h = hidden channels per group; the block has 3·C_h)",
    bench_shape=bench_shape, render_markdown=render_markdown)
main = BENCHMARK.main  # the command line (see the module docstring); returns the result it wrote


if __name__ == "__main__":
    main()
