"""Model benchmark: the full DDSA network with eager attention vs the fused op.

For each preset, attention backend ("eager" = the authors'-style unfused code, "auto" = the
fused op) and, optionally, ``torch.compile``:

* ``train``: one optimisation step (forward, L1 loss, backward, AdamW) on a batch of 128² crops
  → images/s, peak allocated memory above the resident model + optimizer (CUDA) and the bytes
  autograd saves for backward (every device);
* ``infer``: a forward on one image of side 512 / 1024 under ``torch.no_grad`` → latency.

Both backends run the same weights (one model, ``set_attention_backend`` between runs).
"""
from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .. import common

BACKENDS = ("eager", "auto")


def default_config(device: torch.device, quick: bool) -> dict[str, Any]:
    """Presets, batch, sizes and compile variants of the run (CPU quick: tiny, and it says so)."""
    if device.type == "cuda":
        return {"presets": ["ddsa-official", "ddsa-small"], "train_batch": 16, "train_size": 128,
                "infer_sizes": [512, 1024], "compile_mode": "all", "note": None}
    if quick:
        return {"presets": ["ddsa-small"], "train_batch": 2, "train_size": 128, "infer_sizes": [256],
                "compile_mode": "none",
                "note": "CPU quick mode: ddsa-small only, training batch 2 at 128², inference at 256² only, no "
                        "torch.compile (a ddsa-official step takes minutes on 2 cores). Use --full for "
                        "ddsa-official and 512²/1024²."}
    return {"presets": ["ddsa-official", "ddsa-small"], "train_batch": 2, "train_size": 128,
            "infer_sizes": [512, 1024], "compile_mode": "none",
            "note": "CPU full mode: training batch 2 (small, for time), no torch.compile unless --model-compile."}


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]


def _oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def resolved_backend(model: torch.nn.Module, device: torch.device) -> str:
    """The op backend the model's attention actually runs ("eager" or what "auto" resolves to)."""
    name = getattr(model, "attention_backend", "auto")
    if name != "auto":
        return name
    from ddsa_kernels._registry import resolve_backend

    return resolve_backend("auto", device, torch.float32, op="dual_attention")


def _train_step_fn(model, opt, x, y) -> Callable[[], Any]:
    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def bench_run(
    model: torch.nn.Module,
    *,
    preset: str,
    backend: str,
    task: str,
    batch: int,
    size: int,
    compiled: bool,
    device: torch.device,
    min_run_time: float,
) -> dict[str, Any]:
    """One model measurement; failures (OOM, compile errors) are recorded, not raised."""
    model.set_attention_backend(backend)
    rec: dict[str, Any] = {
        "preset": preset, "attention_backend": backend, "resolved_backend": resolved_backend(model, device),
        "task": task, "batch": batch, "size": size, "compile": compiled, "status": "ok", "error": None,
        "median_ms": None, "min_ms": None, "iqr_ms": None, "runs": None, "images_per_s": None, "first_call_s": None,
        "peak_mem_bytes": None, "saved_bytes": None,
    }
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    try:
        if compiled:
            torch._dynamo.reset()
        net = torch.compile(model, dynamic=False) if compiled else model
        if task == "train":
            model.train()
            y = torch.rand(batch, 3, size, size, generator=gen).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            run = _train_step_fn(net, opt, x, y)
        else:
            model.eval()

            def run():
                with torch.no_grad():
                    return net(x)
        t0 = time.perf_counter()
        run()
        common.synchronize(device)
        rec["first_call_s"] = time.perf_counter() - t0
        rec["peak_mem_bytes"] = common.peak_memory_bytes(run, device)
        if task == "train" and not compiled:
            rec["saved_bytes"] = common.saved_tensor_bytes(lambda: F.l1_loss(net(x), y))["all"]
        timing = common.time_fn(run, device, min_run_time=min_run_time, warmup=0)  # first call warmed up
        rec.update(median_ms=timing.median_ms, iqr_ms=timing.iqr_ms, min_ms=timing.min_ms, runs=timing.runs,
                   timer=timing.timer)
        rec["images_per_s"] = batch / (timing.median_ms * 1e-3)
    except Exception as exc:
        rec.update(status="oom" if _oom(exc) else "error", error=_error(exc))
    finally:
        model.zero_grad(set_to_none=True)
        del x
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rec


def plan(presets: Sequence[str], train_batch: int, train_size: int, infer_sizes: Sequence[int],
         compile_mode: str, max_batch: bool = False) -> list[dict[str, Any]]:
    """Runs in priority order: uncompiled (every preset), compiled, then the largest-batch search."""
    compiled_flags = [False] + ([True] if compile_mode in ("infer", "all") else [])
    runs = []
    for compiled in compiled_flags:
        for preset in presets:
            if not compiled or compile_mode == "all":
                runs += [dict(preset=preset, backend=b, task="train", batch=train_batch, size=train_size,
                              compiled=compiled) for b in BACKENDS]
            for s in infer_sizes:
                runs += [dict(preset=preset, backend=b, task="infer", batch=1, size=s, compiled=compiled)
                         for b in BACKENDS]
    if max_batch:
        runs += [dict(preset=preset, backend=b, task="train-max", batch=None, size=train_size, compiled=False)
                 for preset in presets for b in BACKENDS]
    return runs


def largest_batch_run(model: torch.nn.Module, measured: dict[str, Any], *, device: torch.device,
                      min_run_time: float, cap: int = 2048, tries: int = 4) -> dict[str, Any]:
    """Training step at the largest batch that fits on the GPU ("batch as large as fits").

    Starts from the free memory divided by the per-image peak of ``measured`` (a "train" record of
    the same preset and backend), and shrinks by 20 % after each out-of-memory, ``tries`` times.
    """
    per_image = (measured.get("peak_mem_bytes") or 0) / max(1, measured["batch"])
    tried: list[int] = []
    rec: dict[str, Any] = {}
    if device.type != "cuda" or per_image <= 0:
        rec = dict(measured, task="train-max", status="skipped", error="needs a CUDA train run with a peak memory",
                   median_ms=None, images_per_s=None)
        rec["batch_search"] = tried
        return rec
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(device)[0]
    batch = max(measured["batch"], min(cap, int(0.9 * free / per_image)))
    for _ in range(tries):
        tried.append(batch)
        rec = bench_run(model, preset=measured["preset"], backend=measured["attention_backend"], task="train",
                        batch=batch, size=measured["size"], compiled=False, device=device,
                        min_run_time=min_run_time)
        if rec["status"] != "oom":
            break
        batch = max(1, int(batch * 0.8))
    rec["task"] = "train-max"
    rec["batch_search"] = tried
    return rec


def run_model_bench(
    device: torch.device,
    *,
    quick: bool,
    presets: Optional[Sequence[str]] = None,
    train_batch: Optional[int] = None,
    train_size: Optional[int] = None,
    infer_sizes: Optional[Sequence[int]] = None,
    compile_mode: Optional[str] = None,
    max_batch: Optional[bool] = None,
    min_run_time: Optional[float] = None,
    time_budget_s: Optional[float] = None,
    on_run: Optional[Callable[[dict[str, Any]], None]] = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the model benchmark; returns the JSON-able result. Runs not started within
    ``time_budget_s`` are recorded as skipped."""
    try:
        from ddsa_model import build_model
    except ImportError as exc:
        raise RuntimeError(f"the model benchmark needs the ddsa_model package: {exc}") from None
    cfg = default_config(device, quick)
    presets = list(presets or cfg["presets"])
    train_batch = train_batch or cfg["train_batch"]
    train_size = train_size or cfg["train_size"]
    infer_sizes = list(infer_sizes or cfg["infer_sizes"])
    compile_mode = compile_mode or cfg["compile_mode"]
    max_batch = (device.type == "cuda") if max_batch is None else max_batch
    if compile_mode not in ("none", "infer", "all"):
        raise ValueError(f"compile_mode must be none, infer or all, got {compile_mode!r}")
    if train_batch < 1 or train_size < 8 or any(s < 8 for s in infer_sizes):
        raise ValueError(f"train batch must be ≥ 1 and image sides ≥ 8, got batch {train_batch}, "
                         f"crop {train_size}, inference {infer_sizes}")
    min_run_time = min_run_time or (0.5 if device.type == "cuda" else 0.1)
    notes = [n for n in (cfg["note"],) if n] + [
        "train = zero_grad + forward + L1 loss + backward + AdamW step, fp32, model.train(); images/s = batch / "
        "median step time. infer = forward of one image under torch.no_grad(), fp32, model.eval().",
        "peak MiB (CUDA) = max_memory_allocated during one step minus what was allocated before it (weights, "
        "optimizer state). saved MiB = unique storages autograd saves for backward in the training forward.",
        "eager and auto run the same weights; compile = torch.compile(model, dynamic=False), recompiled per run.",
        "train-max (CUDA): the training step at the largest batch that fits, searched from free memory / the "
        "per-image peak of the train run, shrinking 20 % per out-of-memory.",
    ]
    result: dict[str, Any] = {
        "benchmark": "model",
        "machine": common.machine_info(device),
        "config": {"quick": quick, "presets": presets, "train_batch": train_batch, "train_size": train_size,
                   "infer_sizes": infer_sizes, "compile_mode": compile_mode, "max_batch_search": max_batch,
                   "min_run_time_s": min_run_time,
                   "time_budget_s": time_budget_s, "notes": notes},
        "runs": [],
    }
    start = time.perf_counter()
    models: dict[str, torch.nn.Module] = {}
    for spec in plan(presets, train_batch, train_size, infer_sizes, compile_mode, max_batch=max_batch):
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            rec = {"preset": spec["preset"], "attention_backend": spec["backend"], "resolved_backend": None,
                   "task": spec["task"], "batch": spec["batch"], "size": spec["size"], "compile": spec["compiled"],
                   "status": "skipped", "error": f"time budget of {time_budget_s:.0f} s spent"}
        else:
            if spec["preset"] not in models:
                models.clear()
                gc.collect()
                torch.manual_seed(0)
                models[spec["preset"]] = build_model(spec["preset"], attention_backend="auto").to(device)
            t0 = time.perf_counter()
            if spec["task"] == "train-max":
                measured = next((r for r in result["runs"] if r["task"] == "train" and not r["compile"]
                                 and r["preset"] == spec["preset"] and r["attention_backend"] == spec["backend"]
                                 and r["status"] == "ok"), None)
                if measured is None:
                    rec = {"preset": spec["preset"], "attention_backend": spec["backend"], "task": "train-max",
                           "batch": None, "size": spec["size"], "compile": False, "status": "skipped",
                           "error": "no successful train run to size the search from"}
                else:
                    rec = largest_batch_run(models[spec["preset"]], measured, device=device,
                                            min_run_time=min_run_time)
            else:
                rec = bench_run(models[spec["preset"]], preset=spec["preset"], backend=spec["backend"],
                                task=spec["task"], batch=spec["batch"], size=spec["size"],
                                compiled=spec["compiled"], device=device, min_run_time=min_run_time)
            img_s = f", {rec['images_per_s']:.3g} img/s" if rec.get("images_per_s") and "train" in spec["task"] else ""
            what = (f"{rec['median_ms']:.4g} ms{img_s}"
                    if rec["status"] == "ok" else f"{rec['status']}: {rec['error']}")
            log(f"[model] {spec['preset']:<14} {spec['task']:<9} b{rec.get('batch')} {spec['size']}² "
                f"{spec['backend']:<5} compile={spec['compiled']!s:<5} {what}  ({time.perf_counter() - t0:.0f} s)")
        result["runs"].append(rec)
        result["machine"]["loadavg_at_end"] = common.loadavg()
        if on_run is not None:
            on_run(result)
    return result
