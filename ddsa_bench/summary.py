"""Stage bookkeeping of ``ddsa_bench/gpu/run.sh``, without torch (it runs after every stage).

    python -m ddsa_bench.summary stage --out DIR --name NAME --status ok|failed|timeout|skipped \
        [--rc RC --seconds S --cap S --reason TEXT --files F...]     record a stage, then re-render
    python -m ddsa_bench.summary junit --xml F.xml --out F.json [--rc RC]   pytest counts
    python -m ddsa_bench.summary summary --out DIR

``stages.json`` holds every stage's outcome; ``summary.json`` (stages + files present) and
``summary.md`` (device, versions, commit, stages, the measured tables) are rendered from it and
from the stages' own files (env.json, tests_*.json, sanitize.json, kernels.json, op.json,
train.json, patch.md). Every file is written atomically (temp file + rename).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

from ddsa_model.atomic import atomic_write_json, atomic_write_text  # torch-free


STAGES = ("build", "gpu_tests", "sanitize", "op_bench", "train", "patch", "rest_tests")


# ----------------------------------------------------------------------------- file and table helpers
# Shared by every benchmark (ddsa_bench.common re-exports them); kept here so that this module runs
# without torch.
def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (NaN/inf as strings), atomically, creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; None renders as an en dash."""
    def cell(x: Any) -> str:
        return "–" if x is None else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: Optional[float], digits: int = 3) -> Optional[str]:
    """Format a number with ``digits`` significant figures (None and strings pass through)."""
    if x is None or isinstance(x, str):
        return x
    if x == 0 or not math.isfinite(x):
        return str(x) if x != 0 else "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def cmd_stage(args) -> int:
    """Record one stage's outcome in stages.json (read-modify-write; stages run one at a time)."""
    path = Path(args.out) / "stages.json"
    stages = read_json(path) if path.exists() else {}
    stages[args.name] = {"status": args.status, "rc": args.rc, "seconds": args.seconds, "cap_s": args.cap,
                         "reason": args.reason, "files": args.files or []}
    write_json(path, stages)
    return 0


def _mib(x: Optional[float]) -> Optional[str]:
    return None if x is None else f"{x / 2**20:.0f}"


def _read(out: Path, name: str) -> Optional[Any]:
    path = out / name
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def render_summary(out: Path) -> str:
    """summary.md from stages.json, env.json and the stages' JSON files in ``out``."""
    env = _read(out, "env.json") or {}
    stages = _read(out, "stages.json") or {}
    commit = env.get("commit") or {}
    lines = ["# GPU run summary", ""]
    lines += [f"* device: **{env.get('device_name', '?')}** ({env.get('device_type', '?')}, capability "
              f"{env.get('gpu_capability', '–')}, driver {env.get('driver') or '–'}); results folder "
              f"`ddsa_bench/results/{env.get('device_slug', '?')}/`",
              f"* torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, CUDA {env.get('cuda')}, "
              f"Python {env.get('python', '?')}",
              f"* commit {str(commit.get('sha'))[:12]}{' (dirty)' if commit.get('dirty') else ''}; "
              f"{env.get('timestamp_utc', '')}",
              f"* ddsa backends: " + "; ".join(f"{k}: {v}" for k, v in (env.get("ddsa_backends") or {}).items()),
              ""]
    rows = []
    for name in STAGES:
        st = stages.get(name)
        if st is None:
            rows.append([name, "not reached", None, None, None, None])
        else:
            rows.append([name, st["status"], st.get("rc"), st.get("seconds"), st.get("cap_s"), st.get("reason") or ""])
    lines += ["## Stages", "", markdown_table(["stage", "status", "rc", "seconds", "cap s", "note"], rows), ""]
    for tests in ("tests_gpu.json", "tests_rest.json"):
        t = _read(out, tests)
        if t:
            lines += [f"## {tests[:-5]}", "", ", ".join(f"{k} {v}" for k, v in t["counts"].items()), ""]
            lines += [f"* `{f}`" for f in t.get("failed", [])[:30]] + [""]
    san = _read(out, "sanitize.json")
    if san:
        lines += ["## compute-sanitizer", "", markdown_table(
            ["backend", "tool", "status", "errors", "note"],
            [[r["backend"], r["tool"], r["status"], r.get("errors"), r.get("reason") or ""] for r in san["runs"]]), ""]
    ker = _read(out, "kernels.json")
    if ker:
        lines += ["## Per-kernel time (ms per call)", "",
                  f"device copy bandwidth: {fmt(ker.get('copy_gbps'))} GB/s", ""]
        rows = []
        for c in ker["cases"]:
            if c.get("status") != "ok":
                rows.append([c["backend"], c["label"], c["dtype"], None, None, None, None, None, c.get("error")])
                continue
            for part in ("fwd", "bwd"):
                s = c[part]["stages_ms"]
                rows.append([c["backend"], c["label"], c["dtype"], part, fmt(s.get("gram")),
                             fmt(s.get("epilogue")), fmt(s.get("apply")),
                             fmt(c[part]["total_ms"]),
                             fmt(c[part].get("pct_of_floor"))])
        lines += [markdown_table(["backend", "shape", "dtype", "pass", "gram", "epilogue", "apply", "total",
                                         "% floor"], rows), ""]
    op = _read(out, "op.json")
    if op:
        rows = []
        for c in op["cases"]:
            for impl, r in c["results"].items():
                if r.get("median_ms") is not None:
                    rows.append([c["shape"], c["dtype"], c["mode"], impl, fmt(r["median_ms"]),
                                 fmt(r.get("pct_of_floor")), fmt(r.get("speedup_vs_eager")),
                                 fmt(r.get("max_abs_err_vs_fp32_reference"))])
        lines += ["## Op benchmark (median ms)", "", markdown_table(
            ["shape", "dtype", "mode", "impl", "ms", "% floor", "× eager", "max err"], rows), ""]
    tr = _read(out, "train.json")
    if tr:
        cfg = tr["config"]
        lines += [f"## Training step: {cfg['preset']}, batch {cfg['batch']} at {cfg['size']}², AMP", "",
                  markdown_table(
                      ["dtype", "attention", "images/s", "step ms", "peak MiB", "status"],
                      [[r["dtype"], f"{r['backend']} → {r.get('resolved')}" if r["backend"] == "auto" else r["backend"],
                        fmt(r.get("images_per_s")), fmt(r.get("step_ms")), _mib(r.get("peak_bytes")),
                        r.get("status")] for r in tr["throughput"]]), "",
                  f"Peak training memory at batch 1 ({tr['memory'][0]['dtype'] if tr['memory'] else ''} AMP, "
                  "weights and AdamW state included):", "",
                  markdown_table(["size", "attention", "peak MiB", "status"],
                                        [[f"{r['size']}²", r["backend"], _mib(r.get("peak_bytes")), r.get("status")]
                                         for r in tr["memory"]]), ""]
    patch_md = out / "patch.md"
    if patch_md.is_file():
        text = patch_md.read_text(encoding="utf-8")
        lines += [text.replace("## ", "## Drop-in patch: ", 1).rstrip(), ""]
    return "\n".join(lines)


def cmd_summary(args) -> int:
    out = Path(args.out)
    text = render_summary(out)
    write_text(out / "summary.md", text + "\n")
    stages = _read(out, "stages.json") or {}
    write_json(out / "summary.json", {"stages": {n: stages.get(n, {"status": "not reached"}) for n in STAGES},
                                             "files": sorted(p.name for p in out.iterdir() if p.is_file())})
    return 0


def cmd_junit(args) -> int:
    """tests_*.json from a pytest --junitxml file: counts and the failed test ids."""
    import xml.etree.ElementTree as ET

    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failed = []
    path = Path(args.xml)
    if path.exists():
        for case in ET.parse(path).getroot().iter("testcase"):
            ident = f"{case.get('classname')}::{case.get('name')}"
            kinds = {child.tag for child in case}
            if "failure" in kinds:
                counts["failed"] += 1
                failed.append(ident)
            elif "error" in kinds:
                counts["error"] += 1
                failed.append(ident)
            elif "skipped" in kinds:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    write_json(Path(args.out), {"junit": str(path), "exists": path.exists(), "counts": counts,
                                       "failed": failed, "rc": args.rc})
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddsa_bench.summary", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stage")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True, choices=STAGES)
    p.add_argument("--status", required=True, choices=("ok", "failed", "timeout", "skipped"))
    p.add_argument("--rc", type=int, default=None)
    p.add_argument("--seconds", type=int, default=None)
    p.add_argument("--cap", type=int, default=None)
    p.add_argument("--reason", default=None)
    p.add_argument("--files", nargs="*", default=None)
    p = sub.add_parser("summary")
    p.add_argument("--out", required=True)
    p = sub.add_parser("junit")
    p.add_argument("--xml", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rc", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "stage":
        cmd_stage(args)
        return cmd_summary(args)
    return {"summary": cmd_summary, "junit": cmd_junit}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
