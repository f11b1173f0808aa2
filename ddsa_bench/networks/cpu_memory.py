"""What ``ddsa_kernels.tune_cpu_memory`` buys on CPU: the shipped model with and without it.

    ddsa-bench cpu-memory [--rounds 3] [--calls 3] [--threads N] [--out DIR]

Allocator settings are per process and fixed at the first large allocation, so every measurement runs
in a fresh child process, with one of three settings:

* ``system``: glibc and torch as they come (``DDSA_SYSTEM_MALLOC=1``);
* ``malloc``: ``tune_cpu_memory()`` as the CLIs call it: glibc keeps freed blocks up to 32 MiB;
* ``malloc+thp``: the same, and torch asks for 2 MiB transparent huge pages for tensors of 2 MiB and
  more (``THP_MEM_ALLOC_ENABLE=1``), which also covers the blocks above 32 MiB.

Each child loads the default model (ddsa-small-allrain in float32, fused ops), runs each task once to
warm up, then ``--calls`` times: the forward of one image at 321×481 (a Rain100L image) and at
768×1024 under ``no_grad``, and a training step (forward, L1, backward) on 4 crops of 128². It
reports milliseconds and page faults (``ru_minflt``) per call. Children run in interleaved rounds
(system, malloc, malloc+thp, system, ...); each figure is the median over rounds. Writes ``cpu_memory.json``
and ``cpu_memory.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from typing import Any, Optional

import torch

from .. import common

SETTINGS = {
    "system": {"DDSA_SYSTEM_MALLOC": "1"},
    "malloc": {"DDSA_SYSTEM_MALLOC": "0"},
    "malloc+thp": {"DDSA_SYSTEM_MALLOC": "0", "THP_MEM_ALLOC_ENABLE": "1"},
}
TASKS = ("infer 321×481", "infer 768×1024", "train 4×128²")

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from ddsa_kernels import tune_cpu_memory
    tune_cpu_memory()
    import torch
    import torch.nn.functional as F
    from ddsa_model import load_default_model

    threads, calls = int(sys.argv[1]), int(sys.argv[2])
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_default_model().float()

    def infer(h, w):
        x = torch.rand(1, 3, h, w)
        def run():
            with torch.no_grad():
                model(x)
        return run

    def train():
        x, y = torch.rand(4, 3, 128, 128), torch.rand(4, 3, 128, 128)
        def run():
            model.zero_grad(set_to_none=True)
            F.l1_loss(model(x), y).backward()
        return run

    out = {}
    for name, make, mode in (("infer 321×481", lambda: infer(321, 481), "eval"),
                             ("infer 768×1024", lambda: infer(768, 1024), "eval"),
                             ("train 4×128²", train, "train")):
        model.train(mode == "train")
        fn = make()
        fn()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        out[name] = {"ms": 1e3 * seconds / calls, "faults": faults / calls}
    print(json.dumps(out))
""")


def run_child(setting: str, threads: int, calls: int) -> dict[str, dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "DDSA_SYSTEM_MALLOC")}
    env.update(SETTINGS[setting])
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(calls)], capture_output=True, text=True,
                          cwd=common.REPO_ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {setting} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = common.markdown_heading("CPU allocator settings, shipped model", m)
    rows = []
    for task in TASKS:
        med = result["median"][task]
        base = med["system"]["ms"]
        rows.append([task, *(f"{common.fmt(med[s]['ms'], 4)} ms / {med[s]['faults'] / 1e3:.1f} k" for s in SETTINGS),
                     f"×{base / med['malloc']['ms']:.2f}", f"×{base / med['malloc+thp']['ms']:.2f}"])
    lines.append(common.markdown_table(
        ["task", "system: ms / faults", "malloc: ms / faults", "malloc+thp: ms / faults", "malloc vs system",
         "malloc+thp vs system"], rows))
    lines += ["", f"torch {m['torch']}, {result['threads'] or m['torch_threads']} thread(s), fp32, {result['rounds']} "
              f"interleaved rounds of one child process per setting, {result['calls']} calls per task; commit "
              f"{(m['commit'] or {}).get('sha') or '?'}.", "",
              "* system = glibc and torch defaults; malloc = `ddsa_kernels.tune_cpu_memory()`, what every ddsa CLI "
              "does (glibc keeps freed blocks up to 32 MiB); malloc+thp = the same with `THP_MEM_ALLOC_ENABLE=1` "
              "(torch asks for 2 MiB transparent huge pages for tensors of 2 MiB and more).",
              "* faults = minor page faults per call (`ru_minflt`); median over rounds."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="ddsa-bench cpu-memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per task in each child")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the children (default: torch's)")
    parser.add_argument("--out", default=None, help="output folder (default: ddsa_bench/results/<device-slug>)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    device = torch.device("cpu")
    result: dict[str, Any] = {"benchmark": "cpu_memory", "machine": common.machine_info(device),
                              "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
                              "settings": SETTINGS, "runs": []}
    for r in range(args.rounds):
        for setting in SETTINGS:
            run = run_child(setting, args.threads, args.calls)
            result["runs"].append({"round": r, "setting": setting, "tasks": run})
            print(f"[cpu_memory] round {r} {setting:6s} " + "  ".join(
                f"{t}: {v['ms']:.0f} ms {v['faults'] / 1e3:.1f} k" for t, v in run.items()), flush=True)
    result["median"] = {
        task: {s: {key: statistics.median(run["tasks"][task][key] for run in result["runs"] if run["setting"] == s)
                   for key in ("ms", "faults")} for s in SETTINGS} for task in TASKS}
    common.write_results(result, render_markdown, device, args.out)
    return result


if __name__ == "__main__":
    main()
