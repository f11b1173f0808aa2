"""Stage 3 of gpu/run.sh: ``ddsa_bench/gpu/sanitize_case.py`` per backend under compute-sanitizer.

    python -m ddsa_bench.gpu.sanitize_stage --out DIR --device cuda --sanitizer PATH --backends triton cuda
    python -m ddsa_bench.gpu.sanitize_stage --out DIR --device cpu --backends cpu      (no sanitizer)

Runs, per backend, memcheck over every case (C = 48, 96 × the dtypes) and racecheck (shared-memory
hazards) over fp16 and fp32, each under its own cap. Writes DIR/sanitize.json after every run
({"runs": [{backend, tool, status, errors, seconds, log}]}) and the logs under DIR/sanitize/.
Exit status 1 when a run found errors or failed.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from .. import common

CASE = str(Path(__file__).resolve().parent / "sanitize_case.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sanitizer", default=None, help="compute-sanitizer executable (none: run the cases plainly)")
    parser.add_argument("--backends", nargs="+", required=True)
    parser.add_argument("--dtypes", default="float16,bfloat16,float32")
    parser.add_argument("--channels", default="48,96")
    parser.add_argument("--per-run-cap", type=int, default=60, help="seconds per sanitizer run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    logs = out / "sanitize"
    logs.mkdir(parents=True, exist_ok=True)
    result = {"sanitizer": args.sanitizer, "device": args.device, "runs": [],
              "notes": ["cases: C = 48 and 96, N = 1001, q/k/v views of one qkv tensor at storage offset 1; "
                        "memcheck over every dtype, racecheck over fp16 and fp32"]}
    tools = [("memcheck", args.dtypes)]
    if args.sanitizer:
        tools.append(("racecheck", ",".join(d for d in args.dtypes.split(",") if d in ("float16", "float32"))))
    else:
        tools = [("none", args.dtypes)]
    bad = 0
    for tool, dtypes in tools:
        for backend in args.backends:
            cmd = [sys.executable, CASE, "--backend", backend, "--device", args.device, "--dtypes", dtypes, "--channels", args.channels]
            if args.sanitizer:
                cmd = [args.sanitizer, "--tool", tool, "--error-exitcode", "3", "--print-limit", "20", *cmd]
            log = logs / f"{tool}_{backend}.log"
            t0 = time.perf_counter()
            rec = {"backend": backend, "tool": tool, "dtypes": dtypes, "log": str(log.relative_to(out)),
                   "reason": None if args.sanitizer else "run without compute-sanitizer"}
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.per_run_cap)
                text = done.stdout + done.stderr
                m = re.search(r"ERROR SUMMARY: (\d+) error", text)
                rec["errors"] = int(m.group(1)) if m else None
                rec["rc"] = done.returncode
                rec["status"] = "ok" if done.returncode == 0 and not rec["errors"] else "failed"
            except subprocess.TimeoutExpired as exc:
                text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                rec.update(status="timeout", errors=None, rc=None, reason=f"over the {args.per_run_cap}s cap")
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            log.write_text(" ".join(cmd) + "\n" + text)
            bad += rec["status"] == "failed"
            result["runs"].append(rec)
            common.write_json(out / "sanitize.json", result)
            print(f"[sanitize] {tool} {backend}: {rec['status']} (errors {rec.get('errors')}, {rec['seconds']}s)",
                  flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
