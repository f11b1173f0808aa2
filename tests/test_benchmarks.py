"""The benchmark harness's arithmetic and outputs (not its timings): floor bytes, ratios,
saved-tensor accounting, goal verdicts, and that the JSON/markdown it writes hold every figure."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ddsa_bench import common, goals, report
from ddsa_bench.ops import dual_attention as op_bench
from ddsa_bench.__main__ import main as bench_main

from op_checks import assert_bench_row


# ----------------------------------------------------------------------------- byte counts
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dram_floor_counts_the_tensors_the_op_must_touch(dtype):
    shape = (2, 3, 5, 37)
    q, k, v = (torch.randn(shape).to(dtype) for _ in range(3))
    out = torch.empty_like(q)
    fwd = sum(t.nelement() * t.element_size() for t in (q, k, v, out))
    assert common.dram_floor_bytes(*shape, q.element_size(), "fwd") == fwd
    # backward additionally reads q, k, v, dO and writes dq, dk, dv
    bwd = sum(t.nelement() * t.element_size() for t in (q, k, v, out, q, k, v))
    assert common.dram_floor_bytes(*shape, q.element_size(), "fwd+bwd") == fwd + bwd
    # the goal shape: 4·B·H·C·N·bytes at (1,1,48,1024²) fp16
    assert common.dram_floor_bytes(1, 1, 48, 1024 ** 2, 2) == 4 * 48 * 2 ** 20 * 2 == 402_653_184


def test_dram_floor_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        common.dram_floor_bytes(1, 1, 48, 64, 4, "bwd")


def test_ratio_and_bandwidth():
    assert common.ratio(10.0, 2.5) == pytest.approx(4.0)
    assert common.ratio(None, 1.0) is None and common.ratio(1.0, None) is None and common.ratio(1.0, 0.0) is None
    assert common.bandwidth_gbps(3_000_000_000, 1500.0) == pytest.approx(2.0)
    assert common.bandwidth_gbps(10, None) is None


def test_copy_time_moves_the_requested_bytes(monkeypatch):
    seen = {}
    real_empty_like = torch.empty_like

    def spy(t, *a, **kw):
        seen["bytes"] = t.nelement() * t.element_size()
        return real_empty_like(t, *a, **kw)

    monkeypatch.setattr(torch, "empty_like", spy)
    timing = common.copy_time(4_000_000, torch.float16, torch.device("cpu"), min_run_time=0.01)
    assert seen["bytes"] * 2 == 4_000_000  # read + write of the copied buffer = the floor's bytes
    assert timing.median_ms > 0


def test_busy_warning_only_when_load_exceeds_the_cpus():
    assert common.busy_warning({"cpu_count": 2, "loadavg_at_start": [0.4, 1, 1], "loadavg_at_end": [1.1, 1, 1]}) is None
    msg = common.busy_warning({"cpu_count": 2, "loadavg_at_start": [0.4, 1, 1], "loadavg_at_end": [5.5, 1, 1]})
    assert msg is not None and "5.5 on 2 CPUs" in msg


# ----------------------------------------------------------------------------- saved tensors
def test_saved_bytes_counts_each_storage_once():
    x = torch.randn(1000, requires_grad=True)
    y = torch.randn(1000, requires_grad=True)
    assert common.saved_tensor_bytes(lambda: x * y) == {"all": 8000, "excluding_inputs": 8000}
    # x * x saves x twice; views of one storage cost that storage once
    assert common.saved_tensor_bytes(lambda: x * x)["all"] == 4000
    assert common.saved_tensor_bytes(lambda: x[:500] * x[500:])["all"] == 4000
    assert common.saved_tensor_bytes(lambda: x * y, exclude=[x]) == {"all": 8000, "excluding_inputs": 4000}
    # exp saves its output: a new storage, not an input
    assert common.saved_tensor_bytes(lambda: x.exp(), exclude=[x]) == {"all": 4000, "excluding_inputs": 4000}


def test_fused_op_saves_only_inputs_and_c_by_c_statistics():
    from ddsa_kernels import dual_attention, ddsa_topk

    b, h, c, n = 2, 2, 8, 300
    q, k, v = (torch.randn(b, h, c, n, requires_grad=True) for _ in range(3))
    t = torch.ones(h, requires_grad=True)
    w = torch.full((2,), 0.2, requires_grad=True)
    inputs = (q, k, v, t, w)
    fused = common.saved_tensor_bytes(lambda: dual_attention(*inputs, ddsa_topk(c), backend="reference"), inputs)
    # probs (B,H,2,C,C) + gram (B,H,C,C) + norms (B,H,2,C), fp32: nothing of size C×N
    stats = 4 * (b * h * 2 * c * c + b * h * c * c + b * h * 2 * c)
    assert fused["excluding_inputs"] == stats
    assert fused["all"] == stats + 4 * (3 * b * h * c * n + h + 2)
    eager = common.saved_tensor_bytes(lambda: dual_attention(*inputs, ddsa_topk(c), backend="eager"), inputs)
    # eager keeps at least q̂ and k̂ (two C×N tensors) beyond its inputs
    assert eager["excluding_inputs"] >= 2 * 4 * b * h * c * n


# ----------------------------------------------------------------------------- derived figures
def _case(eager_ms, compile_ms, fused_ms, *, shape="train-L1", dtype="float32", mode="fwd", copy_ms=1.0,
          backend="reference", saved=(None, None)):
    res = {
        "eager": {"median_ms": eager_ms, "saved_bytes": saved[0], "status": "ok"},
        "compile(eager)": {"median_ms": compile_ms, "saved_bytes": None, "status": "ok"},
        backend: {"median_ms": fused_ms, "saved_bytes": saved[1], "status": "ok",
                  "saved_bytes_excluding_inputs": None},
    }
    case = {"shape": shape, "label": "(16,1,48,128²)", "kind": "training", "dtype": dtype, "mode": mode,
            "floor_bytes": 4_000_000, "copy_ms": copy_ms, "auto_backend": backend, "results": res, "N": 16384}
    op_bench.add_derived(case)
    return case


def test_add_derived_ratios_bandwidth_and_floor_percentage():
    case = _case(12.0, 6.0, 2.0, copy_ms=1.5, saved=(9000, 3000))
    fused = case["results"]["reference"]
    assert fused["speedup_vs_eager"] == pytest.approx(6.0)
    assert fused["speedup_vs_compile"] == pytest.approx(3.0)
    assert fused["achieved_gbps"] == pytest.approx(4_000_000 / 2e-3 / 1e9)
    assert fused["pct_of_floor"] == pytest.approx(75.0)
    assert fused["saved_ratio_eager_over_this"] == pytest.approx(3.0)
    assert case["results"]["eager"]["speedup_vs_eager"] == pytest.approx(1.0)


def _op(cases, device="cpu"):
    return {"machine": {"device_type": device, "device_name": "x"}, "cases": cases}


def test_goals_cpu_pass_fail_and_worst_shape():
    ok = [_case(10, 8, 4, shape="a"), _case(10, 8, 2, shape="b"),
          _case(10, 8, 5, shape="a", mode="fwd+bwd"), _case(10, 8, 4, shape="b", mode="fwd+bwd")]
    by_key = {g.key: g for g in goals.evaluate(_op(ok), None)}
    assert by_key["cpu_fwd"].status == goals.PASS and by_key["cpu_fwd"].measured == "2.5×"
    assert "worst: a" in by_key["cpu_fwd"].detail
    assert by_key["cpu_fwdbwd"].status == goals.PASS and by_key["cpu_fwdbwd"].measured == "2×"
    assert by_key["gpu_floor"].status == goals.NOT_MEASURED
    assert by_key["model_train"].status == goals.NOT_MEASURED
    slow = ok[:3] + [_case(10, 8, 6, shape="b", mode="fwd+bwd")]  # 1.67× < 1.8×
    by_key = {g.key: g for g in goals.evaluate(_op(slow), None)}
    assert by_key["cpu_fwdbwd"].status == goals.FAIL and by_key["cpu_fwdbwd"].measured == "1.67×"
    broken = copy.deepcopy(ok)
    broken[0]["results"]["reference"].update(median_ms=None, speedup_vs_eager=None, error="boom")
    by_key = {g.key: g for g in goals.evaluate(_op(broken), None)}
    assert by_key["cpu_fwd"].status == goals.NOT_MEASURED and "boom" in by_key["cpu_fwd"].detail


def test_goals_gpu_thresholds():
    c = _case(9.0, 3.0, 1.0, shape="infer-1024", dtype="float16", copy_ms=0.9, backend="cuda")
    t = _case(8.0, 5.0, 2.0, shape="train-L1", dtype="float16", mode="fwd+bwd", backend="cuda", saved=(70, 30))
    by_key = {g.key: g for g in goals.evaluate(_op([c, t], "cuda"), None)}
    assert by_key["gpu_floor"].status == goals.PASS and by_key["gpu_floor"].measured == "90 %"
    assert by_key["gpu_vs_eager"].status == goals.PASS      # 9×
    assert by_key["gpu_vs_compile"].status == goals.PASS    # 3×
    assert by_key["gpu_train_fwdbwd"].status == goals.PASS  # 4×
    assert by_key["saved_activations"].status == goals.FAIL  # 2.33× < 4×
    assert by_key["cpu_fwd"].status == goals.NOT_MEASURED


def test_model_goal_needs_both_throughput_and_memory():
    def run(backend, ips, peak):
        return {"preset": "ddsa-official", "task": "train", "compile": False, "attention_backend": backend,
                "resolved_backend": backend, "batch": 16, "size": 128, "images_per_s": ips, "peak_mem_bytes": peak}

    model = {"machine": {"device_type": "cuda"}, "runs": [run("eager", 100.0, 1000), run("auto", 140.0, 700)]}
    g = {x.key: x for x in goals.evaluate(None, model)}["model_train"]
    assert g.status == goals.PASS and g.measured == "1.4× images/s, 0.7× memory"
    model["runs"][1]["peak_mem_bytes"] = 800
    assert {x.key: x for x in goals.evaluate(None, model)}["model_train"].status == goals.FAIL


# ----------------------------------------------------------------------------- end to end
def test_op_bench_cli_writes_every_field(tmp_path, one_thread):
    rc = bench_main(["op", "--device", "cpu", "--quick", "--shapes", "infer-128", "--no-compile",
                     "--min-run-time", "0.01", "--out", str(tmp_path), *one_thread])
    assert rc == 0
    data = json.loads((tmp_path / "op.json").read_text())
    m = data["machine"]
    for key in ("device_name", "torch", "triton", "cuda", "commit", "torch_threads", "cpu_count", "timestamp_utc"):
        assert key in m
    assert m["torch"] == torch.__version__ and m["torch_threads"] == 1
    assert len(data["cases"]) == 2 and {c["mode"] for c in data["cases"]} == {"fwd", "fwd+bwd"}
    for case in data["cases"]:
        assert case["floor_bytes"] == common.dram_floor_bytes(1, 1, 48, 128 * 128, 4, case["mode"])
        assert case["copy_ms"] > 0 and case["auto_backend"] in case["results"]
        eager = case["results"]["eager"]["median_ms"]
        assert case["results"]["compile(eager)"]["status"] == "skipped"
        for impl, rec in case["results"].items():
            if rec["status"] != "ok":
                continue
            assert rec["median_ms"] > 0 and rec["runs"] >= 3
            # three interleaved rounds on the CPU; the figure is their median
            assert len(rec["round_medians_ms"]) == 3
            assert rec["median_ms"] == sorted(rec["round_medians_ms"])[1]
            assert rec["min_ms"] <= rec["median_ms"]
            assert rec["speedup_vs_eager"] == pytest.approx(eager / rec["median_ms"])
            assert rec["pct_of_floor"] == pytest.approx(100 * case["copy_ms"] / rec["median_ms"])
            if case["mode"] == "fwd+bwd":
                assert rec["saved_bytes"] >= 3 * 48 * 128 * 128 * 4  # q, k, v at least
            else:  # every timed implementation computed the op, not something else
                assert rec["max_abs_err_vs_fp32_reference"] < 1e-4
    md = (tmp_path / "report.md").read_text()
    assert "| CPU: fused op forward vs eager, at every shape |" in md
    assert "infer-128" in md and m["device_name"] in md
    assert ("**PASS**" in md) or ("**FAIL**" in md)


def test_model_bench_tiny_records_throughput_and_memory(tmp_path, one_thread):
    pytest.importorskip("ddsa_model")
    rc = bench_main(["model", "--device", "cpu", "--presets", "tiny", "--train-batch", "1", "--train-size", "16",
                     "--infer-sizes", "16", "--min-run-time", "0.01", "--out", str(tmp_path), *one_thread])
    assert rc == 0
    data = json.loads((tmp_path / "model.json").read_text())
    runs = {(r["task"], r["attention_backend"]): r for r in data["runs"]}
    assert set(runs) == {("train", "eager"), ("train", "auto"), ("infer", "eager"), ("infer", "auto")}
    for r in runs.values():
        assert r["status"] == "ok", r
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
    # the fused op saves no C×N intermediates, so the whole network saves strictly less
    assert runs[("train", "auto")]["saved_bytes"] < runs[("train", "eager")]["saved_bytes"]
    assert "## Model benchmark" in (tmp_path / "report.md").read_text()


def test_plot_written_for_two_sizes(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    cases = []
    for side in (128, 256):
        c = _case(10.0, 5.0, 2.0, shape=f"infer-{side}")
        c.update(kind="inference", N=side * side)
        cases.append(c)
    op = {"machine": {"device_name": "cpu x"}, "config": {"impls": ["eager", "compile(eager)", "reference"]},
          "cases": cases}
    names, why = report.plot_op(op, tmp_path)
    assert why is None and names == ["op_time_vs_n_float32.png"]
    with Image.open(tmp_path / names[0]) as im:
        assert im.format == "PNG" and im.size[0] > 200


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown dtype"):
        op_bench.run_op_bench(torch.device("cpu"), quick=True, dtypes=["float8"])
    with pytest.raises(ValueError, match="unknown shape"):
        op_bench.run_op_bench(torch.device("cpu"), quick=True, shapes=["infer-3"])
    with pytest.raises(ValueError, match="not available"):
        op_bench.run_op_bench(torch.device("cpu"), quick=True, backends=["nope"])


def test_largest_batch_search_shrinks_after_out_of_memory(monkeypatch):
    from ddsa_bench.networks import model as model_bench

    calls = []

    def fake_run(model, *, batch, **kw):
        calls.append(batch)
        ok = batch <= 60
        return {"status": "ok" if ok else "oom", "batch": batch, "error": None if ok else "CUDA out of memory"}

    monkeypatch.setattr(model_bench, "bench_run", fake_run)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100_000, 200_000))
    measured = {"preset": "p", "attention_backend": "auto", "batch": 16, "size": 128, "peak_mem_bytes": 16_000}
    rec = model_bench.largest_batch_run(None, measured, device=torch.device("cuda"), min_run_time=0.1)
    # 0.9 · free / per-image peak = 90 images; then −20 % per out-of-memory: 72, 57
    assert calls == [90, 72, 57] and rec["batch_search"] == calls
    assert rec["task"] == "train-max" and rec["status"] == "ok" and rec["batch"] == 57
    cpu = model_bench.largest_batch_run(None, measured, device=torch.device("cpu"), min_run_time=0.1)
    assert cpu["status"] == "skipped"


def test_json_writer_is_atomic_and_keeps_non_finite_values(tmp_path):
    path = tmp_path / "r.json"
    common.write_json(path, {"a": float("nan"), "b": [1.5, float("inf")], "c": None})
    assert json.loads(path.read_text()) == {"a": "nan", "b": [1.5, "inf"], "c": None}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_report_renders_failed_and_skipped_model_runs():
    base = {"preset": "ddsa-official", "task": "train", "compile": False, "batch": 16, "size": 128}
    model = {
        "machine": {"device_type": "cuda", "device_name": "GPU X", "torch": "t", "python": "p",
                    "timestamp_utc": "now", "torch_threads": 1, "cpu_count": 16, "commit": {"sha": "abc"}},
        "config": {"notes": []},
        "runs": [
            dict(base, attention_backend="eager", resolved_backend="eager", status="oom", error="CUDA out of memory",
                 median_ms=None, images_per_s=None, peak_mem_bytes=None),
            dict(base, attention_backend="auto", resolved_backend="cuda", status="ok", error=None, median_ms=100.0,
                 images_per_s=160.0, peak_mem_bytes=2 ** 30, saved_bytes=2 ** 29),
            dict(base, task="train-max", batch=None, attention_backend="auto", status="skipped",
                 error="time budget of 90 s spent"),
        ],
    }
    md = report.render(None, model)
    assert "oom: CUDA out of memory" in md and "skipped: time budget of 90 s spent" in md
    assert "| ddsa-official | train | auto → cuda | no | 16 | 128² | 100 | 160 | 1024 | 512 | ok |" in md
    g = {x.key: x for x in goals.evaluate(None, model)}["model_train"]
    assert g.status == goals.NOT_MEASURED and "out of memory" in g.detail


def test_cli_reports_bad_arguments_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="unknown shape"):
        bench_main(["op", "--device", "cpu", "--shapes", "infer-3", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a folder"):
        bench_main(["report", "--out", str(tmp_path / "missing")])


def test_readme_update_replaces_only_the_marked_section(tmp_path):
    res = tmp_path / "results" / "cpu-x"
    res.mkdir(parents=True)
    machine = {"device_type": "cpu", "device_name": "CPU X", "torch": "t", "python": "p", "timestamp_utc": "now",
               "torch_threads": 2, "cpu_count": 2, "commit": {"sha": "abc"}}
    op = {"machine": machine, "cases": [_case(10.0, 5.0, 2.0, shape="train-L1")],
          "config": {"impls": ["eager", "compile(eager)", "reference"], "notes": [], "compile_options": "c",
                     "compile_dtypes": ["float32"], "min_run_time_s": 0.1}}
    common.write_json(res / "op.json", op)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold table\n{report.README_END}\noutro\n")
    assert bench_main(["report", "--out", str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    inside = text.split(report.README_START)[1].split(report.README_END)[0]
    assert "Results in `results/cpu-x`" in inside
    assert "| CPU: fused op forward vs eager, at every shape | ≥ 2× | 5× | **PASS** |" in inside
    assert "| train-L1 | (16,1,48,128²) | 10 | 5 | 2 | reference | 5.00× | 2.50× | 2 | 50 % |" in inside


def test_cpu_goal_rows_compare_the_cpu_backend_with_each_baseline():
    from ddsa_bench.ops import dual_attention as bench_op_cpu

    def case(mode, **ms):
        return {"label": "(1,1,48,8²)", "mode": mode, "results": {k: {"median_ms": v} for k, v in ms.items()}}

    result = {"cases": [case("fwd", eager=10.0, **{"compile(eager)": 4.0}, cpu=2.0),
                        case("fwd+bwd", eager=9.0, cpu=6.0)]}
    fwd, fwdbwd = bench_op_cpu.cpu_goal_rows(result)
    assert fwd["speedup_vs_eager"] == 5.0 and fwd["meets_eager"]
    assert fwd["speedup_vs_compile(eager)"] == 2.0 and fwd["meets_compile(eager)"]
    assert fwdbwd["speedup_vs_eager"] == 1.5 and not fwdbwd["meets_eager"]  # goal 1.8×
    assert "speedup_vs_compile(eager)" not in fwdbwd


STANDINS = str(common.REPO_ROOT / "tests" / "published_nets")
PATCH_TINY = ["--device", "cpu", "--infer-size", "16", "--train-size", "16", "--train-batch", "1", "--rounds", "2",
              "--min-run-time", "0.01"]


def _assert_patch_record(rec, attention_kind, n_blocks):
    assert rec["status"] == "ok", rec
    assert rec["patched"][attention_kind] == n_blocks  # every transformer block's attention
    assert "module(s) patched" in rec["report"]
    for task, t in rec["tasks"].items():
        assert t["status"] == "ok", t
        assert t["max_abs_diff"] < 1e-4  # same weights, same function
        for v in ("plain", "patched"):
            assert len(t[v]["round_medians_ms"]) == 2 and t[v]["median_ms"] > 0
        assert t["speedup"] == pytest.approx(t["plain"]["median_ms"] / t["patched"]["median_ms"])
    by_kind = rec["tasks"]["infer"]["breakdown_ms"]
    for v in ("plain", "patched"):
        parts = [by_kind[v][k] for k in ("attention", "layer_norm", "feed_forward", "depthwise_conv", "mefc", "other")]
        assert all(p >= 0 for p in parts) and by_kind[v]["attention"] > 0
        assert sum(parts) == pytest.approx(by_kind[v]["total"])
    assert "breakdown_ms" not in rec["tasks"]["train"]


def test_patch_bench_family_default_runs_the_published_structure_standins(tmp_path, one_thread):
    from ddsa_bench.networks import patch as patch_bench

    rc = bench_main(["patch", "--net", "tiny", "--families", "ddsa,restormer", *PATCH_TINY, "--out", str(tmp_path),
                     *one_thread])
    assert rc == 0
    data = json.loads((tmp_path / "patch.json").read_text())
    assert [r["family"] for r in data["families"]] == ["ddsa", "restormer"]
    ddsa, restormer = data["families"]
    assert ddsa["arch"] == patch_bench.family_spec("ddsa") and ddsa["arch"].endswith("idt_ddsa_arch.py:Restormer")
    _assert_patch_record(ddsa, "attention:ddsa", 9)  # IDT-DDSA: 8 U-Net blocks + refinement0
    _assert_patch_record(restormer, "attention:restormer", 8)
    assert data["config"]["kwargs"]["ddsa"]["dim"] == 8
    md = (tmp_path / "patch.md").read_text()
    assert "| ddsa | infer b1 16² |" in md and "| restormer | train b1 16² |" in md
    assert ("| network | image | dtype | attention | layer norm | feed-forward | depth-wise conv | MEFC | other | total |"
            in md)


def test_patch_bench_arch_measures_a_network_file(tmp_path, one_thread, capsys):
    spec = STANDINS + "/drsformer_arch.py:DRSformer"
    kwargs = '{"dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 2, 2, 4]}'
    rc = bench_main(["patch", "--arch", spec, "--kwargs", kwargs, *PATCH_TINY, "--out", str(tmp_path), *one_thread])
    assert rc == 0
    assert "ddsa_kernels.patch:" in capsys.readouterr().out  # the report is printed
    data = json.loads((tmp_path / "patch_drsformer-arch-drsformer.json").read_text())
    assert data["config"]["arch"] == spec and data["config"]["kwargs"] == json.loads(kwargs)
    (rec,) = data["families"]
    assert rec["family"] == "DRSformer" and rec["arch"] == spec
    _assert_patch_record(rec, "attention:drsformer", 7)  # no refinement transformer blocks
    assert rec["patched"]["mefc:drsformer"] == 2  # level-0 and refinement subnets, timed as their own kind
    assert all(rec["tasks"]["infer"]["breakdown_ms"][v]["mefc"] > 0 for v in ("plain", "patched"))
    md = (tmp_path / "patch_drsformer-arch-drsformer.md").read_text()
    assert "| DRSformer | infer b1 16² |" in md and "| DRSformer | train b1 16² |" in md


def test_patch_bench_compile_times_both_compiled_variants_in_the_same_rounds(tmp_path, one_thread):
    from ddsa_bench.networks import patch as patch_bench

    net_file = tmp_path / "small_net.py"
    net_file.write_text("import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
                        "    def __init__(self):\n        super().__init__()\n"
                        "        self.a = nn.Conv2d(3, 4, 3, padding=1)\n        self.b = nn.Conv2d(4, 3, 1)\n\n"
                        "    def forward(self, x):\n        return self.b(torch.relu(self.a(x)))\n")
    result = patch_bench.run_patch_bench(torch.device("cpu"), arch=f"{net_file}:Net", infer_size=8, train_size=8,
                                         train_batch=1, rounds=2, min_run_time=0.01, compile=True, log=lambda _m: None)
    (rec,) = result["families"]
    assert result["config"]["compile"] is True
    for task, t in rec["tasks"].items():
        assert t["status"] == "ok", t["error"]
        for name in ("plain", "patched", "compiled", "patched_compiled"):
            assert len(t[name]["round_medians_ms"]) == 2 and t[name]["median_ms"] > 0
        assert t["compiled"]["first_call_s"] > 0 and t["patched_compiled"]["first_call_s"] > 0
        assert t["speedup_vs_compiled"] == pytest.approx(t["compiled"]["median_ms"] / t["patched"]["median_ms"])
        assert t["speedup_compiled"] == pytest.approx(t["plain"]["median_ms"] / t["patched_compiled"]["median_ms"])
    md = patch_bench.render_markdown(result)
    assert "Against `torch.compile`" in md and "| Net | infer b1 8² | float32 |" in md


@pytest.mark.parametrize("args,message", [
    (["--arch", "no/such/file.py:Net"], "no such file"),
    (["--arch", STANDINS + "/restormer_arch.py"], "takes PATH.py:CLASS"),
    (["--arch", STANDINS + "/restormer_arch.py:Nope"], "has no class 'Nope'; its nn.Module classes: Attention"),
    (["--arch", STANDINS + "/restormer_arch.py:Restormer", "--kwargs", '{"dim": 8'], "not valid JSON"),
    (["--arch", STANDINS + "/restormer_arch.py:Restormer", "--kwargs", '[8]'], "must be a JSON object"),
    (["--arch", STANDINS + "/restormer_arch.py:Restormer", "--kwargs", '{"wings": 2}'],
     "Restormer(**{\"wings\": 2}) failed: TypeError"),
    (["--arch", STANDINS + "/restormer_arch.py:Restormer", "--families", "ddsa"], "exclude each other"),
    (["--kwargs", "{}"], "--kwargs applies to --arch"),
])
def test_patch_bench_names_bad_arguments(tmp_path, args, message):
    with pytest.raises(SystemExit) as err:
        bench_main(["patch", "--device", "cpu", *args, "--out", str(tmp_path)])
    assert message in str(err.value)


def test_patch_bench_arch_import_failure_and_missing_source_tree(tmp_path, monkeypatch):
    from ddsa_bench.networks import patch as patch_bench

    bad = tmp_path / "needs_einops.py"
    bad.write_text("import einops_that_is_not_installed\n")
    with pytest.raises(SystemExit, match="importing .*needs_einops.py failed: ModuleNotFoundError"):
        bench_main(["patch", "--device", "cpu", "--arch", f"{bad}:Net", "--out", str(tmp_path)])
    monkeypatch.setattr(patch_bench, "STANDIN_DIR", tmp_path / "site-packages" / "tests" / "published_nets")
    with pytest.raises(ValueError, match="tests/published_nets, not found .* --arch PATH.py:CLASS"):
        patch_bench.run_patch_bench(torch.device("cpu"), net="tiny")


def test_depthwise_chain_bench_writes_every_method(tmp_path, one_thread):
    from ddsa_bench.ops import depthwise_chain as bench_depthwise_chain

    result = bench_depthwise_chain.main(["--shapes", "1,4,9,7", "2,3,5,6", "--rounds", "2", "--min-run-time", "0.01",
                                         "--out", str(tmp_path), *one_thread])
    data = json.loads((tmp_path / "depthwise_chain.json").read_text())
    assert [r["shape"] for r in data["rows"]] == [[1, 4, 9, 7], [2, 3, 5, 6]] == [r["shape"] for r in result["rows"]]
    methods = {"eager"} | ({"cpu"} if data["build_info"]["cpu"] == "available" else set())
    for row in data["rows"]:
        assert_bench_row(row, methods, "eager", ("fwd", "fwdbwd"))
    assert "| 1×3·4×9×7 | forward |" in (tmp_path / "depthwise_chain.md").read_text()
    with pytest.raises(SystemExit):
        bench_depthwise_chain.main(["--shapes", "1,4,9", "--out", str(tmp_path)])


def test_depthwise_chain_mlp_bench_writes_every_method(tmp_path, one_thread):
    from ddsa_bench.ops import depthwise_chain_mlp as bench_depthwise_chain_mlp

    result = bench_depthwise_chain_mlp.main(["--shapes", "1,4,9,7,3", "--rounds", "2", "--min-run-time", "0.01",
                                             "--tune-cpu-memory", "--out", str(tmp_path), *one_thread])
    data = json.loads((tmp_path / "depthwise_chain_mlp.json").read_text())
    assert [r["shape"] for r in data["rows"]] == [[1, 4, 9, 7, 3]] == [r["shape"] for r in result["rows"]]
    assert data["cpu_memory"] == {"malloc_retains_freed": result["cpu_memory"]["malloc_retains_freed"]}
    methods = {"eager"} | ({"chain", "cpu"} if data["build_info"]["cpu"] == "available" else set())
    row = data["rows"][0]
    assert_bench_row(row, methods, "eager")
    assert "fwdbwd" not in row
    md = (tmp_path / "depthwise_chain_mlp.md").read_text()
    assert "| 1×4×9×7, 3·3 hidden |" in md and "after `ddsa_kernels.tune_cpu_memory()`" in md
    with pytest.raises(SystemExit):
        bench_depthwise_chain_mlp.main(["--shapes", "1,4,9,7", "--out", str(tmp_path)])


def test_channel_norm_bench_writes_its_provenance_and_ratios(tmp_path, one_thread):
    from ddsa_bench.ops import channel_norm as bench_channel_norm

    bench_channel_norm.main(["--shape", "1,6,5,4", "--rounds", "2", "--min-run-time", "0.01", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "channel_norm.json").read_text())
    machine = data["machine"]
    assert machine["commit"]["sha"] and machine["timestamp_utc"] and list(machine["ddsa_backends"]) == ["channel_norm"]
    row = data["row"]
    assert row["shape"] == [1, 6, 5, 4] and row["subtract_mean"] is True
    methods = {"eager", "layer_norm", "reference"} | (
        {"cpu"} if machine["ddsa_backends"]["channel_norm"]["cpu"] == "available" else set())
    for mode in ("fwd", "fwdbwd"):
        assert set(row[mode]) == methods
        for name, rec in row[mode].items():
            assert len(rec["rounds_ms"]) == 2 and min(rec["rounds_ms"]) <= rec["median_ms"] <= max(rec["rounds_ms"])
            assert row[f"speedup_{mode}"][name] == pytest.approx(row[mode]["eager"]["median_ms"] / rec["median_ms"])
    md = (tmp_path / "channel_norm.md").read_text()
    assert md.startswith("## Channel LayerNorm on CPU (") and "| reference |" in md


def test_depthwise_conv_bench_writes_every_method(tmp_path, one_thread):
    from ddsa_bench.ops import depthwise_conv as bench_depthwise_conv

    result = bench_depthwise_conv.main(["--shapes", "1,4,9,7", "2,3,5,6", "--rounds", "2", "--min-run-time", "0.01",
                                        "--out", str(tmp_path), *one_thread])
    data = json.loads((tmp_path / "depthwise_conv.json").read_text())
    assert [r["shape"] for r in data["rows"]] == [[1, 4, 9, 7], [2, 3, 5, 6]] == [r["shape"] for r in result["rows"]]
    methods = {"conv2d", "conv2d_nhwc"} | ({"cpu"} if data["build_info"]["cpu"] == "available" else set())
    for row in data["rows"]:
        assert_bench_row(row, methods, "conv2d", ("fwd", "fwdbwd"))
    assert "| 1×4×9×7 | forward |" in (tmp_path / "depthwise_conv.md").read_text()
    with pytest.raises(SystemExit):
        bench_depthwise_conv.main(["--shapes", "1,4,9", "--out", str(tmp_path)])


# ----------------------------------------------------------------------------- the CLI and the device pages
RESULTS = common.REPO_ROOT / "ddsa_bench" / "results"
DEVICE_DIRS = sorted(p for p in RESULTS.iterdir() if p.is_dir() and p.name.startswith(("cpu-", "cuda-")))


def _committed_files(folder: Path) -> list[str]:
    """The paths, relative to ``folder``, of the files git tracks under it: what a fresh clone (CI) holds, without
    the git-ignored per-run markdown a local benchmark run leaves next to its JSON. Every file on disk where
    ``folder`` is not in a git checkout that tracks its README.md (an unpacked sdist, no git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=folder, capture_output=True, text=True,
                                check=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = []
    if "README.md" in listed:
        return sorted(name for name in listed if name)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_every_benchmark_is_a_subcommand(tmp_path, one_thread, capsys):
    from ddsa_bench.__main__ import DELEGATED, build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"op", "model", "all", "patch", "report", "gpu-run", "op-cpu", "channel-norm", "depthwise-conv",
            "depthwise-chain", "depthwise-chain-mlp", "gated-ffn", "mixed-scale-ffn", "cpu-memory"} <= commands
    for name in DELEGATED:  # each resolves to its module's command line
        with pytest.raises(SystemExit) as done:
            bench_main([name, "--help"])
        assert done.value.code == 0
        assert f"usage: ddsa-bench {name}" in capsys.readouterr().out
    assert bench_main(["depthwise-chain", "--shapes", "1,2,5,4", "--rounds", "1", "--min-run-time", "0.01",
                       "--out", str(tmp_path), *one_thread]) == 0
    assert json.loads((tmp_path / "depthwise_chain.json").read_text())["rows"][0]["shape"] == [1, 2, 5, 4]


def test_gpu_run_subcommand_passes_out_and_dry_run_to_the_script(tmp_path, monkeypatch):
    from ddsa_bench import __main__ as cli

    seen = {}

    def fake_run(cmd, env, check):
        seen.update(cmd=cmd, out=env.get("OUT"), dry=env.get("DRY_RUN"))
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.delenv("DRY_RUN", raising=False)
    assert bench_main(["gpu-run", "--out", str(tmp_path), "--dry-run"]) == 3  # the script's exit status
    assert seen == {"cmd": ["bash", str(cli.GPU_RUN)], "out": str(tmp_path), "dry": "1"}
    assert cli.GPU_RUN.is_file()
    with pytest.raises(SystemExit, match="--out"):
        bench_main(["gpu-run"])


def test_report_device_renders_every_json_with_its_provenance(tmp_path, one_thread):
    bench_main(["depthwise-conv", "--shapes", "1,3,6,5", "--rounds", "1", "--min-run-time", "0.01",
                "--out", str(tmp_path), *one_thread])
    machine = json.loads((tmp_path / "depthwise_conv.json").read_text())["machine"]
    (tmp_path / "mystery.json").write_text("{}")
    (tmp_path / "cpu_memory.json").write_text(json.dumps({"machine": machine, "old": "format"}))
    assert bench_main(["report", "--device", str(tmp_path)]) == 0
    page = (tmp_path / "README.md").read_text()
    section = page[page.index("## Depth-wise convolution"):page.index("## Other files")]
    assert "`ddsa-bench depthwise-conv` → `depthwise_conv.json`" in section
    assert machine["timestamp_utc"] in section and f"torch {machine['torch']}, triton {machine['triton']}" in section
    assert (machine["commit"]["sha"] or "unknown")[:12] in section
    assert "| 1×3×6×5 | forward |" in section
    # nothing is dropped silently: an unknown file and one this code cannot render are listed
    others = page[page.index("## Other files"):]
    assert "* `mystery.json`" in others and "* `cpu_memory.json`: not rendered (KeyError" in others
    with pytest.raises(SystemExit, match="not a folder"):
        bench_main(["report", "--device", str(tmp_path / "nowhere")])


@pytest.mark.parametrize("folder", DEVICE_DIRS, ids=lambda p: p.name)
def test_committed_device_page_is_rendered_from_its_json(folder, tmp_path):
    committed = _committed_files(folder)
    assert not [name for name in committed if "/" in name], "history folders: keep only the current run"
    assert not [name for name in committed if name.endswith(".md") and name != "README.md"]
    copy_of_committed = tmp_path / folder.name  # rendered from the committed files only, as in a fresh clone
    copy_of_committed.mkdir()
    for name in committed:
        shutil.copy2(folder / name, copy_of_committed / name)
    page = (folder / "README.md").read_text(encoding="utf-8")
    assert page == report.render_device(copy_of_committed), \
        f"run: ddsa-bench report --device ddsa_bench/results/{folder.name}"
    assert "## Other files" not in page  # every committed JSON is one benchmark's current run, rendered


def test_console_script_points_at_ddsa_bench():
    from importlib import metadata

    try:
        scripts = metadata.distribution("ddsa").entry_points
    except metadata.PackageNotFoundError:
        pytest.skip("the ddsa distribution is not installed")
    (bench,) = [e for e in scripts if e.name == "ddsa-bench"]
    assert bench.value == "ddsa_bench.__main__:main"


def test_a_run_into_the_results_tree_refreshes_its_device_page(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(common, "RESULTS_ROOT", tmp_path / "results")
    inside, outside = tmp_path / "results" / "cpu-x", tmp_path / "elsewhere"
    for folder in (inside, outside):
        bench_main(["depthwise-chain", "--shapes", "1,2,5,4", "--rounds", "1", "--min-run-time", "0.01",
                    "--out", str(folder), *one_thread])
    assert "## Depth-wise ReLU chain" in (inside / "README.md").read_text()
    assert not (outside / "README.md").exists()  # --out elsewhere writes only the benchmark's files
