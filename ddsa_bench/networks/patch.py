"""``ddsa-bench patch``: a network file's network, unpatched vs ``ddsa_kernels.patch``.

The network is any ``nn.Module`` class of a Python file, named as ``PATH.py:CLASS`` and built with JSON
keyword arguments (``--arch``, ``--kwargs``). Without ``--arch`` the three families are run: the
published-structure stand-ins of ``tests/published_nets`` (IDT-DDSA ``idt_ddsa_arch.py:Restormer``,
``drsformer_arch.py:DRSformer``, Restormer ``restormer_arch.py:Restormer``), loaded the same way from
the source tree, at the DDSA ``ddsa-small`` size (default) or a ``tiny`` smoke size.

The network is built once; a deep copy with the same weights is patched. Both are timed side by
side, in interleaved rounds (plain, patched, plain, patched, ...), and each figure is the median over
rounds of the per-round median:

* ``infer``: forward of one image of side ``infer_size`` (default 256) under ``torch.no_grad``, eval mode;
* ``train``: forward, L1 loss and backward on a batch (default 2) of ``train_size``² crops (default 128),
  train mode (no optimizer step: it is the same for both).

With ``--compile``, ``torch.compile`` of the unpatched network ("compiled") and of the patched one
("patched+compiled") join the same interleaved rounds; their first call, compilation included, is timed
apart and recorded.

Then, for inference, where the time goes: forward pre/post hooks on the modules the patch replaced
(in both copies: they have the same paths) give each kind of module (attention, layer norm,
feed-forward, depth-wise conv) its exclusive time; "other" is the rest of the network's forward.

Only public APIs are used (``ddsa_kernels.patch``). Results: ``patch.json`` and ``patch.md`` (family
runs), ``patch_<file>_<CLASS>.json`` / ``.md`` (``--arch``).
"""
from __future__ import annotations

import copy
import gc
import hashlib
import importlib.util
import inspect
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import common

FAMILIES = ("ddsa", "drsformer", "restormer")
STANDIN_DIR = common.REPO_ROOT / "tests" / "published_nets"
#: family → the stand-in's file (in STANDIN_DIR) and network class.
FAMILY_ARCH = {"ddsa": ("idt_ddsa_arch.py", "Restormer"), "drsformer": ("drsformer_arch.py", "DRSformer"),
               "restormer": ("restormer_arch.py", "Restormer")}
NETS = ("small", "tiny")
TASKS = ("infer", "train")
KINDS = ("attention", "layer_norm", "feed_forward", "depthwise_conv", "mefc", "other")
KIND_LABELS = {"attention": "attention", "layer_norm": "layer norm", "feed_forward": "feed-forward",
               "depthwise_conv": "depth-wise conv", "mefc": "MEFC", "other": "other"}
NET_NOTES = {
    "small": "net small: the published-structure stand-ins (tests/published_nets) at the ddsa-small size (dim 16, "
             "blocks (1, 2, 2, 3), heads (1, 2, 4, 8), FFN ×2.66, one refinement block; DRSformer's level-0 and "
             "refinement subnets as published); feed-forward: SEFN (IDT-DDSA), mixed-scale (DRSformer), GDFN "
             "(Restormer).",
    "tiny": "net tiny: the published-structure stand-ins at dim 8, one block per level, heads (1, 2, 2, 4) (a smoke "
            "test, not a measurement).",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]


# ----------------------------------------------------------------------------- loading a network file
def parse_kwargs(text: Optional[str]) -> dict[str, Any]:
    """``--kwargs``: a JSON object (``None`` or empty: no arguments)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--kwargs is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--kwargs must be a JSON object of keyword arguments, got {type(value).__name__}: {text!r}")
    return value


def load_arch(spec: str) -> type[nn.Module]:
    """The ``nn.Module`` class named by ``PATH.py:CLASS``, the file imported by path."""
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise ValueError(f"--arch takes PATH.py:CLASS, got {spec!r}")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"--arch: no such file {path}")
    module_name = f"_ddsa_bench_arch_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    module = sys.modules.get(module_name)
    if module is None:
        module = _import_file(path, module_name)
    cls = getattr(module, name, None)
    if cls is None:
        found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module)
                       and v.__module__ == module_name)
        raise ValueError(f"--arch: {path} has no class {name!r}; its nn.Module classes: {', '.join(found) or 'none'}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ValueError(f"--arch: {path}:{name} is not an nn.Module class")
    return cls


def _import_file(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--arch: cannot import {path} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # deepcopy and pickling look the classes up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ValueError(f"--arch: importing {path} failed: {_error(exc)}") from None
    return module


def build_arch(cls: type[nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    """``cls(**kwargs)``, a constructor failure reported as a ValueError naming the call."""
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ValueError(f"--arch: {cls.__name__}(**{json.dumps(kwargs)}) failed: {_error(exc)}") from None


def family_sizes() -> ModuleType:
    """The stand-ins' package ``tests/published_nets`` (for its sizes), loaded by path from the source tree."""
    init = STANDIN_DIR / "__init__.py"
    if not init.is_file():
        raise ValueError(f"the family networks are the stand-ins of the source tree's tests/published_nets, not "
                         f"found at {STANDIN_DIR} (an installed package has no tests): run from a checkout, or "
                         "measure your own network with --arch PATH.py:CLASS")
    name = "_ddsa_bench_published_nets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(STANDIN_DIR)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def family_spec(family: str) -> str:
    """``PATH.py:CLASS`` of the family's stand-in."""
    file, cls = FAMILY_ARCH[family]
    return f"{STANDIN_DIR / file}:{cls}"


# ----------------------------------------------------------------------------- timing
def _task_fn(model: nn.Module, task: str, x: torch.Tensor, y: Optional[torch.Tensor]) -> Callable[[], Any]:
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


def kind_of(match: Any) -> str:
    """The breakdown group of what the report lists for a patched module (a match whose ``str`` is
    ``kind:variant``, e.g. ``attention:ddsa`` or ``depthwise_conv:3x3``)."""
    group = str(match).split(":", 1)[0]
    return group if group in KINDS else "other"


def time_breakdown(model: nn.Module, kinds: dict[str, str], x: torch.Tensor, device: torch.device,
                   repeats: int) -> dict[str, float]:
    """Each kind's exclusive ms (a module's time less that of the timed modules it calls) in one inference
    forward, from forward pre/post hooks on the modules at ``kinds`` (path → group) and on ``model`` (its
    exclusive time is "other"); ``total``, their sum, is the forward's time. Of ``repeats`` forwards, the
    one with the median total."""
    stack: list[list[float]] = []
    acc: dict[str, float] = {}
    handles = []
    sync = device.type == "cuda"

    def hooks(group: str):
        def pre(_mod, _args):
            if sync:
                torch.cuda.synchronize(device)
            stack.append([time.perf_counter(), 0.0])

        def post(_mod, _args, _out):
            if sync:
                torch.cuda.synchronize(device)
            start, inner = stack.pop()
            elapsed = time.perf_counter() - start
            acc[group] = acc.get(group, 0.0) + elapsed - inner
            if stack:
                stack[-1][1] += elapsed
        return pre, post

    modules = dict(model.named_modules())
    try:
        for path, group in [("", "other"), *kinds.items()]:
            pre, post = hooks(group)
            handles += [modules[path].register_forward_pre_hook(pre), modules[path].register_forward_hook(post)]
        samples = []
        with torch.no_grad():
            for _ in range(repeats):
                acc.clear()
                model(x)
                sample = {k: acc.get(k, 0.0) * 1e3 for k in KINDS}
                sample["total"] = sum(acc.values()) * 1e3
                samples.append(sample)
    finally:
        for h in handles:
            h.remove()
    return sorted(samples, key=lambda s: s["total"])[len(samples) // 2]


def bench_network(
    label: str,
    make: Callable[[], nn.Module],
    *,
    device: torch.device,
    dtype: str = "float32",
    backend: str,
    infer_size: int,
    train_batch: int,
    train_size: int,
    rounds: int,
    min_run_time: float,
    breakdown: bool = True,
    compile: bool = False,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both variants of the network ``make()`` in one dtype (weights and inputs), and with ``compile`` their
    ``torch.compile`` wrappers: the patch report, the output agreement, the timings per task and the inference
    breakdown per kind of module."""
    from ddsa_kernels import patch

    torch.manual_seed(0)
    plain = make().to(device, DTYPES[dtype])
    fused = copy.deepcopy(plain)
    report = patch(fused, backend=backend)
    log(str(report))
    kinds = {path: kind_of(kind) for path, kind in report.patched}
    models = {"plain": plain, "patched": fused}
    if compile:
        # static shapes: inference and training use different ones, and a recompile with dynamic shapes fails
        # in inductor on the Restormer-family networks (torch 2.13 CPU; unpatched and patched alike)
        models.update(compiled=torch.compile(plain, dynamic=False), patched_compiled=torch.compile(fused, dynamic=False))
    rec: dict[str, Any] = {"family": label, "dtype": dtype, "status": "ok", "error": None,
                           "patched": report.counts, "skipped": [[p, str(why)] for p, why in report.skipped], "resolved_backends": report.resolved,
                           "report": str(report), "params": sum(p.numel() for p in plain.parameters()), "tasks": {}}
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
            runs = {name: _task_fn(m, task, x, y) for name, m in models.items()}
            first_call_s = {}
            for name, fn in runs.items():  # first calls (allocator, autotuning, compilation) outside the timings
                begin = time.perf_counter()
                fn()
                common.synchronize(device)
                first_call_s[name] = time.perf_counter() - begin
            per_round, mins = common.time_rounds(runs, device, rounds=rounds, min_run_time=min_run_time)
            for name in runs:
                t[name] = {"median_ms": statistics.median(per_round[name]), "round_medians_ms": per_round[name],
                           "min_ms": min(mins[name]) if mins[name] else None,
                           "images_per_s": batch / (statistics.median(per_round[name]) * 1e-3)}
            t["speedup"] = common.ratio(t["plain"]["median_ms"], t["patched"]["median_ms"])
            log(f"[patch] {label:<10} {dtype:<8} {task:<5} b{batch} {size}²  plain {t['plain']['median_ms']:.4g} ms  "
                f"patched {t['patched']['median_ms']:.4g} ms  ×{t['speedup']:.2f}")
            if compile:
                for name in ("compiled", "patched_compiled"):
                    t[name]["first_call_s"] = first_call_s[name]
                t["speedup_vs_compiled"] = common.ratio(t["compiled"]["median_ms"], t["patched"]["median_ms"])
                t["speedup_compiled"] = common.ratio(t["plain"]["median_ms"], t["patched_compiled"]["median_ms"])
                log(f"[patch] {label:<10} {dtype:<8} {task:<5} torch.compile: unpatched {t['compiled']['median_ms']:.4g} ms "
                    f"(first call {first_call_s['compiled']:.0f} s), patched {t['patched_compiled']['median_ms']:.4g} ms "
                    f"(first call {first_call_s['patched_compiled']:.0f} s); patched eager ×{t['speedup_vs_compiled']:.2f} "
                    f"the compiled unpatched network")
            if task == "infer" and breakdown:
                t["breakdown_ms"] = {name: time_breakdown(m, kinds, x, device, max(rounds, 3))
                                     for name, m in (("plain", plain), ("patched", fused))}
                log(f"[patch] {label:<10} {dtype:<8} infer by kind (ms, plain → patched): " + ", ".join(
                    f"{KIND_LABELS[k]} {t['breakdown_ms']['plain'][k]:.3g} → {t['breakdown_ms']['patched'][k]:.3g}"
                    for k in KINDS))
        except Exception as exc:  # an OOM or a missing backend: recorded, the other tasks still run
            t.update(status="error", error=_error(exc))
            log(f"[patch] {label:<10} {dtype:<8} {task:<5} error: {t['error']}")
        finally:
            for m in (plain, fused):
                m.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rec["tasks"][task] = t
    return rec


def _check_sizes(infer_size: int, train_size: int, train_batch: int, multiple: int) -> None:
    if min(infer_size, train_size) < multiple or infer_size % multiple or train_size % multiple or train_batch < 1:
        raise ValueError(f"image sides must be positive multiples of {multiple} and the batch ≥ 1, got inference "
                         f"{infer_size}, crop {train_size}, batch {train_batch}")


def run_patch_bench(
    device: torch.device,
    *,
    families: Optional[Sequence[str]] = None,
    arch: Optional[str] = None,
    arch_kwargs: Optional[dict[str, Any]] = None,
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
    compile: bool = False,
    on_family: Optional[Callable[[dict[str, Any]], None]] = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result (networks not started within ``time_budget_s`` are
    recorded as skipped). ``arch``: ``PATH.py:CLASS`` built with ``arch_kwargs`` (then ``families`` and ``net``
    do not apply); otherwise the family stand-ins at size ``net``. ``dtypes``: names in :data:`DTYPES`
    (default float32); one record per (dtype, network). ``cpu_memory``: what
    ``ddsa_kernels.tune_cpu_memory`` set, when the caller ran it first (recorded and shown beside the
    allocation settings). ``compile``: also time ``torch.compile`` of both variants."""
    dtypes = list(dtypes or ["float32"])
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"unknown dtypes {bad}; choose among {', '.join(DTYPES)}")
    if arch is not None:
        if families:
            raise ValueError("--families and --arch exclude each other")
        _check_sizes(infer_size, train_size, train_batch, 1)
        cls = load_arch(arch)
        kwargs = dict(arch_kwargs or {})
        build_arch(cls, kwargs)  # a failing constructor is an error before any timing
        labels = [cls.__name__]
        makers = {cls.__name__: lambda: build_arch(cls, kwargs)}
        specs = {cls.__name__: arch}
        net_note = f"net: {arch} built with {json.dumps(kwargs)}."
    else:
        families = list(families or FAMILIES)
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose among {', '.join(FAMILIES)}")
        if net not in NETS:
            raise ValueError(f"unknown net {net!r}; choose among {', '.join(NETS)}")
        _check_sizes(infer_size, train_size, train_batch, 8)
        sizes = family_sizes()
        labels = families
        specs = {f: family_spec(f) for f in families}
        classes = {f: load_arch(specs[f]) for f in families}
        makers = {f: (lambda f=f: build_arch(classes[f], sizes.size_kwargs(f, net))) for f in families}
        kwargs = {f: sizes.size_kwargs(f, net) for f in families}
        net_note = NET_NOTES[net]
    rounds = rounds or (3 if device.type == "cpu" else 5)
    min_run_time = min_run_time or (0.2 if device.type == "cpu" else 0.5)
    result: dict[str, Any] = {
        "benchmark": "patch",
        "machine": common.machine_info(device),
        "config": {"cpu_memory": cpu_memory, "families": labels, "arch": arch,
                   "kwargs": kwargs, "dtypes": dtypes, "net": None if arch else net, "backend": backend,
                   "infer_size": infer_size, "train_batch": train_batch, "train_size": train_size, "rounds": rounds,
                   "min_run_time_s": min_run_time, "time_budget_s": time_budget_s, "compile": compile,
                   "notes": [
                       "plain = the network as written; patched = a deep copy with the same weights after "
                       "ddsa_kernels.patch(model). Weights and inputs in the row's dtype.",
                       net_note,
                       "infer = one image under torch.no_grad, eval mode. train = forward + L1 + backward "
                       "(no optimizer step), train mode.",
                       "interleaved rounds: plain then patched, repeated; each figure is the median over rounds.",
                       *(["compiled = torch.compile(plain), patched+compiled = torch.compile(patched), default "
                          "mode, static shapes, in the same rounds; first call = the first run, compilation included."]
                         if compile else []),
                       "by kind: exclusive inference time of the modules the patch replaced (the same paths in "
                       "both copies), from forward hooks; other = the rest of the forward; in the plain copy a depth-wise "
                       "conv inside a feed-forward counts as depth-wise conv. The hooked forward of median total "
                       "of max(rounds, 3), after the timed rounds; the hooks add a little to each.",
                   ]},
        "families": [],
    }
    start = time.perf_counter()
    # The first network measured in a fresh process ran ~2× slower than the same network measured
    # again later (allocator and page-fault warm-up that outlasts a few calls): one discarded pass
    # over the first network puts every network on the same footing.
    try:
        bench_network(labels[0], makers[labels[0]], device=device, dtype=dtypes[0], backend=backend,
                      infer_size=infer_size, train_batch=train_batch, train_size=train_size, rounds=1,
                      min_run_time=min_run_time, breakdown=False, log=lambda _msg: None)
    except Exception:  # the timed pass below records the error
        pass
    result["config"]["warmup"] = f"one discarded pass of {labels[0]} ({dtypes[0]}) before the timed ones"
    for dtype, label in [(d, f) for d in dtypes for f in labels]:
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            rec = {"family": label, "dtype": dtype, "status": "skipped",
                   "error": f"time budget of {time_budget_s:.0f} s spent", "tasks": {}}
        else:
            try:
                rec = bench_network(label, makers[label], device=device, dtype=dtype, backend=backend,
                                    infer_size=infer_size, train_batch=train_batch, train_size=train_size,
                                    rounds=rounds, min_run_time=min_run_time, compile=compile, log=log)
            except Exception as exc:
                rec = {"family": label, "dtype": dtype, "status": "error", "error": _error(exc), "tasks": {}}
        rec["arch"] = specs[label]
        rec["net"] = None if arch else net
        result["families"].append(rec)
        result["machine"]["loadavg_at_end"] = common.loadavg()
        if on_family is not None:
            on_family(result)
    return result


def render_markdown(result: dict[str, Any]) -> str:
    """The result as a markdown section: one row per network and task, plain vs patched, then the inference
    time per kind of module."""
    m, cfg = result["machine"], result["config"]
    title = f"`{cfg['arch']}`" if cfg.get("arch") else "the published-structure networks"
    lines = common.markdown_heading(f"`ddsa_kernels.patch` on {title}", m)
    rows, kind_rows = [], []
    # the kinds of the run (runs made before a kind existed counted its modules as "other")
    breakdowns = [t["breakdown_ms"] for rec in result["families"] if rec["status"] == "ok"
                  for t in rec["tasks"].values() if t.get("breakdown_ms")]
    kinds = [k for k in KINDS if all(k in b["plain"] for b in breakdowns)]
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
            by_kind = t.get("breakdown_ms")
            if by_kind:
                kind_rows.append([rec["family"], f"{t['size']}²", dtype] + [
                    f"{common.fmt(by_kind['plain'][k])} → {common.fmt(by_kind['patched'][k])}" for k in kinds] + [
                    f"{common.fmt(by_kind['plain']['total'])} → {common.fmt(by_kind['patched']['total'])}"])
    lines.append(common.markdown_table(
        ["network", "task", "dtype", "plain ms", "patched ms", "speed-up", "max abs Δ out", "patched modules"], rows))
    compiled_rows = [[rec["family"], f"{task} b{t['batch']} {t['size']}²", rec.get("dtype", "float32"),
                      common.fmt(t["compiled"]["median_ms"]), f"{t['compiled']['first_call_s']:.0f} s",
                      common.fmt(t["patched_compiled"]["median_ms"]), f"{t['patched_compiled']['first_call_s']:.0f} s",
                      f"×{t['speedup_vs_compiled']:.2f}", f"×{t['speedup_compiled']:.2f}"]
                     for rec in result["families"] if rec["status"] == "ok"
                     for task, t in rec["tasks"].items() if t["status"] == "ok" and "compiled" in t]
    if compiled_rows:
        lines += ["", "Against `torch.compile` (same rounds):", ""]
        lines.append(common.markdown_table(
            ["network", "task", "dtype", "compiled ms", "its first call", "patched+compiled ms", "its first call",
             "patched vs compiled", "patched+compiled vs plain"], compiled_rows))
    if kind_rows:
        lines += ["", "Inference ms by kind of module (plain → patched, exclusive times from forward hooks):", ""]
        lines.append(common.markdown_table(["network", "image", "dtype", *(KIND_LABELS[k] for k in kinds), "total"],
                                           kind_rows))
    alloc = ", ".join(f"{k}={v}" for k, v in (m.get("allocation_env") or {}).items()) or "default allocation settings"
    if cfg.get("cpu_memory"):
        alloc += ", after `ddsa_kernels.tune_cpu_memory()` (" + ", ".join(
            f"{k} {v}" for k, v in cfg["cpu_memory"].items()) + ")"
    lines += ["", f"torch {m['torch']}, {m['torch_threads']} thread(s), backend={cfg['backend']!r}, {alloc}, "
              f"commit {(m['commit'] or {}).get('sha') or '?'}.", ""]
    lines += [f"* {note}" for note in cfg["notes"]]
    return "\n".join(lines) + "\n"


def output_stem(result: dict[str, Any]) -> str:
    """``patch`` for the family runs, ``patch_<file>_<CLASS>`` for an ``--arch`` run."""
    arch = result["config"].get("arch")
    if not arch:
        return "patch"
    path, _, cls = arch.rpartition(":")
    return "patch_" + common.slugify(f"{Path(path).stem}_{cls}")


def write_outputs(out: Path, result: dict[str, Any]) -> Path:
    """Write ``<stem>.json`` and ``<stem>.md`` (:func:`output_stem`) into ``out``; returns the markdown path."""
    stem = output_stem(result)
    common.write_json(out / f"{stem}.json", result)
    path = out / f"{stem}.md"
    common.write_text(path, render_markdown(result))
    return path
