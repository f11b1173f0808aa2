"""The Python side of ``ddsa_bench/gpu/run.sh``: one subcommand per stage that needs Python.

    python -m ddsa_bench.gpu.stages env     --out DIR [--build-log F --build-seconds S --build-rc RC]
    python -m ddsa_bench.gpu.stages op      --out DIR --device cuda|cpu [--dry-run]
    python -m ddsa_bench.gpu.stages kernels --out DIR --device cuda|cpu [--dry-run]
    python -m ddsa_bench.gpu.stages train   --out DIR --device cuda|cpu [--dry-run]
    python -m ddsa_bench.gpu.stages tests   --out DIR [--dry-run] [--time-budget S]

Every subcommand writes its JSON under DIR as soon as it has something (atomically, after each
case), so a crash or a timeout later keeps what was measured (env.json, op.json, kernels.json,
train.json). ``ddsa_bench/summary.py`` (no torch) records the stages and renders summary.md.

Units: times in ms, memory in bytes (MiB in the markdown), bandwidth in GB/s (1e9 B/s).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from .. import common

# The op's goal shape (the main inference case) and the dtypes, fp16 first.
MAIN_SHAPE = "infer-1024"
GPU_DTYPES = ("float16", "bfloat16", "float32")
GPU_OP_SHAPES = ("infer-1024", "infer-2048", "train-L1", "train-L2", "train-L4", "drsformer-train-L1")
DRY_OP_SHAPES = ("infer-128",)


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]


def _log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- env
def _nvidia_smi() -> dict[str, Optional[str]]:
    """Driver version and GPU name as nvidia-smi reports them (None without the tool)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return {"driver": None, "nvidia_smi_gpu": None}
    try:
        line = subprocess.run([tool, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        driver, name = (x.strip() for x in line.split(",", 1))
        return {"driver": driver, "nvidia_smi_gpu": name}
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return {"driver": None, "nvidia_smi_gpu": None}


def env_info(device: torch.device) -> dict[str, Any]:
    """Versions (torch, Triton, CUDA, driver), the device, the commit and ``build_info()``."""
    info = common.machine_info(device)
    info.update(_nvidia_smi())
    info["device_slug"] = common.device_slug(device)
    info["torch_cuda_arch_list"] = os.environ.get("TORCH_CUDA_ARCH_LIST")
    try:
        from ddsa_kernels import _extension as extension

        info["extension_has_cuda_kernels"] = extension.has_cuda_kernels()
    except ImportError as exc:
        info["extension_has_cuda_kernels"] = None
        info["extension_error"] = str(exc)[:500]
    return info


def cmd_env(args) -> int:
    device = _device(args.device)
    info = env_info(device)
    info["build"] = {
        "seconds": args.build_seconds,
        "rc": args.build_rc,
        "log": args.build_log,
        "max_jobs": os.environ.get("MAX_JOBS"),
        "command": args.build_command,
        "skipped": args.build_skipped,
    }
    common.write_json(Path(args.out) / "env.json", info)
    _log(f"[env] {info['device_name']}: torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}, "
         f"driver {info['driver']}; backends {info['ddsa_backends']}")
    return 0


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ----------------------------------------------------------------------------- op benchmark
def gpu_backends(device: torch.device) -> list[str]:
    """The fused backends timed per kernel on ``device``: every available one of triton and cuda on
    CUDA; on CPU (dry runs) the extension's cpu backend, else the reference."""
    from ddsa_kernels import available_backends

    avail = available_backends(device, op="dual_attention")
    if device.type == "cuda":
        return [b for b in ("triton", "cuda") if b in avail]
    return [b for b in ("cpu",) if b in avail] or ["reference"]


def cmd_op(args) -> int:
    from ..ops import dual_attention as op_bench

    device = _device(args.device)
    out = Path(args.out)
    if args.dry_run:
        shapes, dtypes, min_run, budget = list(DRY_OP_SHAPES), ["float32"], 0.01, None
        compile_dtypes: list[str] = []
    else:
        shapes, dtypes, min_run, budget = list(GPU_OP_SHAPES), list(GPU_DTYPES), 0.1, args.time_budget
        compile_dtypes = ["float16"]
    backends = ["eager", "compile(eager)", *gpu_backends(device)]
    _log(f"[op] {device}: backends {backends}, shapes {shapes}, dtypes {dtypes}")
    result = op_bench.run_op_bench(
        device, quick=args.dry_run, dtypes=dtypes, shapes=shapes, backends=backends,
        compile_dtypes=compile_dtypes, compile_shapes=[MAIN_SHAPE], baseline_shapes=[MAIN_SHAPE, *DRY_OP_SHAPES],
        min_run_time=min_run, rounds=1, time_budget_s=budget,
        on_case=lambda r: common.write_json(out / "op.json", r), log=_log,
    )
    common.write_json(out / "op.json", result)
    return 0


# ----------------------------------------------------------------------------- per-kernel breakdown
KERNEL_STAGES = (("gram", ("outer_sweep", "gram")), ("epilogue", ("epilogue",)), ("apply", ("apply",)))


def kernel_stage(name: str) -> str:
    """Which stage of the op a kernel (by its name) belongs to: gram, epilogue, apply or other."""
    low = name.lower()
    for stage, keys in KERNEL_STAGES:
        if any(k in low for k in keys):
            return stage
    return "other"


def _profile(fn: Callable[[], Any], device: torch.device, iters: int) -> dict[str, Any]:
    """Per-kernel device time of ``fn`` (ms per call), summed by name and by stage."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    common.synchronize(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(iters):
            fn()
        common.synchronize(device)
    kernels: dict[str, float] = {}
    for ev in prof.key_averages():
        if device.type == "cuda":
            us = getattr(ev, "self_device_time_total", None)
            if us is None:
                us = getattr(ev, "self_cuda_time_total", 0.0)
            if not us or ev.key.startswith(("cudaLaunch", "cuLaunch", "aten::", "ddsa::")):
                continue
        else:  # CPU dry run: the top-level ops, by their own time
            us = ev.self_cpu_time_total
            if not us:
                continue
        kernels[ev.key] = kernels.get(ev.key, 0.0) + us / 1e3 / iters
    stages: dict[str, float] = {}
    for name, ms in kernels.items():
        stage = kernel_stage(name)
        stages[stage] = stages.get(stage, 0.0) + ms
    return {"kernels_ms": dict(sorted(kernels.items(), key=lambda kv: -kv[1])), "stages_ms": stages,
            "total_ms": sum(kernels.values())}


def kernel_breakdown(backend: str, shape, dtype: torch.dtype, device: torch.device, iters: int) -> dict[str, Any]:
    """Forward and backward of one backend, profiled separately (backend functions called directly)."""
    from ddsa_kernels import _registry

    from ..ops import dual_attention as op_bench

    impl = _registry.implementation("dual_attention", backend)
    (q, k, v, t, w), g = op_bench.make_inputs(shape, dtype, device, requires_grad=False)
    keep = tuple(0 if x is None else x for x in shape.topk())
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    t, w = t.to(acc), w.to(acc)
    stats = impl.forward(q, k, v, t, w, keep, 1e-12)
    probs, gram, norms = stats[1:]
    fwd = _profile(lambda: impl.forward(q, k, v, t, w, keep, 1e-12), device, iters)
    bwd = _profile(lambda: impl.backward(g, q, k, v, t, w, probs, gram, norms, keep, 1e-12), device, iters)
    elem = q.element_size()
    floor_fwd = common.dram_floor_bytes(shape.batch, shape.heads, shape.channels, shape.pixels, elem, "fwd")
    floor_bwd = (common.dram_floor_bytes(shape.batch, shape.heads, shape.channels, shape.pixels, elem, "fwd+bwd")
                 - floor_fwd)
    return {"fwd": fwd, "bwd": bwd, "floor_bytes": {"fwd": floor_fwd, "bwd": floor_bwd}}


def cmd_kernels(args) -> int:
    from ..ops import dual_attention as op_bench

    device = _device(args.device)
    out = Path(args.out)
    shapes = {s.name: s for s in op_bench.select_shapes(device, quick=False) + op_bench.select_shapes(device, True)}
    names = list(DRY_OP_SHAPES) if args.dry_run else [MAIN_SHAPE, "train-L1", "train-L4"]
    dtypes = ["float32"] if args.dry_run else list(GPU_DTYPES)
    iters = 2 if args.dry_run else 10
    copy_gbps = None
    if device.type == "cuda":  # the bandwidth a device copy reaches (256 MiB read + 256 MiB written)
        timing = common.copy_time(2 * 256 * 2**20, torch.float16, device, min_run_time=0.1)
        copy_gbps = common.bandwidth_gbps(2 * 256 * 2**20, timing.median_ms)
    result: dict[str, Any] = {
        "benchmark": "kernels",
        "machine": common.machine_info(device, ops=("dual_attention",)),
        "copy_gbps": copy_gbps,
        "notes": ["ms per call of each kernel (torch.profiler device time, mean over iterations); "
                  "fwd = backend forward, bwd = backend backward, called directly with saved statistics; "
                  "stages: gram (Gram / outer-product sweep), epilogue (C×C work), apply (output sweep); "
                  "pct_of_floor = DRAM-floor bytes / copy bandwidth / stage-total time."],
        "cases": [],
    }
    for dtype_name in dtypes:
        for name in names:
            for backend in gpu_backends(device):
                case: dict[str, Any] = {"backend": backend, "shape": name, "label": shapes[name].label(),
                                        "dtype": dtype_name}
                try:
                    case.update(kernel_breakdown(backend, shapes[name], op_bench.DTYPES[dtype_name], device, iters))
                    if copy_gbps:
                        for part in ("fwd", "bwd"):
                            floor_ms = case["floor_bytes"][part] / (copy_gbps * 1e9) * 1e3
                            case[part]["pct_of_floor"] = 100.0 * floor_ms / case[part]["total_ms"]
                    case["status"] = "ok"
                except Exception as exc:  # one failing backend must not sink the stage
                    case.update(status="error", error=_error(exc))
                result["cases"].append(case)
                _log(f"[kernels] {backend:<7} {name:<12} {dtype_name:<8} " + (
                    " ".join(f"{p}: " + ", ".join(f"{s} {ms:.3g}" for s, ms in case[p]["stages_ms"].items())
                             for p in ("fwd", "bwd")) if case["status"] == "ok" else case["error"]))
                common.write_json(out / "kernels.json", result)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    common.write_json(out / "kernels.json", result)
    return 0


# ----------------------------------------------------------------------------- training step
def _amp(device: torch.device, dtype_name: str):
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    return torch.autocast(device.type, dtype=dtype)


def train_step_fn(model, opt, x, y, device: torch.device, dtype_name: str) -> Callable[[], Any]:
    """One AMP training step (forward, L1, backward, AdamW; a GradScaler for fp16)."""
    import torch.nn.functional as F

    scaler = torch.amp.GradScaler(device.type, enabled=(dtype_name == "float16" and device.type == "cuda"))

    def step():
        opt.zero_grad(set_to_none=True)
        with _amp(device, dtype_name):
            loss = F.l1_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss
    return step


def _peak(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Peak bytes allocated while ``fn`` runs (CUDA; everything resident included), else None."""
    if device.type != "cuda":
        return None
    common.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    common.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def _oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def cmd_train(args) -> int:
    from ddsa_model import build_model

    device = _device(args.device)
    out = Path(args.out)
    dry = args.dry_run
    preset = "tiny" if dry else "ddsa-official"
    batch, size = (1, 16) if dry else (16, 128)
    dtypes = ["bfloat16"] if dry else ["float16", "bfloat16"]
    mem_sizes = [16] if dry else [128, 192, 256]
    steps = 1 if dry else 5
    result: dict[str, Any] = {
        "benchmark": "train",
        "machine": common.machine_info(device),
        "config": {"preset": preset, "batch": batch, "size": size, "steps": steps, "optimizer": "AdamW(lr=1e-4)",
                   "loss": "L1", "memory_sizes": mem_sizes},
        "notes": ["throughput: images/s of the AMP training step (median of timed steps after 2 warm-ups); "
                  "peak_bytes: torch.cuda.max_memory_allocated during one step, weights, AdamW state and "
                  "inputs included (what must fit on the GPU)."],
        "throughput": [],
        "memory": [],
    }
    torch.manual_seed(0)
    model = build_model(preset, attention_backend="eager").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)

    def record(kind: str, rec: dict[str, Any]) -> None:
        result[kind].append(rec)
        common.write_json(out / "train.json", result)
        _log(f"[train] {kind}: " + ", ".join(f"{k}={v}" for k, v in rec.items() if k != "error")
             + (f" ({rec['error']})" if rec.get("error") else ""))

    def attempt(rec: dict[str, Any], body: Callable[[], None]) -> None:
        try:
            body()
            rec["status"] = "ok"
        except Exception as exc:
            rec.update(status="oom" if _oom(exc) else "error", error=_error(exc))
        opt.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for dtype_name in dtypes:
        for backend in ("auto", "eager"):
            model.set_attention_backend(backend)
            rec: dict[str, Any] = {"dtype": dtype_name, "backend": backend, "batch": batch, "size": size}
            from ddsa_kernels._registry import resolve_backend

            rec["resolved"] = backend if backend == "eager" else resolve_backend(
                "auto", device, {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name], op="dual_attention")

            def body(rec=rec, dtype_name=dtype_name):
                x = torch.rand(batch, 3, size, size, device=device, generator=gen)
                y = torch.rand(batch, 3, size, size, device=device, generator=gen)
                step = train_step_fn(model, opt, x, y, device, dtype_name)
                rec["peak_bytes"] = _peak(step, device)
                step()
                times = []
                for _ in range(steps):
                    common.synchronize(device)
                    t0 = time.perf_counter()
                    step()
                    common.synchronize(device)
                    times.append(time.perf_counter() - t0)
                times.sort()
                rec["step_ms"] = 1e3 * times[len(times) // 2]
                rec["images_per_s"] = batch / times[len(times) // 2]
            attempt(rec, body)
            record("throughput", rec)
    for side in mem_sizes:
        for backend in ("auto", "eager"):
            model.set_attention_backend(backend)
            rec = {"dtype": dtypes[0], "backend": backend, "batch": 1, "size": side}

            def body(rec=rec, side=side):
                x = torch.rand(1, 3, side, side, device=device, generator=gen)
                y = torch.rand(1, 3, side, side, device=device, generator=gen)
                step = train_step_fn(model, opt, x, y, device, dtypes[0])
                step()  # AdamW state exists from here on: it counts towards what must fit
                rec["peak_bytes"] = _peak(step, device)
            attempt(rec, body)
            record("memory", rec)
    common.write_json(out / "train.json", result)
    return 0


# The GPU test stage, in parts that each run under their own time cap (SIGINT at the cap: pytest
# still writes the junit file of what ran), so that one slow part, the >2³¹-element test or the
# first Triton compilations, cannot hide the results of the others. The huge test runs last, alone.
HUGE_TEST = "tests/test_gpu_op.py::test_more_than_2_31_elements_in_total"
_GPU_FILES = ("tests/test_extension_cuda.py", "tests/test_gpu_op.py", "tests/test_triton.py")
# (name, pytest arguments, -m expression, cap in seconds)
TEST_PARTS: tuple[tuple[str, tuple[str, ...], str, int], ...] = (
    ("gpu_extension_cuda", ("tests/test_extension_cuda.py",), "gpu", 30),
    ("gpu_op", ("tests/test_gpu_op.py", f"--deselect={HUGE_TEST}"), "gpu", 45),
    ("gpu_triton", ("tests/test_triton.py",), "gpu", 25),
    ("gpu_train", ("tests/test_train.py",), "gpu", 50),
    ("gpu_other", ("tests", *(f"--ignore={f}" for f in (*_GPU_FILES, "tests/test_train.py"))), "gpu", 75),  # test_patch_published: nine whole networks on CUDA
    ("op_triton", ("tests/test_triton.py",), "not gpu and not slow", 45),
    ("op_other", ("tests/test_op.py", "tests/test_extension_cpu.py"), "not gpu and not slow", 25),
    ("gpu_huge", (HUGE_TEST,), "gpu", 35),
)


def _junit_counts(path: Path) -> tuple[dict[str, int], list[str]]:
    import xml.etree.ElementTree as ET

    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failed: list[str] = []
    if not path.exists():
        return counts, failed
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return counts, failed
    for case in root.iter("testcase"):
        if case.get("name") is None:  # the test a SIGINT interrupted: pytest writes an empty entry
            continue
        kinds = {child.tag for child in case}
        kind = next((k for k in ("failure", "error", "skipped") if k in kinds), None)
        key = {"failure": "failed", "error": "error", "skipped": "skipped", None: "passed"}[kind]
        counts[key] += 1
        if key in ("failed", "error"):
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    return counts, failed


def _merge_junit(paths: list[Path], target: Path) -> None:
    import xml.etree.ElementTree as ET

    merged = ET.Element("testsuites")
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue
        merged.extend(root.iter("testsuite") if root.tag == "testsuites" else [root])
    ET.ElementTree(merged).write(target, encoding="utf-8", xml_declaration=True)


def cmd_tests(args) -> int:
    """Run TEST_PARTS one after another, each under its cap (cut to what is left of --time-budget),
    and write tests_gpu.json (per part: status, seconds, counts, failed ids; and the totals) after
    each part, plus tests_gpu.xml (all parts' junit merged). --dry-run: CUDA hidden, every part
    collects its GPU-marked tests only (they skip), the code path in seconds."""
    import signal

    out = Path(args.out)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.monotonic()
    budget = args.time_budget if args.time_budget is not None else sum(p[3] for p in TEST_PARTS)
    scale = args.cap_scale
    result: dict[str, Any] = {"parts": [], "counts": {"passed": 0, "failed": 0, "error": 0, "skipped": 0},
                              "failed": [], "dry_run": bool(args.dry_run)}
    xmls: list[Path] = []
    worst = 0
    for name, targets, marker, cap_s in TEST_PARTS:
        left = budget - (time.monotonic() - start)
        cap = min(cap_s * scale, left)
        xml = out / f"tests_gpu_{name}.xml"
        log = out / f"tests_gpu_{name}.log"
        xml.unlink(missing_ok=True)
        rec: dict[str, Any] = {"name": name, "targets": list(targets), "marker": "gpu" if args.dry_run else marker,
                               "cap_s": round(cap_s * scale), "junit": xml.name, "log": log.name}
        if cap < 5:
            rec.update(status="skipped", reason=f"{left:.0f}s left of the {budget:.0f}s budget")
        else:
            cmd = [sys.executable, "-m", "pytest", *targets, "-q", "-m", rec["marker"], "-rfE", "--durations=10",
                   "-p", "no:cacheprovider", f"--junitxml={xml}"]
            t0 = time.monotonic()
            with open(log, "w") as fh:
                proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
                timed_out = False
                try:
                    rc = proc.wait(timeout=cap)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    proc.send_signal(signal.SIGINT)  # pytest stops and still writes the junit file
                    try:
                        rc = proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        rc = proc.wait()
            counts, failed = _junit_counts(xml)
            status = "timeout" if timed_out else ("ok" if rc in (0, 5) else "failed")
            rec.update(status=status, rc=rc, seconds=round(time.monotonic() - t0, 1), counts=counts, failed=failed)
            for key, value in counts.items():
                result["counts"][key] += value
            result["failed"] += failed
            xmls.append(xml)
            if status != "ok":
                worst = 1
        result["parts"].append(rec)
        common.write_json(out / "tests_gpu.json", result)
        print(f"[tests] {name}: {rec['status']} {rec.get('counts', '')} ({rec.get('seconds', 0)}s of {cap:.0f}s)",
              flush=True)
    _merge_junit([x for x in xmls if x.exists()], out / "tests_gpu.xml")
    result["rc"] = worst
    common.write_json(out / "tests_gpu.json", result)
    return worst


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddsa_bench.gpu.stages", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("env", "op", "kernels", "train"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--device", default="auto")
        p.add_argument("--dry-run", action="store_true")
        p.add_argument("--time-budget", type=float, default=None)
        if name == "env":
            p.add_argument("--build-seconds", type=float, default=None)
            p.add_argument("--build-rc", type=int, default=None)
            p.add_argument("--build-log", default=None)
            p.add_argument("--build-command", default=None)
            p.add_argument("--build-skipped", default=None)
    p = sub.add_parser("tests")
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--time-budget", type=float, default=None)
    p.add_argument("--cap-scale", type=float, default=1.0, help="every part's cap × this")
    args = parser.parse_args(argv)
    handler = {"env": cmd_env, "op": cmd_op, "kernels": cmd_kernels, "train": cmd_train,
               "tests": cmd_tests}[args.command]
    return handler(args)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
