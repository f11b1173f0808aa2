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
    with torch.no_grad():
        want = eager_depthwise_chain(x, w)
        max_diff = {n: float((fn(x, w) - want).abs().max()) for n, fn in methods.items()}

    def forward(name):
        def run():
            with torch.no_grad():
                methods[name](x, w)
        return run

    def train(name):
        xin, win = x.detach().requires_grad_(True), w.detach().requires_grad_(True)

        def run():
            torch.autograd.grad(methods[name](xin, win), (xin, win), dy)
        return run

    row: dict[str, Any] = {"shape": list(shape), "max_abs_diff_fwd": max_diff}
    for task, make in (("fwd", forward), ("fwdbwd", train)):
        row[task], row[f"speedup_{task}"] = common.interleaved_rounds(
            {n: make(n) for n in methods}, "eager", rounds=rounds, min_run_time=min_run_time)
    return row


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = common.markdown_heading("SEFN's depth-wise ReLU chain on CPU", m)
    rows = []
    for row in result["rows"]:
        b, c, h, w = row["shape"]
        for task in ("fwd", "fwdbwd"):
            res, sp = row[task], row[f"speedup_{task}"]
            rows.append([f"{b}×3·{c}×{h}×{w}", "forward" if task == "fwd" else "forward+backward",
                         *(common.fmt(res[n]["median_ms"]) if n in res else "–" for n in METHODS),
                         f"×{sp['cpu']:.2f}" if sp.get("cpu") else "–"])
    lines.append(common.markdown_table(["B×3·C×H×W", "pass", "eager ms", "ddsa cpu ms", "cpu vs eager"], rows))
    lines += ["", f"torch {m['torch']}, {m['torch_threads']} thread(s), fp32, commit "
              f"{(m['commit'] or {}).get('sha') or '?'}.", "",
              "* eager = chunk, three `F.conv2d(..., groups=C)` with ReLU and the additions, `torch.cat` (the authors' "
              "SEFN); ddsa cpu = `ddsa_kernels.depthwise_chain(..., backend=\"cpu\")`.",
              "* forward+backward = gradients of x and the weight. Median over interleaved rounds."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict[str, Any]:
    return common.shape_bench_main(
        argv, benchmark="depthwise_chain", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
        shapes_help="B,C,H,W ... (C = channels per group; the map has 3·C)", bench_shape=bench_shape, render_markdown=render_markdown,
        build_info=build_info("depthwise_chain"))

if __name__ == "__main__":
    main()
