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

DEFAULT_SHAPES = ((1, 16, 256, 256, 42), (1, 32, 128, 128, 85), (1, 64, 64, 64, 170), (1, 128, 32, 32, 340),
                  (2, 16, 128, 128, 42))
FWD_METHODS = ("eager", "middle", "cpu")
STEP_METHODS = ("eager", "middle")


def bench_shape(shape: tuple[int, ...], rounds: int, min_run_time: float) -> dict[str, Any]:
    """Median ms of every method's forward and of the training step for one (B, C, H, W, h) block."""
    b, c, h, w_, hidden = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w_, generator=gen)
    w_in = torch.randn(2 * hidden, c, 1, 1, generator=gen) / c ** 0.5
    w_dw = torch.randn(2 * hidden, 1, 3, 3, generator=gen) / 3
    w_out = torch.randn(c, hidden, 1, 1, generator=gen) / hidden ** 0.5
    have_cpu = build_info("gated_ffn").get("cpu") == "available"

    def block(name: str, xs, wi, wd, wo):
        if name == "eager":
            return eager_gated_ffn(xs, wi, None, wd, None, wo, None)
        if name == "middle":
            return F.conv2d(gated_depthwise(F.conv2d(xs, wi), wd, None, backend="cpu"), wo)
        return gated_ffn(xs, wi, None, wd, None, wo, None, backend="cpu")

    fwd_names = [n for n in FWD_METHODS if have_cpu or n == "eager"]
    step_names = [n for n in STEP_METHODS if have_cpu or n == "eager"]
    with torch.no_grad():
        want = block("eager", x, w_in, w_dw, w_out)
        max_diff = {n: float((block(n, x, w_in, w_dw, w_out) - want).abs().max()) for n in fwd_names}
    leaves = [t.clone().requires_grad_(True) for t in (x, w_in, w_dw, w_out)]
    grad = torch.randn(want.shape, generator=gen)

    def step_grads(name):
        return torch.autograd.grad(block(name, *leaves), leaves, grad)

    ref_grads = step_grads("eager")
    max_diff_grad = {n: max(float((g - r).abs().max()) for g, r in zip(step_grads(n), ref_grads)) for n in step_names}

    def forward(name):
        def run():
            with torch.no_grad():
                block(name, x, w_in, w_dw, w_out)
        return run

    def step(name):
        def run():
            step_grads(name)
        return run

    row: dict[str, Any] = {"shape": list(shape), "max_abs_diff_fwd": max_diff, "max_abs_diff_grad": max_diff_grad}
    row["fwd"], row["speedup_fwd"] = common.interleaved_rounds(
        {n: forward(n) for n in fwd_names}, "eager", rounds=rounds, min_run_time=min_run_time)
    row["fwdbwd"], row["speedup_fwdbwd"] = common.interleaved_rounds(
        {n: step(n) for n in step_names}, "eager", rounds=rounds, min_run_time=min_run_time)
    return row


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = common.markdown_heading("Restormer's gated feed-forward (GDFN) on CPU", m)
    fwd_rows, step_rows = [], []
    for row in result["rows"]:
        b, c, h, w, hidden = row["shape"]
        label = f"{b}×{c}×{h}×{w}, 2·{hidden} hidden"
        res, sp = row["fwd"], row["speedup_fwd"]
        fwd_rows.append([label, *(common.fmt(res[n]["median_ms"]) if n in res else "–" for n in FWD_METHODS),
                         *(f"×{sp[n]:.2f}" if sp.get(n) else "–" for n in ("middle", "cpu"))])
        res, sp = row["fwdbwd"], row["speedup_fwdbwd"]
        step_rows.append([label, *(common.fmt(res[n]["median_ms"]) if n in res else "–" for n in STEP_METHODS),
                          f"×{sp['middle']:.2f}" if sp.get("middle") else "–"])
    lines += ["### Inference (forward under no_grad)", ""]
    lines.append(common.markdown_table(
        ["B×C×H×W", "eager ms", "middle ms", "banded cpu ms", "middle vs eager", "banded vs eager"], fwd_rows))
    lines += ["", "### Training step (forward + backward w.r.t. x and the weights)", ""]
    lines.append(common.markdown_table(["B×C×H×W", "eager ms", "middle ms", "middle vs eager"], step_rows))
    memory = common.memory_note(result)
    lines += ["", f"torch {m['torch']}, {m['torch_threads']} thread(s), fp32, no biases, {memory}, commit "
              f"{(m['commit'] or {}).get('sha') or '?'}.", "",
              "* eager = Restormer's `FeedForward`: `F.conv2d` 1×1, depth-wise `F.conv2d`, `chunk`, `F.gelu`, "
              "product, `F.conv2d` 1×1; middle = `F.conv2d` 1×1 around `ddsa_kernels.gated_depthwise` (depth-wise "
              "convolution + GELU gate fused, forward and backward; what training runs, from 64² up under "
              "`backend=\"auto\"`); banded cpu = `ddsa_kernels.gated_ffn(..., backend=\"cpu\")` "
              "without gradients (what `backend=\"auto\"` runs from 64² up).",
              "* Median over interleaved rounds."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict[str, Any]:
    return common.shape_bench_main(
        argv, benchmark="gated_ffn", description=__doc__.splitlines()[0], default_shapes=DEFAULT_SHAPES,
        shapes_help="B,C,H,W,h ... (h = hidden channels; the block has 2h after project_in)",
        bench_shape=bench_shape, render_markdown=render_markdown, build_info=build_info("gated_ffn"))


if __name__ == "__main__":
    main()
