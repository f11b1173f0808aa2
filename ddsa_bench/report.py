"""Render benchmark JSON into the markdown report (goals + tables) and the time-vs-N plots."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from . import common, goals

MiB = 2 ** 20


def machine_lines(info: dict[str, Any]) -> list[str]:
    commit = info.get("commit") or {}
    sha = (commit.get("sha") or "unknown")[:12] + (" (dirty)" if commit.get("dirty") else "")
    lines = [
        f"* device: **{info['device_name']}** ({info['device_type']})"
        + (f", compute capability {info['gpu_capability']}, {info['gpu_memory_bytes'] / 2**30:.0f} GiB"
           if info.get("gpu_capability") else ""),
        f"* torch {info['torch']}, triton {info.get('triton')}, CUDA {info.get('cuda')}, Python {info['python']}",
        f"* commit {sha}; {info['timestamp_utc']}",
        f"* threads: torch {info['torch_threads']}, CPUs {info['cpu_count']}"
        + (f", load average at start {', '.join(f'{x:.1f}' for x in info['loadavg_at_start'])}"
           if info.get("loadavg_at_start") else "")
        + (f", at end {', '.join(f'{x:.1f}' for x in info['loadavg_at_end'])}" if info.get("loadavg_at_end") else ""),
    ]
    backends = info.get("ddsa_backends") or {}
    if backends:
        lines.append("* ddsa backends: " + "; ".join(f"{k}: {v}" for k, v in backends.items()))
    warning = common.busy_warning(info)
    if warning and info.get("device_type") == "cpu":
        lines += ["", f"> **Warning.** {warning}"]
    return lines


def goals_table(goal_list: list[goals.Goal]) -> str:
    rows = [[g.text, g.target, g.measured, f"**{g.status}**", g.detail] for g in goal_list]
    return common.markdown_table(["goal", "target", "measured", "result", "detail"], rows)


def _ms(rec: dict) -> Optional[str]:
    if rec.get("median_ms") is not None:
        return common.fmt(rec["median_ms"])
    return "n/a" if rec.get("status") == "skipped" else "error"


def _x(v: Optional[float]) -> Optional[str]:
    return None if v is None else f"{v:.2f}×"


def op_tables(op: dict) -> str:
    """One table per (dtype, mode): time of every implementation, the fused op's ratios and memory."""
    out = []
    impls = op["config"]["impls"]
    keys = []
    for c in op["cases"]:
        if (c["dtype"], c["mode"]) not in keys:
            keys.append((c["dtype"], c["mode"]))
    for dtype, mode in keys:
        cases = [c for c in op["cases"] if c["dtype"] == dtype and c["mode"] == mode]
        headers = ["shape", "(B,H,C,N)"] + [f"{i} ms" for i in impls] + [
            "fused", "× eager", "× compile", "GB/s", "% floor"]
        if mode == "fwd":
            headers += ["fused max err"]
        if mode == "fwd+bwd":
            headers += ["saved MiB eager → fused"]
        if any(c["results"].get("eager", {}).get("peak_mem_bytes") is not None for c in cases):
            headers += ["peak MiB eager → fused"]
        rows = []
        for c in cases:
            fused = c["results"].get(c["auto_backend"], {})
            row = [c["shape"], c["label"]] + [_ms(c["results"][i]) for i in impls] + [
                c["auto_backend"], _x(fused.get("speedup_vs_eager")), _x(fused.get("speedup_vs_compile")),
                common.fmt(fused.get("achieved_gbps")),
                None if fused.get("pct_of_floor") is None else f"{fused['pct_of_floor']:.0f} %",
            ]
            eager = c["results"].get("eager", {})
            if mode == "fwd":
                err = fused.get("max_abs_err_vs_fp32_reference")
                row.append(None if err is None else f"{err:.1e}")
            if mode == "fwd+bwd":
                row.append(_pair(eager.get("saved_bytes"), fused.get("saved_bytes")))
            if "peak MiB eager → fused" in headers:
                row.append(_pair(eager.get("peak_mem_bytes"), fused.get("peak_mem_bytes")))
            rows.append(row)
        out.append(f"#### {dtype}, {mode}\n\n" + common.markdown_table(headers, rows))
    return "\n\n".join(out)


def _pair(a: Optional[int], b: Optional[int]) -> Optional[str]:
    if a is None or b is None:
        return None
    return f"{a / MiB:.1f} → {b / MiB:.1f}"


def op_errors(op: dict) -> list[str]:
    seen = {}
    for c in op["cases"]:
        for impl, rec in c["results"].items():
            if rec["status"] == "error" and rec.get("error"):
                seen.setdefault((impl, rec["error"]), []).append(f"{c['shape']}/{c['dtype']}/{c['mode']}")
    return [f"* `{impl}` at {', '.join(where[:3])}{' …' if len(where) > 3 else ''}: {err}"
            for (impl, err), where in seen.items()]


def model_table(model: dict) -> str:
    headers = ["preset", "task", "attention", "compile", "batch", "size", "median ms", "images/s",
               "peak MiB", "saved MiB", "status"]
    rows = []
    for r in model["runs"]:
        rows.append([
            r["preset"], r["task"], _attention_label(r),
            "yes" if r["compile"] else "no", r["batch"], f"{r['size']}²", common.fmt(r.get("median_ms")),
            common.fmt(r.get("images_per_s")),
            None if r.get("peak_mem_bytes") is None else f"{r['peak_mem_bytes'] / MiB:.0f}",
            None if r.get("saved_bytes") is None else f"{r['saved_bytes'] / MiB:.0f}",
            r["status"] if r["status"] == "ok" else f"{r['status']}: {(r.get('error') or '')[:120]}",
        ])
    return common.markdown_table(headers, rows)


def _attention_label(r: dict) -> str:
    resolved = r.get("resolved_backend")
    return r["attention_backend"] + (f" → {resolved}" if resolved and resolved != r["attention_backend"] else "")


def render(op: Optional[dict], model: Optional[dict], plots: list[str] = ()) -> str:
    """The whole markdown report of one device's results."""
    first = op or model
    if first is None:
        raise ValueError("no benchmark results to render")
    info = first["machine"]
    parts = [f"# ddsa benchmarks — {info['device_name']}", "", *machine_lines(info), ""]
    parts += ["## Goals", "", goals_table(goals.evaluate(op, model)), ""]
    if op:
        cfg = op["config"]
        parts += ["## Op benchmark", ""]
        if cfg.get("quick_note"):
            parts += [f"**Quick mode.** {cfg['quick_note']}", ""]
        parts += [f"* {n}" for n in cfg.get("notes", [])]
        compiled_at = ", ".join(cfg["compile_dtypes"]) or "none"
        if cfg.get("compile_shapes"):
            compiled_at += " at " + ", ".join(cfg["compile_shapes"])
        parts += [f"* torch.compile baseline: {cfg['compile_options']}; run at {compiled_at}",
                  f"* timer: {_timer_name(op)}, at least {cfg['min_run_time_s']} s per measurement", ""]
        parts += [op_tables(op), ""]
        if op.get("skipped_cases"):
            parts += ["Cases not run (time budget): " + ", ".join(
                f"{c['shape']}/{c['dtype']}/{c['mode']}" for c in op["skipped_cases"]), ""]
        errs = op_errors(op)
        if errs:
            parts += ["Failures recorded in this run:", "", *errs, ""]
        for p in plots:
            parts += [f"![time vs N]({p})", ""]
    if model:
        parts += ["## Model benchmark", ""]
        if op:  # the header above describes the op run; this run may differ in time, commit and load
            m = model["machine"]
            parts += [f"Run {m['timestamp_utc']}, commit {((m.get('commit') or {}).get('sha') or 'unknown')[:12]}, "
                      f"load average {m.get('loadavg_at_start')} → {m.get('loadavg_at_end')}.", ""]
        warning = common.busy_warning(model["machine"])
        if warning and model["machine"].get("device_type") == "cpu":
            parts += [f"> **Warning.** {warning}", ""]
        if model["config"].get("notes"):
            parts += [f"* {n}" for n in model["config"]["notes"]] + [""]
        parts += [model_table(model), ""]
    return "\n".join(parts)


def _timer_name(op: dict) -> str:
    for c in op["cases"]:
        for rec in c["results"].values():
            if rec.get("timer"):
                return rec["timer"]
    return "n/a"


def plot_op(op: dict, out_dir: Path) -> tuple[list[str], Optional[str]]:
    """PNG per dtype: median time vs N of every implementation on the inference shapes (1,1,48,N).

    Returns (file names written, None) or ([], reason) when matplotlib is missing or nothing to plot.
    """
    if not common.have_matplotlib():
        return [], "matplotlib is not installed (pip install 'ddsa[plot]'): no plot written"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    dtypes = list(dict.fromkeys(c["dtype"] for c in op["cases"]))
    modes = list(dict.fromkeys(c["mode"] for c in op["cases"]))
    for dtype in dtypes:
        infer = [c for c in op["cases"] if c["kind"] == "inference" and c["dtype"] == dtype]
        if len({c["N"] for c in infer}) < 2:
            continue
        fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            cases = sorted((c for c in infer if c["mode"] == mode), key=lambda c: c["N"])
            for impl in op["config"]["impls"]:
                pts = [(c["N"], c["results"][impl]["median_ms"]) for c in cases
                       if c["results"].get(impl, {}).get("median_ms") is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=impl)
            pts = [(c["N"], c["copy_ms"]) for c in cases]
            ax.plot(*zip(*pts), linestyle="--", color="gray", label="DRAM floor (copy)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("N = pixels (B=1, H=1, C=48)")
            ax.set_ylabel("median time (ms)")
            ax.set_title(f"{mode}, {dtype}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"dual attention op on {op['machine']['device_name']}")
        name = f"op_time_vs_n_{dtype}.png"
        common.save_figure(fig, out_dir / name)
        plt.close(fig)
        written.append(name)
    return written, (None if written else "fewer than two inference sizes measured: no plot written")


def write_report(out_dir: Path) -> Path:
    """(Re)write ``report.md`` (and the plots) from the op.json / model.json found in ``out_dir``."""
    out_dir = Path(out_dir)
    op = common.read_json(out_dir / "op.json") if (out_dir / "op.json").exists() else None
    model = common.read_json(out_dir / "model.json") if (out_dir / "model.json").exists() else None
    plots: list[str] = []
    if op:
        plots, why = plot_op(op, out_dir)
        if why:
            print(f"[report] {why}")
    path = out_dir / "report.md"
    common.write_text(path, render(op, model, plots))
    return path


README_START, README_END = "<!-- ddsa-bench:results:start -->", "<!-- ddsa-bench:results:end -->"


def readme_section(out_dir: Path, rel_to: Path) -> str:
    """Goals + the fp32/fp16 op tables + model table + plot of one results folder, for a README."""
    out_dir = Path(out_dir)
    text = (out_dir / "report.md").read_text(encoding="utf-8")
    info_end = text.index("## Goals")
    header = text[:info_end].split("\n", 1)[1].strip()  # the machine lines, without the title
    goals_md = text[info_end:].split("\n", 2)[2]
    goals_md = goals_md[: goals_md.index("\n## ")].strip() if "\n## " in goals_md else goals_md.strip()
    parts = [f"Results in `{out_dir.relative_to(rel_to) if out_dir.is_relative_to(rel_to) else out_dir}`:", "",
             header, "", goals_md, ""]
    for key in ("#### float16, fwd\n", "#### float32, fwd\n", "#### float16, fwd+bwd\n", "#### float32, fwd+bwd\n"):
        if key in text:
            block = text[text.index(key):]
            block = block[: block.index("\n\n", block.index("|"))] if "\n\n" in block[block.index("|"):] else block
            parts += [block.replace("#### ", "##### ").strip(), ""]
    for png in sorted(out_dir.glob("op_time_vs_n_*.png")):
        parts += [f"![{png.stem}]({png.relative_to(rel_to) if png.is_relative_to(rel_to) else png})", ""]
    if "## Model benchmark" in text:
        model = text[text.index("## Model benchmark"):]
        parts += ["Model:", "", model[model.index("| preset"):].strip(), ""]
    return "\n".join(parts).strip()


def update_readme(readme: Path, out_dirs: list[Path]) -> None:
    """Replace the text between the ddsa-bench markers of ``readme`` with the sections of ``out_dirs``."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} … {README_END} markers")
    body = "\n\n".join(readme_section(d, readme.resolve().parent) for d in out_dirs)
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    common.write_text(readme, f"{head}{README_START}\n{body}\n{README_END}{tail}")


# ----------------------------------------------------------------------------- the device page
# Each results folder holds the JSON of every benchmark's current run; its README.md is rendered from them
# (`ddsa-bench report --device DIR`). (file name or glob, section title, "module:function" of the renderer)
DEVICE_SECTIONS = (
    ("op.json", "Dual attention op and network", "`ddsa-bench op`, `ddsa-bench model`", None),
    ("model.json", "Network", "`ddsa-bench model`", "report:model_table"),
    ("op_cpu.json", "Dual attention, CPU goal", "`ddsa-bench op-cpu`", "ops.dual_attention:cpu_goal_markdown"),
    ("channel_norm.json", "Channel LayerNorm", "`ddsa-bench channel-norm`", "ops.channel_norm:render_markdown"),
    ("depthwise_conv.json", "Depth-wise convolution", "`ddsa-bench depthwise-conv`",
     "ops.depthwise_conv:render_markdown"),
    ("depthwise_chain.json", "Depth-wise ReLU chain", "`ddsa-bench depthwise-chain`",
     "ops.depthwise_chain:render_markdown"),
    ("depthwise_chain_mlp.json", "Depth-wise chain MLP", "`ddsa-bench depthwise-chain-mlp`",
     "ops.depthwise_chain_mlp:render_markdown"),
    ("gated_ffn*.json", "Gated feed-forward", "`ddsa-bench gated-ffn`", "ops.gated_ffn:render_markdown"),
    ("mixed_scale_ffn*.json", "Mixed-scale feed-forward", "`ddsa-bench mixed-scale-ffn`",
     "ops.mixed_scale_ffn:render_markdown"),
    ("patch*.json", "Whole networks, patched", "`ddsa-bench patch`", "networks.patch:render_markdown"),
    ("cpu_memory.json", "CPU memory settings", "`ddsa-bench cpu-memory`", "networks.cpu_memory:render_markdown"),
    ("stages.json", "GPU run", "`ddsa-bench gpu-run`", None),
)
# Written by the GPU run next to stages.json and rendered in its section.
GPU_RUN_FILES = ("env.json", "kernels.json", "train.json", "summary.json", "sanitize.json", "model.json")


def _demote(markdown: str, levels: int = 2) -> str:
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def _renderer(spec: str):
    import importlib

    module, func = spec.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


def _device_section(out_dir: Path, path: Path, title: str, command: str, pattern: str, spec: Optional[str],
                    done: set[str]) -> str:
    data = common.read_json(path)
    variant = path.stem[len(pattern.split("*")[0]):].strip("_").replace("_", " ")  # gated_ffn_small_maps: small maps
    parts = [f"## {title}" + (f" ({variant})" if variant else ""), "", f"{command} → `{path.name}`", ""]
    if isinstance(data.get("machine"), dict):  # the renderers print their own load warning
        parts += [*(line for line in machine_lines(data["machine"])
                    if line.startswith("* ") and not line.startswith("* ddsa backends")), ""]
    if path.name == "op.json":
        model = common.read_json(out_dir / "model.json") if (out_dir / "model.json").exists() else None
        done.add("model.json")
        plots = [p.name for p in sorted(out_dir.glob("op_time_vs_n_*.png"))]
        text = render(data, model, plots)
        body = text[text.index("## Goals"):]  # the title and machine lines are printed above
    elif path.name == "stages.json":
        from .summary import render_summary

        done.update(GPU_RUN_FILES)
        done.update(p.name for p in out_dir.glob("tests_*.json"))
        body = render_summary(out_dir)
    else:
        body = _renderer(spec)(data)
    parts.append(_demote(body.strip()))
    return "\n".join(parts)


def render_device(out_dir: Path) -> str:
    """README.md of one device's results folder: every benchmark's table, each with the machine, versions,
    commit and date recorded in its JSON."""
    out_dir = Path(out_dir)
    done: set[str] = set()
    sections: list[str] = []
    unreadable: list[str] = []
    for pattern, title, command, spec in DEVICE_SECTIONS:
        for path in sorted(out_dir.glob(pattern)):
            if path.name in done:
                continue
            done.add(path.name)
            try:
                sections.append(_device_section(out_dir, path, title, command, pattern, spec, done))
            except (KeyError, TypeError, ValueError) as exc:  # a JSON of an older format: listed, not rendered
                unreadable.append(f"* `{path.name}`: not rendered ({type(exc).__name__}: {exc})")
    others = sorted(p.name for p in out_dir.glob("*.json") if p.name not in done)
    head = [f"# Benchmark results: {out_dir.name}", "",
            "Rendered from the JSON files of this folder by `ddsa-bench report --device "
            f"ddsa_bench/results/{out_dir.name}`; each JSON holds the current run of one benchmark.", ""]
    if others or unreadable:
        sections.append("## Other files\n\n" + "\n".join([*unreadable, *(f"* `{n}`" for n in others)]))
    return "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"


def write_device_readme(out_dir: Path) -> Path:
    """(Re)write ``README.md`` of a device's results folder from its JSON."""
    path = Path(out_dir) / "README.md"
    common.write_text(path, render_device(out_dir))
    return path


# ----------------------------------------------------------------------------- the README's patch table
PATCH_TABLE_START, PATCH_TABLE_END = "<!-- patch-table -->", "<!-- /patch-table -->"
_TASK_TITLES = {"infer": "inference", "train": "training step"}


def patch_rows(patch: dict) -> list[tuple[str, dict[str, Optional[float]]]]:
    """(family, {task: plain median ÷ patched median or None}) of every float32 family of a patch.json."""
    rows = []
    for fam in patch.get("families", []):
        if fam.get("dtype", "float32") != "float32" or fam.get("status") != "ok":
            continue
        ratios = {}
        for task, rec in fam.get("tasks", {}).items():
            ok = rec.get("status") == "ok" and rec.get("plain") and rec.get("patched")
            ratios[task] = rec["plain"]["median_ms"] / rec["patched"]["median_ms"] if ok else None
        rows.append((fam["family"], ratios))
    return rows


def published_ratios(device_dir: Path) -> dict[str, dict[str, Optional[float]]]:
    """{family: {task: ratio}} of the ``patch_published_<family>.json`` runs in ``device_dir``: ``ddsa-bench
    patch --arch`` on the authors' own network file, at the family run's sizes."""
    out = {}
    for path in sorted(Path(device_dir).glob("patch_published_*.json")):
        rows = patch_rows(common.read_json(path))
        if rows:
            out[path.stem[len("patch_published_"):]] = rows[0][1]
    return out


def patch_table(patch: dict, published: Optional[dict[str, dict[str, Optional[float]]]] = None) -> str:
    """Markdown table of the whole-network speed-ups of a patch.json (float32 rows), with a column per task of
    the ``published`` runs (:func:`published_ratios`) when given."""
    tasks = {t: None for fam in patch.get("families", []) for t in fam.get("tasks", {})}
    heads = []
    for task in tasks:
        rec = next(f["tasks"][task] for f in patch["families"] if task in f.get("tasks", {}))
        heads.append(f"{_TASK_TITLES.get(task, task)} {rec.get('batch', '?')}×{rec.get('size', '?')}²")
    if published:
        heads += [f"{_TASK_TITLES.get(t, t)}, authors' file" for t in tasks]
    names = {"ddsa": "IDT-DDSA", "drsformer": "DRSformer", "restormer": "Restormer"}
    lines = ["| network | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for family, ratios in patch_rows(patch):
        columns = [ratios] + ([published.get(family, {})] if published else [])
        cells = [f"{r[t]:.2f}×" if r.get(t) else "—" for r in columns for t in tasks]
        lines.append(f"| {names.get(family, family)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_patch(patch: dict, path: Path) -> Optional[str]:
    """Bar chart of the speed-ups of :func:`patch_table` as PNG at ``path``; None, or why not."""
    if not common.have_matplotlib():
        return "matplotlib is not installed (pip install matplotlib)"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = patch_rows(patch)
    tasks = [t for t in _TASK_TITLES if any(r.get(t) for _, r in rows)]
    fig, ax = plt.subplots(figsize=(5.5, 2.8))
    width = 0.8 / max(1, len(tasks))
    for i, task in enumerate(tasks):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [r.get(task) or 0 for _, r in rows], width, label=_TASK_TITLES[task])
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([j + width * (len(tasks) - 1) / 2 for j in range(len(rows))], [f for f, _ in rows])
    ax.set_ylabel("speed-up over unpatched (×)")
    ax.set_title(f"ddsa_kernels.patch, {patch['machine'].get('device_name', '?')}, "
                 f"{patch['machine'].get('torch_threads', '?')} threads, fp32", fontsize=9)
    ax.legend(fontsize=8)
    common.save_figure(fig, path)
    plt.close(fig)
    return None


def update_patch_table(readme: Path, device_dir: Path) -> list[str]:
    """Regenerate the table between the patch-table markers of ``readme`` from ``device_dir``/patch.json (and
    its ``patch_published_*.json``) and, when matplotlib is installed, its plot ``device_dir``/patch.png;
    returns notes (e.g. no plot)."""
    readme, device_dir = Path(readme), Path(device_dir)
    patch = common.read_json(device_dir / "patch.json")
    text = readme.read_text(encoding="utf-8")
    if PATCH_TABLE_START not in text or PATCH_TABLE_END not in text:
        raise ValueError(f"{readme} has no {PATCH_TABLE_START} … {PATCH_TABLE_END} markers")
    notes = []
    why = plot_patch(patch, device_dir / "patch.png")
    body = patch_table(patch, published_ratios(device_dir))
    if why is None or (device_dir / "patch.png").exists():
        rel = (device_dir / "patch.png").resolve().relative_to(readme.resolve().parent)
        body += f"\n\n![patch speed-ups]({rel.as_posix()})"
    if why is not None:
        notes.append(f"no new plot: {why}")
    head, rest = text.split(PATCH_TABLE_START, 1)
    tail = rest.split(PATCH_TABLE_END, 1)[1]
    common.write_text(readme, f"{head}{PATCH_TABLE_START}\n{body}\n{PATCH_TABLE_END}{tail}")
    return notes
