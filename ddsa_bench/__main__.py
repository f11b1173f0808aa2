"""``ddsa-bench`` / ``python -m ddsa_bench``: run a benchmark, write its JSON, render the results pages.

    ddsa-bench op    [--device cpu|cuda] [--quick|--full] [--out DIR] ...   the dual attention op (op.json)
    ddsa-bench model [--device ...] [--quick|--full] [--presets ...]        the DDSA network (model.json)
    ddsa-bench all   (op, then model)
    ddsa-bench patch [--device ...] [--families ddsa,drsformer,restormer] [--out DIR]
                     (the published-structure stand-ins, unpatched vs ddsa_kernels.patch: patch.json, patch.md)
    ddsa-bench patch --arch PATH.py:CLASS [--kwargs JSON]
                     (any network file, unpatched vs patched, time per kind of module: patch_<file>_<CLASS>.*)
    ddsa-bench op-cpu | channel-norm | depthwise-conv | depthwise-chain | depthwise-chain-mlp | gated-ffn |
               mixed-scale-ffn | cpu-memory  [their own flags; --help]          the per-op CPU benchmarks
    ddsa-bench gpu-run [--out DIR] [--dry-run]   the whole GPU run in capped stages (gpu/run.sh)
    ddsa-bench report --device DIR [DIR ...]     re-render each device folder's README.md from its JSON
    ddsa-bench report --out DIR                  re-render report.md and plots from op.json / model.json there

Results go to ddsa_bench/results/<device-slug>/ in a checkout (else ./ddsa-bench-results/<slug>).
On CPU the default of op/model is the quick subset (a few minutes on 2 cores); ``--full`` runs everything.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from . import common


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise SystemExit(f"ddsa-bench: bad --device {name!r}: {exc}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("ddsa-bench: --device cuda requested but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"ddsa-bench: --device must be cpu or cuda, got {name!r}")
    return dev


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddsa-bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--quick", dest="quick", action="store_true", default=None,
                       help="small subset (default on CPU)")
        g.add_argument("--full", dest="quick", action="store_false", help="every benchmark shape (default on CUDA)")
        p.add_argument("--out", type=Path, default=None,
                       help="output folder (default: ddsa_bench/results/<device-slug>)")
        p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
        p.add_argument("--min-run-time", type=float, default=None,
                       help="seconds per timing (default: op 0.3, 0.25 in CPU quick mode; model 0.5 on CUDA, "
                            "0.1 on CPU)")
        p.add_argument("--no-compile", action="store_true", help="skip every torch.compile baseline")
        p.add_argument("--time-budget", type=float, default=None,
                       help="seconds after which no new case/run starts (the rest is recorded as skipped)")

    op = sub.add_parser("op", help="the dual attention op against eager and torch.compile")
    common_args(op)
    _op_args(op)
    model = sub.add_parser("model", help="the full DDSA network, eager attention vs the fused op")
    common_args(model)
    _model_args(model)
    both = sub.add_parser("all", help="op, then model")
    common_args(both)
    _op_args(both)
    _model_args(both)
    pat = sub.add_parser("patch", help="a network file's network (--arch) or the three families' stand-ins, "
                                       "unpatched vs ddsa_kernels.patch")
    _patch_args(pat)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)  # parsed by the benchmark's own main()
    gpu = sub.add_parser("gpu-run", help="the GPU run in capped stages (gpu/run.sh; env: OUT, DRY_RUN, DEADLINE_S)")
    gpu.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT)")
    gpu.add_argument("--dry-run", action="store_true", help="every stage's code path on the CPU with tiny shapes")
    rep = sub.add_parser("report", help="re-render a device folder's README.md (--device) or report.md (--out)")
    where = rep.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", type=Path, nargs="+", help="device results folder(s): README.md from every JSON")
    where.add_argument("--out", type=Path, nargs="+", help="results folder(s): report.md and plots from op/model JSON")
    rep.add_argument("--readme", type=Path, default=None,
                     help="with --out: also paste goals, tables and plots between the ddsa-bench markers of this file; with "
                          "--device: regenerate the table between its patch-table markers from patch.json (and the plot)")
    return parser


# Benchmarks with a command line of their own: subcommand -> ("module:function", help).
DELEGATED = {
    "op-cpu": ("ops.dual_attention:cpu_goal_main", "the dual attention op's CPU goal at four shapes (op_cpu.json)"),
    "channel-norm": ("ops.channel_norm:main", "channel LayerNorm: cpu/reference vs the authors' wrapper"),
    "depthwise-conv": ("ops.depthwise_conv:main", "depth-wise convolution vs F.conv2d (depthwise_conv.json)"),
    "depthwise-chain": ("ops.depthwise_chain:main", "SEFN's depth-wise ReLU chain (depthwise_chain.json)"),
    "depthwise-chain-mlp": ("ops.depthwise_chain_mlp:main", "SEFN's 1×1 → chain → 1×1 (depthwise_chain_mlp.json)"),
    "gated-ffn": ("ops.gated_ffn:main", "Restormer's gated feed-forward (gated_ffn.json)"),
    "mixed-scale-ffn": ("ops.mixed_scale_ffn:main", "DRSformer's mixed-scale feed-forward (mixed_scale_ffn.json)"),
    "cpu-memory": ("networks.cpu_memory:main", "the shipped model under three allocator settings (cpu_memory.json)"),
}
GPU_RUN = Path(__file__).resolve().parent / "gpu" / "run.sh"


def _run_delegated(name: str, argv: list[str]) -> int:
    import importlib

    module, func = DELEGATED[name][0].split(":")
    getattr(importlib.import_module(f"{__package__ or 'ddsa_bench'}.{module}"), func)(argv)
    out = next((Path(v) for k, v in zip(argv, argv[1:]) if k == "--out"), None)
    if name == "channel-norm":  # --out names its JSON file; nothing is written without it
        out = out.parent if out is not None else None
    elif out is None:
        out = common.default_out_dir(torch.device("cpu"))
    _refresh_device_page(out)
    return 0


def _refresh_device_page(folder: Optional[Path]) -> None:
    """Re-render the device page after a run that wrote into the checkout's results (not elsewhere)."""
    if folder is None or not folder.is_dir():
        return
    try:
        folder.resolve().relative_to(common.RESULTS_ROOT.resolve())
    except ValueError:
        return
    from . import report

    _log(f"wrote {report.write_device_readme(folder)}")


def _run_gpu(args) -> int:
    env = dict(os.environ)
    if args.out is not None:
        env["OUT"] = str(args.out)
    if args.dry_run:
        env["DRY_RUN"] = "1"
    if not env.get("OUT"):
        raise SystemExit("ddsa-bench gpu-run: give --out DIR (or set OUT)")
    return subprocess.run(["bash", str(GPU_RUN)], env=env, check=False).returncode


def _op_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtypes", type=_csv, default=None,
                   help="e.g. float16,bfloat16 (default: fp32 on CPU, all on CUDA)")
    p.add_argument("--modes", type=_csv, default=["fwd", "fwd+bwd"], help="fwd and/or fwd+bwd")
    p.add_argument("--shapes", type=_csv, default=None, help="shape names (see op_bench.select_shapes)")
    p.add_argument("--backends", type=_csv, default=None,
                   help="implementations to time: eager, compile(eager), and package backends (default: all)")
    p.add_argument("--compile-dtypes", type=_csv, default=None,
                   help="dtypes for the torch.compile baseline (default: all on CPU, float16 on CUDA)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved timing rounds per case, median over rounds (default 3 on CPU, 1 on CUDA)")
    p.add_argument("--compile-shapes", type=_csv, default=None,
                   help="shape names for the torch.compile baseline (default: every shape)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--presets", type=_csv, default=None, help="model presets (default: ddsa-official,ddsa-small; "
                                                              "CPU quick: ddsa-small)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch (default 16 on CUDA, 2 on CPU)")
    p.add_argument("--train-size", type=int, default=None, help="training crop side (default 128)")
    p.add_argument("--infer-sizes", type=lambda s: [int(x) for x in _csv(s)], default=None,
                   help="inference image sides (default 512,1024; CPU quick: 256)")
    p.add_argument("--max-batch", dest="max_batch", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the training step at the largest batch that fits (default: on for CUDA)")
    p.add_argument("--model-compile", choices=["none", "infer", "all"], default=None,
                   help="torch.compile variants of the model (default: all on CUDA, none on CPU)")


def _patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: ddsa_bench/results/<device-slug>)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per timing and round (default 0.2 on CPU, 0.5 on CUDA)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds after which no new family starts (the rest is recorded as skipped)")
    p.add_argument("--arch", default=None, metavar="PATH.py:CLASS",
                   help="measure this nn.Module class of a Python file (imported by path) instead of the families")
    p.add_argument("--kwargs", default=None, metavar="JSON",
                   help="constructor keyword arguments for --arch, a JSON object (default: none)")
    p.add_argument("--families", type=_csv, default=None, help="ddsa,drsformer,restormer (default: all)")
    p.add_argument("--dtypes", type=_csv, default=None,
                   help="float32,bfloat16,float16: weights and inputs (default float32)")
    p.add_argument("--net", choices=["small", "tiny"], default=None,
                   help="family network size: small = ddsa-small (default); tiny for smoke tests")
    p.add_argument("--backend", default="auto", help="backend passed to ddsa_kernels.patch (default auto)")
    p.add_argument("--infer-size", type=int, default=256, help="inference image side (default 256)")
    p.add_argument("--train-batch", type=int, default=2, help="training batch (default 2)")
    p.add_argument("--train-size", type=int, default=128, help="training crop side (default 128)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds, median over rounds (default 3 on CPU, 5 on CUDA)")
    p.add_argument("--tune-cpu-memory", action="store_true",
                   help="call ddsa_kernels.tune_cpu_memory() first, as the ddsa CLIs do (glibc keeps freed memory); "
                        "both variants run under it")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the unpatched and of the patched network (compiles each: minutes "
                        "on a small CPU)")


def _run_patch(args, device: torch.device, out: Path, cpu_memory: Optional[dict[str, bool]]) -> Path:
    from .networks import patch as patch_bench

    if args.kwargs is not None and args.arch is None:
        raise ValueError("--kwargs applies to --arch")
    if args.arch is not None and args.net is not None:
        raise ValueError("--net sizes the family networks; with --arch pass the size in --kwargs")
    kwargs = patch_bench.parse_kwargs(args.kwargs)
    what = f"--arch {args.arch}" if args.arch else f"net {args.net or 'small'}"
    _log(f"[patch] device {common.device_name(device)}; {what}; writing {out}")
    result = patch_bench.run_patch_bench(
        device, families=args.families, arch=args.arch, arch_kwargs=kwargs, dtypes=args.dtypes,
        net=args.net or "small", backend=args.backend, infer_size=args.infer_size,
        train_batch=args.train_batch, train_size=args.train_size, rounds=args.rounds,
        min_run_time=args.min_run_time, time_budget_s=args.time_budget, cpu_memory=cpu_memory, compile=args.compile,
        on_family=lambda r: patch_bench.write_outputs(out, r), log=_log,
    )
    return patch_bench.write_outputs(out, result)


def _log(msg: str) -> None:
    print(msg, flush=True)


def _run_op(args, device: torch.device, out: Path, quick: bool) -> None:
    from .ops import dual_attention as op_bench

    min_run = args.min_run_time or (0.25 if quick and device.type == "cpu" else 0.3)
    compile_dtypes = [] if args.no_compile else args.compile_dtypes
    backends = args.backends
    _log(f"[op] device {common.device_name(device)}; {'quick' if quick else 'full'} mode; writing {out}/op.json")
    if quick and device.type == "cpu":
        _log(f"[op] {op_bench.QUICK_NOTE_CPU}")
    result = op_bench.run_op_bench(
        device, quick=quick, dtypes=args.dtypes, modes=args.modes, shapes=args.shapes, backends=backends,
        compile_dtypes=compile_dtypes, compile_shapes=args.compile_shapes, min_run_time=min_run, rounds=args.rounds,
        time_budget_s=args.time_budget,
        on_case=lambda r: common.write_json(out / "op.json", r), log=_log,
    )
    common.write_json(out / "op.json", result)


def _run_model(args, device: torch.device, out: Path, quick: bool) -> None:
    from .networks import model as model_bench

    compile_mode = "none" if args.no_compile else args.model_compile
    _log(f"[model] device {common.device_name(device)}; {'quick' if quick else 'full'} mode; writing {out}/model.json")
    result = model_bench.run_model_bench(
        device, quick=quick, presets=args.presets, train_batch=args.train_batch, train_size=args.train_size,
        infer_sizes=args.infer_sizes,
        compile_mode=compile_mode, max_batch=args.max_batch, min_run_time=args.min_run_time,
        time_budget_s=args.time_budget,
        on_run=lambda r: common.write_json(out / "model.json", r), log=_log,
    )
    common.write_json(out / "model.json", result)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return _run_delegated(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from . import report

    if args.command == "gpu-run":
        return _run_gpu(args)
    if args.command == "report" and args.device:
        for folder in args.device:
            if not folder.is_dir():
                raise SystemExit(f"ddsa-bench report: {folder} is not a folder")
            _log(f"wrote {report.write_device_readme(folder)}")
        if args.readme:
            if len(args.device) != 1 or not (args.device[0] / "patch.json").exists():
                raise SystemExit("ddsa-bench report: --readme with --device takes one device folder with a patch.json")
            try:
                notes = report.update_patch_table(args.readme, args.device[0])
            except (OSError, ValueError) as exc:
                raise SystemExit(f"ddsa-bench report: {exc}") from None
            for note in notes:
                _log(note)
            _log(f"updated the patch table of {args.readme}")
        return 0
    if args.command == "report":
        folders = []
        for folder in args.out:
            if not folder.is_dir():
                raise SystemExit(f"ddsa-bench report: {folder} is not a folder")
            if not ((folder / "op.json").exists() or (folder / "model.json").exists()):
                _log(f"skipping {folder}: no op.json or model.json")
                continue
            _log(f"wrote {report.write_report(folder)}")
            folders.append(folder.resolve())
        if args.readme:
            try:
                report.update_readme(args.readme, folders)
            except (OSError, ValueError) as exc:
                raise SystemExit(f"ddsa-bench report: {exc}") from None
            _log(f"updated {args.readme}")
        return 0
    cpu_memory = common.tuned_cpu_memory(getattr(args, "tune_cpu_memory", False))  # before any large tensor
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = getattr(args, "quick", None)
    quick = quick if quick is not None else device.type == "cpu"
    out = args.out or common.default_out_dir(device)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.command == "patch":
        try:
            path = _run_patch(args, device, out, cpu_memory)
        except (ValueError, RuntimeError) as exc:
            raise SystemExit(f"ddsa-bench patch: {exc}") from None
        _log(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
        _refresh_device_page(out)
        return 0
    try:
        if args.command in ("op", "all"):
            _run_op(args, device, out, quick)
            report.write_report(out)
        if args.command in ("model", "all"):
            _run_model(args, device, out, quick)
    except (ValueError, RuntimeError) as exc:  # bad arguments or a missing package: one clear line
        raise SystemExit(f"ddsa-bench {args.command}: {exc}") from None
    path = report.write_report(out)
    _log(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
    _refresh_device_page(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
