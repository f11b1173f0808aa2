"""The performance goals of the op and the model, evaluated on benchmark results: measured number and PASS/FAIL.

"Fused op" is whatever ``backend="auto"`` picked for the case (recorded as ``auto_backend``).
A goal whose inputs were not measured in the given results is "NOT MEASURED", never PASS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

PASS, FAIL, NOT_MEASURED = "PASS", "FAIL", "NOT MEASURED"

GOAL_SHAPE_GPU_INFER = "infer-1024"
GOAL_SHAPE_TRAIN = "train-L1"


@dataclass
class Goal:
    key: str
    text: str
    target: str
    measured: Optional[str]
    status: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _cases(op: Optional[dict], *, mode: str, dtype: Optional[str] = None, shape: Optional[str] = None) -> list[dict]:
    if not op:
        return []
    return [
        c for c in op.get("cases", [])
        if c["mode"] == mode and (dtype is None or c["dtype"] == dtype) and (shape is None or c["shape"] == shape)
    ]


def _fused(case: dict) -> dict:
    return case["results"].get(case["auto_backend"], {})


def _min_over(cases: list[dict], field: str) -> tuple[Optional[float], Optional[dict], list[dict]]:
    """Smallest value of ``field`` of the fused result over cases; (None, None, missing) if any is absent."""
    worst, worst_case, missing = None, None, []
    for c in cases:
        v = _fused(c).get(field)
        if v is None:
            missing.append(c)
            continue
        if worst is None or v < worst:
            worst, worst_case = v, c
    return worst, worst_case, missing


def _threshold_goal(key: str, text: str, cases: list[dict], field: str, target: float, unit: str) -> Goal:
    tgt = f"≥ {target:g}{unit}"
    if not cases:
        return Goal(key, text, tgt, None, NOT_MEASURED, "no matching case in these results")
    worst, worst_case, missing = _min_over(cases, field)
    if missing:
        names = ", ".join(f"{c['shape']}/{c['dtype']}" for c in missing)
        err = "; ".join(filter(None, (_fused(c).get("error") for c in missing)))
        return Goal(key, text, tgt, None, NOT_MEASURED, f"no value for {names} {err}".strip())
    fused = worst_case["auto_backend"]
    detail = f"fused = {fused}; worst: {worst_case['shape']} {worst_case['label']} {worst_case['dtype']}"
    if len(cases) > 1:
        detail += f" (min over {len(cases)} cases)"
    return Goal(key, text, tgt, f"{worst:.3g}{unit}", PASS if worst >= target else FAIL, detail)


def evaluate(op: Optional[dict], model: Optional[dict]) -> list[Goal]:
    """Every goal against the given op / model results (either may be None)."""
    device = next((res["machine"]["device_type"] for res in (op, model) if res), None)
    specs = [
        # key, text, device, cases, field, target, unit
        ("cpu_fwd", "CPU: fused op forward vs eager, at every shape", "cpu",
         lambda: _cases(op, mode="fwd", dtype="float32"), "speedup_vs_eager", 2.0, "×"),
        ("cpu_fwdbwd", "CPU: fused op forward+backward vs eager, at every shape", "cpu",
         lambda: _cases(op, mode="fwd+bwd", dtype="float32"), "speedup_vs_eager", 1.8, "×"),
        ("gpu_floor", "GPU: forward at (1,1,48,1024²) fp16, % of the DRAM floor at measured copy bandwidth", "cuda",
         lambda: _cases(op, mode="fwd", dtype="float16", shape=GOAL_SHAPE_GPU_INFER), "pct_of_floor", 85.0, " %"),
        ("gpu_vs_eager", "GPU: forward at (1,1,48,1024²) fp16 vs eager", "cuda",
         lambda: _cases(op, mode="fwd", dtype="float16", shape=GOAL_SHAPE_GPU_INFER), "speedup_vs_eager", 8.0, "×"),
        ("gpu_vs_compile", "GPU: forward at (1,1,48,1024²) fp16 vs torch.compile(eager)", "cuda",
         lambda: _cases(op, mode="fwd", dtype="float16", shape=GOAL_SHAPE_GPU_INFER), "speedup_vs_compile", 2.5, "×"),
        ("gpu_train_fwdbwd", "GPU: forward+backward at the training shape vs eager (every dtype measured)", "cuda",
         lambda: _cases(op, mode="fwd+bwd", shape=GOAL_SHAPE_TRAIN), "speedup_vs_eager", 4.0, "×"),
    ]
    goals = []
    for key, text, dev, cases, field, target, unit in specs:
        if device == dev:
            goals.append(_threshold_goal(key, text, cases(), field, target, unit))
        else:
            goals.append(Goal(key, text, f"≥ {target:g}{unit}", None, NOT_MEASURED, f"needs a {dev} run"))
    goals.append(_saved_goal(op))
    goals.append(_model_goal(model))
    return goals


def _saved_goal(op: Optional[dict]) -> Goal:
    text = "Attention's saved activations, eager / fused, at the training shape (inputs q,k,v counted)"
    cases = _cases(op, mode="fwd+bwd", shape=GOAL_SHAPE_TRAIN)
    if not cases:
        return Goal("saved_activations", text, "≥ 4×", None, NOT_MEASURED, "no fwd+bwd case at the training shape")
    goal = _threshold_goal("saved_activations", text, cases, "saved_ratio_eager_over_this", 4.0, "×")
    c = cases[0]
    eager, fused = c["results"].get("eager", {}), _fused(c)
    if eager.get("saved_bytes_excluding_inputs") is not None and fused.get("saved_bytes_excluding_inputs"):
        ex = eager["saved_bytes_excluding_inputs"] / fused["saved_bytes_excluding_inputs"]
        goal.detail += (f"; {c['dtype']}: eager {eager['saved_bytes'] / 2**20:.1f} MiB vs fused "
                        f"{fused['saved_bytes'] / 2**20:.1f} MiB; excluding the inputs' storages: "
                        f"{ex:.3g}× ({eager['saved_bytes_excluding_inputs'] / 2**20:.1f} vs "
                        f"{fused['saved_bytes_excluding_inputs'] / 2**20:.2f} MiB)")
    return goal


def model_pairs(model: Optional[dict], task: str = "train", compiled: bool = False) -> list[tuple[dict, dict]]:
    """(eager run, fused run) pairs of the model benchmark with equal preset/batch/size."""
    if not model:
        return []
    runs = [r for r in model.get("runs", []) if r["task"] == task and r["compile"] == compiled]
    pairs = []
    for e in (r for r in runs if r["attention_backend"] == "eager"):
        for f in runs:
            if f["attention_backend"] != "eager" and all(f[k] == e[k] for k in ("preset", "batch", "size")):
                pairs.append((e, f))
    return pairs


def _model_goal(model: Optional[dict]) -> Goal:
    text = "GPU: ddsa-official training step, fused vs eager: throughput and peak memory"
    target = "≥ 1.3× images/s at ≤ 0.75× peak memory"
    if not model or model["machine"]["device_type"] != "cuda":
        return Goal("model_train", text, target, None, NOT_MEASURED, "needs a CUDA model run")
    pairs = [(e, f) for e, f in model_pairs(model) if e["preset"] == "ddsa-official"]
    ok_pairs = [(e, f) for e, f in pairs if e.get("images_per_s") and f.get("images_per_s")
                and e.get("peak_mem_bytes") and f.get("peak_mem_bytes")]
    if not ok_pairs:
        why = "; ".join(filter(None, (r.get("error") for p in pairs for r in p))) or "no ddsa-official training pair"
        return Goal("model_train", text, target, None, NOT_MEASURED, why)
    e, f = ok_pairs[0]
    thr = f["images_per_s"] / e["images_per_s"]
    mem = f["peak_mem_bytes"] / e["peak_mem_bytes"]
    status = PASS if thr >= 1.3 and mem <= 0.75 else FAIL
    return Goal("model_train", text, target, f"{thr:.3g}× images/s, {mem:.3g}× memory", status,
                f"batch {e['batch']} at {e['size']}², fused = {f.get('resolved_backend')}")
