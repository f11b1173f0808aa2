"""The README's patch table is generated from the committed patch.json, never typed by hand."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ddsa_bench import report

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "ddsa_bench" / "results" / "cpu-amd-epyc"


def _ratios(patch: dict) -> dict[tuple[str, str], float]:
    """plain ÷ patched median of every float32 family and task, straight from the JSON."""
    return {(f["family"], t): rec["plain"]["median_ms"] / rec["patched"]["median_ms"]
            for f in patch["families"] if f["dtype"] == "float32" for t, rec in f["tasks"].items()}


def _block(text: str) -> str:
    return text.split(report.PATCH_TABLE_START, 1)[1].split(report.PATCH_TABLE_END, 1)[0].strip()


def test_readme_table_is_the_committed_json():
    patch = json.loads((DEVICE / "patch.json").read_text())
    block = _block((REPO / "README.md").read_text())
    assert block.startswith(report.patch_table(patch, report.published_ratios(DEVICE)))
    cells = re.findall(r"\| (\S+) \| ([\d.]+)× \| ([\d.]+)× \|", block)
    names = {"IDT-DDSA": "ddsa", "DRSformer": "drsformer", "Restormer": "restormer"}
    got = {(names[n], t): float(v) for n, a, b in cells for t, v in (("infer", a), ("train", b))}
    want = _ratios(patch)
    assert got.keys() == want.keys() and len(got) == 6
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=0.005), key


def test_readme_authors_file_columns_are_the_committed_published_runs():
    block = _block((REPO / "README.md").read_text())
    rows = re.findall(r"^\| (\S+) \| [\d.]+× \| [\d.]+× \| ([\d.]+)× \| ([\d.]+)× \|$", block, re.M)
    names = {"IDT-DDSA": "ddsa", "DRSformer": "drsformer", "Restormer": "restormer"}
    assert len(rows) == 3
    for name, infer, train in rows:
        run = json.loads((DEVICE / f"patch_published_{names[name]}.json").read_text())
        assert run["config"]["arch"].endswith(":DRSformer" if name == "DRSformer" else ":Restormer")
        assert run["config"]["kwargs"]["dim"] == 16  # the family run's ddsa-small size
        ratios = {task: r for (_, task), r in _ratios(run).items()}
        assert float(infer) == pytest.approx(ratios["infer"], abs=0.005)
        assert float(train) == pytest.approx(ratios["train"], abs=0.005)


def test_update_rewrites_only_the_marked_block(tmp_path):
    device = tmp_path / "dev"
    device.mkdir()
    patch = json.loads((DEVICE / "patch.json").read_text())
    patch["families"][0]["tasks"]["infer"]["patched"]["median_ms"] *= 2  # a different run
    (device / "patch.json").write_text(json.dumps(patch))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.PATCH_TABLE_START}\n| stale |\n{report.PATCH_TABLE_END}\noutro\n")
    report.update_patch_table(readme, device)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "stale" not in text
    first = patch["families"][0]["tasks"]["infer"]
    assert f"{first['plain']['median_ms'] / first['patched']['median_ms']:.2f}×" in _block(text)
    shutil.copy(DEVICE / "patch.json", device / "patch.json")
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- patch-table -->"):
        report.update_patch_table(readme, device)
