"""What a wheel built from the tree installs: the project's own packages and the shipped models' run-time
files, nothing else (no tests, no evaluation files of models that are not shipped)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The project's own top-level packages; the benchmarks install under the project's name, never as a bare
# `benchmarks` that would clash with any other package of that name.
OWN_TOP_LEVEL = {"ddsa_kernels", "ddsa_model", "ddsa_bench"}
CARD = "ddsa_model/weights/README.md"


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    """File names in a wheel built, without the compiled extension, from a copy of the tree's sources."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "build", "*.egg-info")
    for pkg in ("ddsa_kernels", "ddsa_model", "ddsa_bench"):
        if (REPO / pkg).is_dir():
            shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, DDSA_NO_EXTENSION="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1",
               PIP_NO_CACHE_DIR="1")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                          "-w", str(out), str(src)], capture_output=True, text=True, env=env, timeout=300)
    if res.returncode != 0 and "No module named pip" in res.stderr:
        pytest.skip("pip is not installed in this environment")
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = out.glob("ddsa-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_wheel_installs_only_the_projects_own_packages(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops <= OWN_TOP_LEVEL and {"ddsa_kernels", "ddsa_model"} <= tops, tops
    assert not any(n.startswith("tests/") or "/tests/" in n for n in wheel_names)


def test_wheel_installs_the_benchmarks_as_ddsa_bench_with_its_console_script(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names}
    assert "ddsa_bench" in tops and "benchmarks" not in tops, tops
    for sub in ("ops", "networks", "gpu"):
        assert f"ddsa_bench/{sub}/__init__.py" in wheel_names, sub
    assert not [n for n in wheel_names if n.startswith("ddsa_bench/results/")], "benchmark results are shipped"


def test_wheel_ships_the_models_and_only_the_eval_files_their_card_names(wheel_names):
    weights = [n for n in wheel_names if n.startswith("ddsa_model/weights/")]
    assert CARD in weights
    assert {f"ddsa_model/weights/{f}" for f in ("ddsa_small_allrain.safetensors", "ddsa_small_rainl.safetensors")} <= set(weights)
    assert any(n.startswith("ddsa_model/configs/") and n.endswith(".yaml") for n in wheel_names)
    card = (REPO / CARD).read_text(encoding="utf-8")
    unnamed = [n for n in weights if n.startswith("ddsa_model/weights/eval/")
               and Path(n).name not in card and not n.endswith("_summary.json")]
    assert unnamed == [], f"shipped evaluation files the model card does not name: {unnamed}"
    assert not [n for n in weights if re.search(r"stage\d", n)], "earlier stages' files are shipped"
