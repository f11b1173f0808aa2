"""Every figure the README quotes comes from a committed file: the per-op speed-ups from the results page
section each bullet links to, the default model's table from its committed evaluation summary, the preset
sizes from the models themselves."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_docs_links import heading_anchors

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")

# 2.00×, 2.00–3.33×; not the 3×3 of a kernel size or the 1×256² of a shape
_RATIO = re.compile(r"(?<![\d.×])(\d+\.\d+)(?:–(\d+\.\d+))?×(?![\d(])")
_RESULTS_LINK = re.compile(r"\]\(([^)\s]+\.md)#([\w-]+)\)")


def section(markdown: str, anchor: str) -> str:
    """The text of the level-2 section of ``markdown`` whose heading has GitHub anchor ``anchor``."""
    parts = re.split(r"^(?=## )", markdown, flags=re.M)
    for part in parts:
        first = part.splitlines()[0] if part else ""
        if first.startswith("## ") and heading_anchors(first) == {anchor}:
            return part
    raise AssertionError(f"no section #{anchor}")


def unbacked_ratios(bullet: str, page_dir: Path) -> list[str]:
    """The speed-ups quoted in ``bullet`` that do not appear (as ×N or N×) in the results section it links to."""
    links = _RESULTS_LINK.findall(bullet)
    assert links, f"bullet without a results link: {bullet[:80]}"
    path, anchor = links[0]
    body = section((page_dir / path).read_text(encoding="utf-8"), anchor)
    quoted = [n for pair in _RATIO.findall(bullet) for n in pair if n]
    assert quoted, f"bullet quotes no speed-up: {bullet[:80]}"
    return [n for n in quoted if not re.search(rf"(×{re.escape(n)}(?![\d])|(?<![\d.]){re.escape(n)}×)", body)]


def amd_epyc_bullets(readme: str) -> list[str]:
    cpu = readme.split("### CPU: AMD EPYC", 1)[1].split("\n### ", 1)[0]
    return [b for b in re.split(r"\n\* ", cpu)[1:]]


def test_there_are_per_op_bullets_to_check():
    assert len(amd_epyc_bullets(README)) >= 8


@pytest.mark.parametrize("bullet", amd_epyc_bullets(README), ids=lambda b: re.match(r"`?([\w()]+)", b).group(1))
def test_every_per_op_speedup_is_in_the_results_section_it_links(bullet):
    assert unbacked_ratios(bullet, REPO) == []


def test_the_figure_check_rejects_a_figure_not_in_the_linked_section(tmp_path):
    (tmp_path / "r.md").write_text("## Op A\n\n| x | ×2.50 |\n\n## Op B\n\n| y | 3.10× |\n")
    good = "* `a`: 2.50× ([results](r.md#op-a))"
    assert unbacked_ratios(good, tmp_path) == []
    assert unbacked_ratios("* `a`: 2.50–3.10× ([results](r.md#op-a))", tmp_path) == ["3.10"]  # wrong section
    assert unbacked_ratios("* `a`: 2.5× ([results](r.md#op-a))", tmp_path) == ["2.5"]  # a rounded figure
    assert unbacked_ratios("* `a`: 2.51× ([results](r.md#op-a))", tmp_path) == ["2.51"]


def test_default_model_table_matches_its_committed_summary():
    link = re.search(r"\[`(ddsa_small_allrain_summary\.json)`\]\(([^)]+)\)", README)
    assert link, "the default model section links its summary"
    sets = json.loads((REPO / link.group(2)).read_text())["sets"]
    rows = {line.split("|")[1].strip(): line for line in README.splitlines()
            if line.startswith("| ") and ("Rain100L" in line or "heavy" in line or "RealRain" in line)}
    rain100l, heavy, real = rows["Rain100L (PSNR-Y / SSIM-Y)"], rows["held-out heavy synthetic rain"], \
        rows["RealRain (NIQE ↓ / BRISQUE ↓)"]
    expected = {
        rain100l: [f"{sets['Rain100L']['psnr_y']:.2f} dB / {sets['Rain100L']['ssim_y']:.3f}",
                   f"{sets['Rain100L_self_ensemble']['psnr_y']:.2f} / {sets['Rain100L_self_ensemble']['ssim_y']:.3f}"],
        heavy: [f"{sets['heavy_val']['input_psnr_y']:.2f} dB / {sets['heavy_val']['input_ssim_y']:.3f}",
                f"{sets['heavy_val']['psnr_y']:.2f} dB / {sets['heavy_val']['ssim_y']:.3f}"],
        real: [f"{sets['RealRain']['input_niqe']:.3f} / {sets['RealRain']['input_brisque']:.2f}",
               f"{sets['RealRain']['niqe']:.3f} / {sets['RealRain']['brisque']:.2f}"],
    }
    for row, figures in expected.items():
        for figure in figures:
            assert figure in row, (figure, row)


@pytest.mark.parametrize("preset", ["ddsa", "ddsa-official", "ddsa-small"])
def test_preset_sizes_in_the_readme_are_the_models(preset):
    from ddsa_model import build_model

    row = next(line for line in README.splitlines() if line.startswith(f"| `{preset}` |"))
    quoted = int(row.split("|")[2].strip().replace(",", ""))
    assert quoted == sum(p.numel() for p in build_model(preset).parameters())
