"""Shared pieces of the benchmarks: machine info, timing, byte counts, memory probes, writers.

Timing: median of many runs after a warm-up — ``triton.testing.do_bench`` on CUDA (it also
flushes the L2 cache between runs), ``torch.utils.benchmark.Timer.blocked_autorange`` on CPU.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ddsa_model.atomic import atomic_write

from .summary import fmt, markdown_table, read_json, write_json, write_text  # noqa: F401  (re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = Path(__file__).resolve().parent / "results"

# Spec-sheet DRAM bandwidth (bytes/s) of a few GPUs, only to put the measured copy in context.
_SPEC_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 80GB HBM3": 3.35e12,
    "H100 PCIe": 2.0e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "RTX 3090": 936e9,
    "RTX 4090": 1008e9,
}


# ----------------------------------------------------------------------------- machine info
def git_commit(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """{"sha": full commit or None, "dirty": whether tracked files differ from it}."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo, capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        )
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name()


def spec_bandwidth(name: str) -> Optional[float]:
    """Spec-sheet DRAM bandwidth in bytes/s for a known GPU name, else None."""
    for key, value in _SPEC_BANDWIDTH.items():
        if key in name:
            return value
    return None


def machine_info(device: torch.device, ops: Optional[Iterable[str]] = None) -> dict[str, Any]:
    """Everything needed to tell two benchmark runs apart (device, versions, commit, threads, load).

    ``ddsa_backends`` holds ``ddsa_kernels.build_info`` of the ``ops`` the benchmark times
    (default: every op, for benchmarks of whole networks).
    """
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info: dict[str, Any] = {
        "device_type": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git_commit(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model_name(),
        "loadavg_at_start": loadavg(),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
        # memory-allocation settings that change CPU timings (huge pages for large tensors, glibc malloc)
        "allocation_env": {k: v for k, v in sorted(os.environ.items())
                           if k in ("THP_MEM_ALLOC_ENABLE", "DDSA_SYSTEM_MALLOC", "LD_PRELOAD") or k.startswith("MALLOC_")},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_bytes"] = props.total_memory
        info["gpu_sm_count"] = props.multi_processor_count
        info["spec_bandwidth_bytes_per_s"] = spec_bandwidth(info["device_name"])
    try:
        from ddsa_kernels import build_info

        info["ddsa_backends"] = build_info() if ops is None else {op: build_info(op) for op in ops}
    except Exception as exc:  # the package itself failing to import is worth recording, not fatal
        info["ddsa_backends"] = {"error": f"{type(exc).__name__}: {exc}"}
    return info


def loadavg() -> Optional[list[float]]:
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def busy_warning(info: dict[str, Any]) -> Optional[str]:
    """A warning when other work loaded the CPUs during the run (its timings are then unreliable)."""
    loads = [x for key in ("loadavg_at_start", "loadavg_at_end") if info.get(key) for x in info[key][:1]]
    cpus = info.get("cpu_count") or 1
    if loads and max(loads) > 0.75 * cpus + 0.5:
        return (f"The machine was busy with other work during this run (1-minute load average up to "
                f"{max(loads):.1f} on {cpus} CPUs): CPU timings are unreliable; rerun on a quiet machine.")
    return None


def slugify(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    text = re.sub(r"@.*$", "", text)
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text or "unknown"


def device_slug(device: torch.device) -> str:
    """Folder name of a device's results, e.g. ``cuda-nvidia-h200`` or ``cpu-intel-xeon-processor``."""
    return f"{device.type}-{slugify(device_name(device))}"


def default_out_dir(device: torch.device) -> Path:
    """ddsa_bench/results/<device-slug> when that is writable (a checkout), else ./ddsa-bench-results/<slug>."""
    slug = device_slug(device)
    if os.access(RESULTS_ROOT.parent, os.W_OK):
        return RESULTS_ROOT / slug
    return Path.cwd() / "ddsa-bench-results" / slug


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    median_ms: float
    iqr_ms: Optional[float]
    runs: Optional[int]
    timer: str
    min_ms: Optional[float] = None  # less sensitive to other load than the median; recorded, not used in goals

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, *, min_run_time: float = 0.3, warmup: int = 2) -> Timing:
    """Median wall time of ``fn()`` in ms, after ``warmup`` calls.

    CUDA: ``triton.testing.do_bench`` (warm-up and repetitions in ms of GPU time, L2 flushed);
    CPU: ``torch.utils.benchmark`` blocked autorange for at least ``min_run_time`` seconds.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        from triton.testing import do_bench

        q0, q25, q50, q75 = do_bench(fn, warmup=25, rep=max(100, int(min_run_time * 1000)),
                                     quantiles=[0.0, 0.25, 0.5, 0.75])
        return Timing(median_ms=float(q50), iqr_ms=float(q75 - q25), runs=None, timer="triton.testing.do_bench",
                      min_ms=float(q0))
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(
        median_ms=m.median * 1e3,
        iqr_ms=m.iqr * 1e3,
        runs=len(m.times) * m.number_per_run,
        timer="torch.utils.benchmark.blocked_autorange",
        min_ms=min(m.times) * 1e3,
    )


# ----------------------------------------------------------------------------- bytes and ratios
# Unique tensor traffic of one call, in units of one (B, H, C, N) tensor: the forward reads
# q, k, v and writes out (4); the backward reads q, k, v, dO and writes dq, dk, dv (7).
FLOOR_TENSORS = {"fwd": 4, "fwd+bwd": 11}


def dram_floor_bytes(batch: int, heads: int, channels: int, pixels: int, elem_bytes: int, mode: str = "fwd") -> int:
    """Least DRAM traffic of the op in bytes: ``FLOOR_TENSORS[mode]·B·H·C·N·bytes`` (fwd: 4·B·H·C·N·bytes)."""
    if mode not in FLOOR_TENSORS:
        raise ValueError(f"mode must be one of {sorted(FLOOR_TENSORS)}, got {mode!r}")
    return FLOOR_TENSORS[mode] * batch * heads * channels * pixels * elem_bytes


def ratio(baseline_ms: Optional[float], ms: Optional[float]) -> Optional[float]:
    """Speed-up of a run taking ``ms`` over a baseline taking ``baseline_ms`` (>1 = faster); None if unknown."""
    if baseline_ms is None or ms is None or ms <= 0 or baseline_ms <= 0:
        return None
    return baseline_ms / ms


def bandwidth_gbps(nbytes: int, ms: Optional[float]) -> Optional[float]:
    """Bytes per second in GB/s (1e9) when ``nbytes`` move in ``ms`` milliseconds."""
    if ms is None or ms <= 0:
        return None
    return nbytes / (ms * 1e-3) / 1e9


def copy_time(nbytes: int, dtype: torch.dtype, device: torch.device, *, min_run_time: float = 0.3) -> Timing:
    """Time of a device copy whose read + write traffic is ``nbytes`` (it copies nbytes/2 bytes).

    This is the op's DRAM floor executed at the bandwidth the device actually reaches on a copy.
    """
    elem = torch.empty((), dtype=dtype).element_size()
    numel = max(1, nbytes // (2 * elem))
    src = torch.randn(numel, device=device, dtype=torch.float32).to(dtype)
    dst = torch.empty_like(src)
    timing = time_fn(lambda: dst.copy_(src), device, min_run_time=min_run_time)
    del src, dst
    return timing


# ----------------------------------------------------------------------------- memory probes
def saved_tensor_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> dict[str, int]:
    """Bytes autograd saves for backward while ``fn()`` runs (the graph is dropped afterwards).

    Counts each storage once (views and repeated saves of one tensor cost one storage), via
    ``torch.autograd.graph.saved_tensors_hooks``. Returns ``{"all": ..., "excluding_inputs": ...}``
    where the second leaves out the storages of the tensors in ``exclude`` (the op's inputs).
    """
    storages: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[(str(t.device), st.data_ptr())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    del result
    excluded = {(str(t.device), t.untyped_storage().data_ptr()) for t in exclude}
    total = sum(storages.values())
    return {"all": total, "excluding_inputs": sum(v for k, v in storages.items() if k not in excluded)}


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """CUDA: peak allocated bytes during ``fn()`` above what was allocated before it. Else None."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


# ----------------------------------------------------------------------------- writers
def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode) as fh:
        write(fh)


def markdown_heading(title: str, machine: dict[str, Any]) -> list[str]:
    """The first lines of a benchmark's markdown: ``## <title> (<device>)`` and the busy-machine warning
    when the load at the start says the timings may be off."""
    lines = [f"## {title} ({machine['device_name']})", ""]
    warning = busy_warning(machine)
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    return lines


def memory_note(result: dict[str, Any]) -> str:
    """How the run's CPU allocator was set, for a results note."""
    return ("after `ddsa_kernels.tune_cpu_memory()`" if result.get("cpu_memory")
            else "default allocation settings (no `tune_cpu_memory()`)")


def write_results(result: dict[str, Any], render_markdown: Callable[[dict[str, Any]], str],
                  device: torch.device, out: Optional[str] = None) -> Path:
    """Finish a run: note the load average at its end, write ``<benchmark>.json`` and ``<benchmark>.md``
    into ``out`` (default: :func:`default_out_dir`) and say where; returns the folder."""
    result["machine"]["loadavg_at_end"] = loadavg()
    folder = Path(out) if out else default_out_dir(device)
    folder.mkdir(parents=True, exist_ok=True)
    name = result["benchmark"]
    write_json(folder / f"{name}.json", result)
    write_text(folder / f"{name}.md", render_markdown(result))
    print(f"wrote {folder / f'{name}.md'}")
    return folder


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        return False


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    _atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"), mode="wb")


def tuned_cpu_memory(tune: bool) -> Optional[dict[str, bool]]:
    """Run ``ddsa_kernels.tune_cpu_memory()`` when ``tune`` (call it before the first large tensor);
    returns what the results record: None, or {"malloc_retains_freed": accepted}."""
    if not tune:
        return None
    from ddsa_kernels import tune_cpu_memory

    return {"malloc_retains_freed": tune_cpu_memory()}


def time_rounds(fns: dict[str, Callable[[], Any]], device: torch.device, *, rounds: int,
                min_run_time: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every callable in turn, ``rounds`` times (a shared machine's load weighs on all alike):
    ({name: per-round median ms}, {name: per-round minimum ms, where the timer reports one})."""
    per_round: dict[str, list[float]] = {n: [] for n in fns}
    mins: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            timing = time_fn(fn, device, min_run_time=min_run_time, warmup=1)
            per_round[name].append(timing.median_ms)
            if timing.min_ms is not None:
                mins[name].append(timing.min_ms)
    return per_round, mins


def interleaved_rounds(fns: dict[str, Callable[[], Any]], baseline: str, *, rounds: int,
                       min_run_time: float) -> tuple[dict[str, dict[str, Any]], dict[str, Optional[float]]]:
    """:func:`time_rounds` of CPU callables: ({name: {"median_ms", "rounds_ms"}}, {name: speed-up against
    ``baseline``})."""
    import statistics

    per_round, _ = time_rounds(fns, torch.device("cpu"), rounds=rounds, min_run_time=min_run_time)
    medians = {n: statistics.median(v) for n, v in per_round.items()}
    return ({n: {"median_ms": medians[n], "rounds_ms": per_round[n]} for n in fns},
            {n: ratio(medians[baseline], medians[n]) for n in fns})
