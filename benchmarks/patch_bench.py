"""``ddsa-bench patch``: the authors'-style networks of each family, unpatched vs ``ddsa_kernels.patch``.

For each family (DDSA, DRSformer, Restormer) one network of ``benchmarks.family_nets`` (default
``small``: Restormer's 4-level U-Net at the DDSA ``ddsa-small`` size, dim 16, blocks (1, 2, 2, 3),
heads (1, 2, 4, 8), each family's feed-forward: SEFN for DDSA, GDFN otherwise) is built once; a deep copy with the same
weights is patched. Both are timed side by side, in interleaved rounds (plain, patched, plain,
patched, ...), and each figure is the median over rounds of the per-round median:

* ``infer``: forward of one image of side ``infer_size`` (default 256) under ``torch.no_grad``, eval mode;
* ``train``: forward, L1 loss and backward on a batch (default 2) of ``train_size``² crops (default 128),
  train mode (no optimizer step: it is the same for both).

Only public APIs are used (``ddsa_kernels.patch``). Results: ``patch.json`` and ``patch.md``.
"""
from __future__ import annotations

import copy
import gc
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from . import common, family_nets

NETS = {"small": family_nets.small_net, "tiny": family_nets.tiny_net}
TASKS = ("infer", "train")
NET_NOTES = {
    "small": "net small: Restormer's U-Net at the ddsa-small size (dim 16, blocks (1, 2, 2, 3), heads (1, 2, 4, 8), "
             "one refinement block); feed-forward: IDT-DDSA's SEFN for DDSA, Restormer's GDFN for Restormer and "
             "DRSformer (standing in for its multi-scale FFN).",
    "tiny": "net tiny: Restormer's U-Net at dim 8, one block per level, heads (1, 2, 2, 4) (a smoke test, "
            "not a measurement).",
}


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]


def _task_fn(model: torch.nn.Module, task: str, x: torch.Tensor, y: Optional[torch.Tensor]) -> Callable[[], Any]:
    if task == "infer":
        def run():
            with torch.no_grad():
                return model(x)
        return run

    def step():
        model.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(x), y)
        loss.backward()
        return loss
    return step


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bench_family(
    family: str,
    *,
    device: torch.device,
    dtype: str = "float32",
    net: str,
    backend: str,
    infer_size: int,
    train_batch: int,
    train_size: int,
    rounds: int,
    min_run_time: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both variants of one family in one dtype (weights and inputs): the patch report, the output
    agreement and the timings per task."""
    from ddsa_kernels import patch

    torch.manual_seed(0)
    plain = NETS[net](family).to(device, DTYPES[dtype])
    fused = copy.deepcopy(plain)
    report = patch(fused, backend=backend)
    rec: dict[str, Any] = {"family": family, "dtype": dtype, "net": net, "status": "ok", "error": None,
                           "patched": report.counts, "skipped": report.skipped, "resolved_backends": report.resolved,
                           "params": sum(p.numel() for p in plain.parameters()), "tasks": {}}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for task in TASKS:
        batch, size = (1, infer_size) if task == "infer" else (train_batch, train_size)
        x = torch.rand(batch, 3, size, size, generator=gen).to(device, DTYPES[dtype])
        y = torch.rand(batch, 3, size, size, generator=gen).to(device, DTYPES[dtype]) if task == "train" else None
        t: dict[str, Any] = {"batch": batch, "size": size, "status": "ok", "error": None}
        try:
            for m in (plain, fused):
                m.train(task == "train")
            with torch.no_grad():
                t["max_abs_diff"] = float((fused(x) - plain(x)).abs().max())
            runs = {"plain": _task_fn(plain, task, x, y), "patched": _task_fn(fused, task, x, y)}
            for fn in runs.values():  # first calls (allocator, autotuning) outside the timings
                fn()
            common.synchronize(device)
            per_round, mins = common.time_rounds(runs, device, rounds=rounds, min_run_time=min_run_time)
            for name in runs:
                t[name] = {"median_ms": statistics.median(per_round[name]), "round_medians_ms": per_round[name],
                           "min_ms": min(mins[name]) if mins[name] else None,
                           "images_per_s": batch / (statistics.median(per_round[name]) * 1e-3)}
            t["speedup"] = common.ratio(t["plain"]["median_ms"], t["patched"]["median_ms"])
            log(f"[patch] {family:<10} {dtype:<8} {task:<5} b{batch} {size}²  plain {t['plain']['median_ms']:.4g} ms  "
                f"patched {t['patched']['median_ms']:.4g} ms  ×{t['speedup']:.2f}")
        except Exception as exc:  # an OOM or a missing backend: recorded, the other tasks still run
            t.update(status="error", error=_error(exc))
            log(f"[patch] {family:<10} {dtype:<8} {task:<5} error: {t['error']}")
        finally:
            for m in (plain, fused):
                m.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rec["tasks"][task] = t
    return rec


def run_patch_bench(
    device: torch.device,
    *,
    families: Optional[Sequence[str]] = None,
    dtypes: Optional[Sequence[str]] = None,
    net: str = "small",
    backend: str = "auto",
    infer_size: int = 256,
    train_batch: int = 2,
    train_size: int = 128,
    rounds: Optional[int] = None,
    min_run_time: Optional[float] = None,
    time_budget_s: Optional[float] = None,
    cpu_memory: Optional[dict[str, bool]] = None,
    on_family: Optional[Callable[[dict[str, Any]], None]] = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result (families not started within
    ``time_budget_s`` are recorded as skipped). ``dtypes``: names in :data:`DTYPES` (default float32);
    one record per (dtype, family). ``cpu_memory``: what ``ddsa_kernels.tune_cpu_memory`` set, when the
    caller ran it first (recorded and shown beside the allocation settings)."""
    families = list(families or family_nets.FAMILIES)
    dtypes = list(dtypes or ["float32"])
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"unknown dtypes {bad}; choose among {', '.join(DTYPES)}")
    unknown = [f for f in families if f not in family_nets.FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose among {', '.join(family_nets.FAMILIES)}")
    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose among {', '.join(NETS)}")
    if min(infer_size, train_size) < 8 or infer_size % 8 or train_size % 8 or train_batch < 1:
        raise ValueError(f"image sides must be multiples of 8 and the batch ≥ 1, got inference {infer_size}, "
                         f"crop {train_size}, batch {train_batch}")
    rounds = rounds or (3 if device.type == "cpu" else 5)
    min_run_time = min_run_time or (0.2 if device.type == "cpu" else 0.5)
    result: dict[str, Any] = {
        "benchmark": "patch",
        "machine": common.machine_info(device),
        "config": {"cpu_memory": cpu_memory, "families": families, "dtypes": dtypes, "net": net, "backend": backend, "infer_size": infer_size,
                   "train_batch": train_batch, "train_size": train_size, "rounds": rounds,
                   "min_run_time_s": min_run_time, "time_budget_s": time_budget_s,
                   "notes": [
                       "plain = the authors'-style network as written (benchmarks/family_nets.py); patched = a deep "
                       "copy with the same weights after ddsa_kernels.patch(model). Weights and inputs in the "
                       "row's dtype.",
                       NET_NOTES[net],
                       "infer = one image under torch.no_grad, eval mode. train = forward + L1 + backward "
                       "(no optimizer step), train mode.",
                       "interleaved rounds: plain then patched, repeated; each figure is the median over rounds.",
                   ]},
        "families": [],
    }
    start = time.perf_counter()
    # The first network measured in a fresh process ran ~2× slower than the same network measured
    # again later (allocator and page-fault warm-up that outlasts a few calls): one discarded pass
    # over the first family puts every family on the same footing.
    try:
        bench_family(families[0], device=device, dtype=dtypes[0], net=net, backend=backend, infer_size=infer_size,
                     train_batch=train_batch, train_size=train_size, rounds=1, min_run_time=min_run_time,
                     log=lambda _msg: None)
    except Exception:  # the timed pass below records the error
        pass
    result["config"]["warmup"] = f"one discarded pass of {families[0]} ({dtypes[0]}) before the timed ones"
    for dtype, family in [(d, f) for d in dtypes for f in families]:
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            rec = {"family": family, "dtype": dtype, "net": net, "status": "skipped",
                   "error": f"time budget of {time_budget_s:.0f} s spent", "tasks": {}}
        else:
            try:
                rec = bench_family(family, device=device, dtype=dtype, net=net, backend=backend,
                                   infer_size=infer_size, train_batch=train_batch, train_size=train_size,
                                   rounds=rounds, min_run_time=min_run_time, log=log)
            except Exception as exc:
                rec = {"family": family, "dtype": dtype, "net": net, "status": "error", "error": _error(exc),
                       "tasks": {}}
        result["families"].append(rec)
        result["machine"]["loadavg_at_end"] = common.loadavg()
        if on_family is not None:
            on_family(result)
    return result


def render_markdown(result: dict[str, Any]) -> str:
    """The result as a markdown section: one row per family and task, plain vs patched."""
    m, cfg = result["machine"], result["config"]
    lines = [f"## `ddsa_kernels.patch` on the authors'-style networks ({m['device_name']})", ""]
    warning = common.busy_warning(m)
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    rows = []
    for rec in result["families"]:
        dtype = rec.get("dtype", "float32")
        if rec["status"] != "ok":
            rows.append([rec["family"], "–", dtype, None, None, None, None, f"{rec['status']}: {rec['error']}"])
            continue
        for task, t in rec["tasks"].items():
            if t["status"] != "ok":
                rows.append([rec["family"], task, dtype, None, None, None, None, f"error: {t['error']}"])
                continue
            rows.append([rec["family"], f"{task} b{t['batch']} {t['size']}²", dtype, common.fmt(t["plain"]["median_ms"]),
                         common.fmt(t["patched"]["median_ms"]),
                         f"×{t['speedup']:.2f}" if t["speedup"] else None, f"{t['max_abs_diff']:.1e}",
                         ", ".join(f"{k} {v}" for k, v in rec["patched"].items())])
    lines.append(common.markdown_table(
        ["family", "task", "dtype", "plain ms", "patched ms", "speed-up", "max abs Δ out", "patched modules"], rows))
    alloc = ", ".join(f"{k}={v}" for k, v in (m.get("allocation_env") or {}).items()) or "default allocation settings"
    if cfg.get("cpu_memory"):
        alloc += ", after `ddsa_kernels.tune_cpu_memory()` (" + ", ".join(
            f"{k} {v}" for k, v in cfg["cpu_memory"].items()) + ")"
    lines += ["", f"torch {m['torch']}, {m['torch_threads']} thread(s), backend={cfg['backend']!r}, {alloc}, "
              f"commit {(m['commit'] or {}).get('sha') or '?'}.", ""]
    lines += [f"* {note}" for note in cfg["notes"]]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, result: dict[str, Any]) -> Path:
    """Write ``patch.json`` and ``patch.md`` into ``out``; returns the markdown path."""
    common.write_json(out / "patch.json", result)
    path = out / "patch.md"
    common.write_text(path, render_markdown(result))
    return path
