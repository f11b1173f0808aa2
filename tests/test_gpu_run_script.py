"""``ddsa_bench/gpu/run.sh`` rehearsed on the CPU (``DRY_RUN=1``): every stage runs its code path,
writes its result files under $OUT, and the summary says which stages ran and which were skipped
and why. A GPU session is too short to find a broken script there."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddsa_bench.gpu import stages as gpu_stages
from ddsa_bench.gpu.stages import HUGE_TEST, TEST_PARTS

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("build", "gpu_tests", "sanitize", "op_bench", "train", "patch", "rest_tests")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu_run")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")}
    env.update(DRY_RUN="1", OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(ROOT / "ddsa_bench" / "gpu" / "run.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    return out, done


def test_script_exits_zero_and_logs(dry_run):
    out, done = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "gpu_run.log").read_text().count("stage ") >= len(STAGES)


def test_every_stage_recorded_with_its_files(dry_run):
    out, _ = dry_run
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == list(STAGES)
    for name, st in stages.items():
        assert st["files"], name
        for f in st["files"]:
            assert (out / f).is_file(), f"stage {name} did not write {f}"
        assert isinstance(st["cap_s"], int) and st["cap_s"] > 0, name


def test_summary_says_what_ran_and_what_was_skipped(dry_run):
    out, _ = dry_run
    summary = json.loads((out / "summary.json").read_text())
    status = {name: st["status"] for name, st in summary["stages"].items()}
    assert status == {"build": "skipped", "gpu_tests": "ok", "sanitize": "ok", "op_bench": "ok", "train": "ok",
                      "patch": "ok", "rest_tests": "skipped"}
    for name in ("build", "rest_tests", "sanitize"):
        assert "DRY_RUN" in summary["stages"][name]["reason"], name
    md = (out / "summary.md").read_text()
    for name in STAGES:
        assert f"| {name} |" in md
    assert "DRY_RUN: no CUDA build" in md


def test_stage_results_hold_measurements(dry_run):
    out, _ = dry_run
    env = json.loads((out / "env.json").read_text())
    for key in ("torch", "triton", "cuda", "driver", "device_name", "commit", "ddsa_backends", "device_slug"):
        assert key in env, key
    assert env["build"]["skipped"].startswith("DRY_RUN")
    gpu_tests = json.loads((out / "tests_gpu.json").read_text())
    assert gpu_tests["counts"]["skipped"] > 0 and gpu_tests["counts"]["failed"] == 0
    parts = [p["name"] for p in gpu_tests["parts"]]
    assert parts == [p[0] for p in TEST_PARTS] and parts[-1] == "gpu_huge"
    assert all(p["status"] == "ok" and p["counts"]["passed"] == 0 for p in gpu_tests["parts"])
    huge = gpu_tests["parts"][-1]
    assert huge["targets"] == [HUGE_TEST] and huge["counts"]["skipped"] == 2  # one per GPU backend
    sanitize = json.loads((out / "sanitize.json").read_text())
    assert sanitize["runs"] and all(r["status"] == "ok" for r in sanitize["runs"])
    kernels = json.loads((out / "kernels.json").read_text())
    assert kernels["cases"] and all(c["status"] == "ok" and c["fwd"]["total_ms"] > 0 for c in kernels["cases"])
    op = json.loads((out / "op.json").read_text())
    fused = [r for c in op["cases"] for impl, r in c["results"].items() if impl not in ("eager", "compile(eager)")]
    assert fused and all(r["median_ms"] > 0 for r in fused)
    train = json.loads((out / "train.json").read_text())
    assert {r["backend"] for r in train["throughput"]} == {"auto", "eager"}
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in train["throughput"])
    assert train["memory"] and all(r["status"] == "ok" for r in train["memory"])
    assert (out / "report.md").is_file()
    patch = json.loads((out / "patch.json").read_text())
    assert [(r["family"], r["dtype"], r["status"]) for r in patch["families"]] == [("ddsa", "float32", "ok")]
    assert all(t["speedup"] > 0 and t["max_abs_diff"] < 1e-4 for t in patch["families"][0]["tasks"].values())
    assert "Drop-in patch" in (out / "summary.md").read_text()


def test_a_part_past_its_cap_keeps_its_results_and_the_next_part_runs(tmp_path, monkeypatch):
    """The GPU test stage's runner: a part that hangs is interrupted at its cap, the tests it finished
    are still counted (pytest writes its junit on SIGINT), and the parts after it run."""
    (tmp_path / "test_hangs.py").write_text(
        "import time\n\ndef test_quick():\n    assert True\n\ndef test_hangs():\n    time.sleep(120)\n")
    (tmp_path / "test_after.py").write_text("def test_after():\n    assert True\n")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(gpu_stages, "TEST_PARTS", (
        ("hangs", (str(tmp_path / "test_hangs.py"),), "not gpu", 20),
        ("after", (str(tmp_path / "test_after.py"),), "not gpu", 60),
    ))
    assert gpu_stages.main(["tests", "--out", str(out)]) == 1
    result = json.loads((out / "tests_gpu.json").read_text())
    hangs, after = result["parts"]
    assert hangs["status"] == "timeout" and hangs["counts"]["passed"] == 1
    assert after["status"] == "ok" and after["counts"] == {"passed": 1, "failed": 0, "error": 0, "skipped": 0}
    assert (out / "tests_gpu.xml").read_text().count("<testcase") >= 2
