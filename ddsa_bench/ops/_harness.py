"""The per-shape CPU op benchmarks' shared harness.

An op's module says what is its own (default shapes, the variants it times, how to build their inputs,
its markdown tables); this module loops over the shapes, times every variant side by side in interleaved
rounds, builds the rows and writes ``<benchmark>.json`` and ``<benchmark>.md``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .. import common

PASS_LABELS = {"fwd": "forward", "fwdbwd": "forward+backward"}


# ----------------------------------------------------------------------------- one shape
def grad_step(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
              grad: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
    """A training step of ``fn`` on leaf copies of ``inputs``: the call returns the gradients of all of
    them for the output gradient ``grad``."""
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    return lambda: torch.autograd.grad(fn(*leaves), leaves, grad)


def _no_grad(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn()
    return run


def time_variants(fields: Mapping[str, Any], forward: Mapping[str, Callable[[], torch.Tensor]],
                  train: Optional[Mapping[str, Callable[[], Any]]] = None, *, rounds: int, min_run_time: float,
                  compare_grads: bool = False) -> dict[str, Any]:
    """One row of a per-shape benchmark: ``fields`` (the shape, ...), the largest difference of each
    variant's forward from the first one's (the baseline), then the median ms and the speed-up over the
    baseline of every forward under ``no_grad`` (``fwd``) and of every training step in ``train``
    (``fwdbwd``), each pass's variants timed in interleaved rounds. ``compare_grads`` also records the
    largest difference of each step's gradients (what its call returns) from the baseline step's."""
    baseline = next(iter(forward))
    row: dict[str, Any] = dict(fields)
    with torch.no_grad():
        want = forward[baseline]()
        row["max_abs_diff_fwd"] = {n: float((fn() - want).abs().max()) for n, fn in forward.items()}
    if compare_grads and train:
        ref = train[baseline]()
        row["max_abs_diff_grad"] = {n: max(float((g - r).abs().max()) for g, r in zip(step(), ref))
                                    for n, step in train.items()}
    passes = {"fwd": {n: _no_grad(fn) for n, fn in forward.items()}}
    if train:
        passes["fwdbwd"] = dict(train)
    for task, fns in passes.items():
        row[task], row[f"speedup_{task}"] = common.interleaved_rounds(
            fns, baseline, rounds=rounds, min_run_time=min_run_time)
    return row


# ----------------------------------------------------------------------------- markdown
def median_cells(times: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The median ms of each of ``names`` in one pass's timings, ``–`` for a variant not timed."""
    return [common.fmt(times[n]["median_ms"]) if n in times else "–" for n in names]


def speedup_cells(speedups: Mapping[str, Optional[float]], names: Sequence[str]) -> list[str]:
    """``×1.23`` for each of ``names`` with a speed-up, ``–`` for the others."""
    return [f"×{speedups[n]:.2f}" if speedups.get(n) else "–" for n in names]


def pass_rows(row: Mapping[str, Any], label: Sequence[str], names: Sequence[str], speedup_names: Sequence[str],
              pass_labels: Mapping[str, str] = PASS_LABELS) -> list[list[str]]:
    """One table row per pass a shape's row holds (``fwd``, then ``fwdbwd``): the ``label`` cells, the
    pass, the median ms of ``names`` and the speed-ups of ``speedup_names``."""
    return [[*label, pass_labels[task], *median_cells(row[task], names),
             *speedup_cells(row[f"speedup_{task}"], speedup_names)] for task in PASS_LABELS if task in row]


def render_page(title: str, machine: Mapping[str, Any], body: list[str], details: Sequence[str],
                bullets: Sequence[str]) -> str:
    """A benchmark's markdown: the heading, ``body`` (its tables), the line naming torch, the thread count,
    ``fp32``, the run's ``details`` and the commit, then ``bullets``."""
    commit = (machine["commit"] or {}).get("sha") or "?"
    note = (f"torch {machine['torch']}, {machine['torch_threads']} thread(s), "
            + ", ".join(["fp32", *details]) + f", commit {commit}.")
    lines = common.markdown_heading(title, machine) + body + ([""] if body else [])
    lines += [note, "", *(f"* {b}" for b in bullets)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line
def sizes(text: str, lengths: Collection[int]) -> Optional[tuple[int, ...]]:
    """``text`` as comma-separated positive whole numbers, if there are as many as one of ``lengths``."""
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    return parts if len(parts) in lengths and min(parts) >= 1 else None


def shape_label(row: Mapping[str, Any]) -> str:
    return "×".join(map(str, row["shape"]))


@dataclass(frozen=True)
class ShapeBenchmark:
    """A per-shape CPU benchmark: ``bench_shape(shape, rounds, min_run_time)`` makes each shape's row,
    ``render_markdown(result)`` the page. ``name`` is also the op whose ``build_info`` it records.

    By default a shape is as many positive sizes as the default shapes have; ``parse_shape`` (None for
    a bad one) and ``shapes_rule`` (what the error message says a shape must be) change that."""

    name: str
    description: str
    default_shapes: tuple[tuple[int, ...], ...]
    shapes_help: str
    bench_shape: Callable[[tuple[int, ...], int, float], dict[str, Any]]
    render_markdown: Callable[[dict[str, Any]], str]
    parse_shape: Optional[Callable[[str], Optional[tuple[int, ...]]]] = None
    shapes_rule: Optional[str] = None
    row_label: Callable[[Mapping[str, Any]], str] = shape_label
    label_width: int = 16

    def _parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"ddsa-bench {self.name.replace('_', '-')}",
                                         description=self.description)
        parser.add_argument("--shapes", nargs="+", default=[",".join(map(str, s)) for s in self.default_shapes],
                            help=self.shapes_help)
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timing per measurement")
        parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
        parser.add_argument("--out", default=None, help="output folder (default: ddsa_bench/results/<device-slug>)")
        parser.add_argument("--tune-cpu-memory", action="store_true",
                            help="call ddsa_kernels.tune_cpu_memory() first (glibc keeps freed memory), "
                                 "as the ddsa CLIs do")
        return parser

    def _shapes(self, parser: argparse.ArgumentParser, texts: list[str]) -> list[tuple[int, ...]]:
        arity = len(self.default_shapes[0])
        parse = self.parse_shape or (lambda text: sizes(text, (arity,)))
        rule = self.shapes_rule or f"{arity} positive sizes each ({self.shapes_help})"
        shapes = []
        for text in texts:
            shape = parse(text)
            if shape is None:
                parser.error(f"--shapes takes {rule}, got {text!r}")
            shapes.append(shape)
        return shapes

    def _print_row(self, row: Mapping[str, Any]) -> None:
        print(f"[{self.name}] {self.row_label(row):<{self.label_width}} " + "  | ".join(
            f"{label}: " + "  ".join(f"{n} {r['median_ms']:.2f} ms" for n, r in row[task].items())
            for task, label in (("fwd", "fwd"), ("fwdbwd", "f+b")) if task in row))

    def main(self, argv: Optional[list[str]] = None) -> dict[str, Any]:
        """Parse ``--shapes ... --rounds --min-run-time --threads --tune-cpu-memory --out``, make every
        shape's row (printing one line each), write ``<name>.json`` and ``<name>.md``; returns the result."""
        from ddsa_kernels import build_info

        parser = self._parser()
        args = parser.parse_args(argv)
        shapes = self._shapes(parser, args.shapes)
        cpu_memory = common.tuned_cpu_memory(args.tune_cpu_memory)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device("cpu")
        result = {"benchmark": self.name, "machine": common.machine_info(device, ops=(self.name,)),
                  "build_info": build_info(self.name), "cpu_memory": cpu_memory, "rows": []}
        for shape in shapes:
            row = self.bench_shape(shape, args.rounds, args.min_run_time)
            result["rows"].append(row)
            self._print_row(row)
        common.write_results(result, self.render_markdown, device, args.out)
        return result
