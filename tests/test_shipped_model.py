"""The shipped weights: the model card's figures belong to the file that is shipped, and the default
model removes rain it was trained for (light Rain100L streaks and heavy synthetic rain on photos it
never saw).

``ddsa_model/weights/eval/<stem>_summary.json`` records, per shipped file, its sha256 and the figures
``ddsa-eval`` measured with it; the card (``ddsa_model/weights/README.md``) quotes them. If the
weights change without a new evaluation, or the card without the summary, these tests fail.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ddsa_model import pretrained
from ddsa_model.pipeline.data import read_pixels
from ddsa_model.pipeline.inference import derain_array
from ddsa_model.pipeline.imageio import read_image
from ddsa_model.pipeline.metrics import psnr_y, ssim_y, to_uint8
from ddsa_model.pipeline.synth import synthesize_rain
from ddsa_model.pipeline.synthetic_data import list_clean_images, name_seed, split_holdout

WEIGHTS = Path(pretrained.__file__).resolve().parent / "weights"
CARD = WEIGHTS / "README.md"


def _summary(filename: str) -> dict:
    path = WEIGHTS / "eval" / (Path(filename).stem + "_summary.json")
    assert path.is_file(), f"no evaluation summary for the shipped {filename}: run ddsa-eval and commit it"
    return json.loads(path.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(pretrained.SHIPPED_WEIGHTS))
def test_card_figures_belong_to_the_shipped_file(name):
    filename = pretrained.SHIPPED_WEIGHTS[name]
    summary = _summary(filename)
    assert summary["weights"] == filename
    assert _sha256(WEIGHTS / filename) == summary["sha256"], "weights changed since they were evaluated"
    card = CARD.read_text()
    assert summary["sha256"][:16] in card, "the model card names another file's checksum"
    for set_name, figures in summary["sets"].items():
        for key, value in figures.items():
            text = f"{value:.3f}" if key.startswith(("ssim", "niqe", "input_ssim", "input_niqe")) else f"{value:.2f}"
            assert text in card, f"{name}: {set_name} {key} = {text} is not in the model card"


# The committed per-image scores of each shipped file on Rain100L (ddsa-eval's CSV), and the images
# recomputed here from the weights (whole images, float32, no tiling: the card's protocol).
PER_IMAGE_CSV = {"ddsa_small_allrain.safetensors": ("allrain_rain100l.csv", ("1.png", "57.png", "100.png")),
                 "ddsa_small_rainl.safetensors": ("rain100l.csv", ("23.png", "88.png"))}


def _csv_rows(filename: str) -> dict[str, dict[str, str]]:
    csv_name, _ = PER_IMAGE_CSV[filename]
    with open(WEIGHTS / "eval" / csv_name, newline="") as fh:
        return {r["image"]: r for r in csv.DictReader(fh) if r["set"] == "Rain100L"}


@pytest.mark.parametrize("name", sorted(pretrained.SHIPPED_WEIGHTS))
def test_per_image_figures_are_recomputed_from_the_shipped_weights(name, shared_data):
    """A few whole Rain100L images run through the shipped file give the committed per-image
    PSNR-Y / SSIM-Y (to 0.01 dB / 1e-4), and the CSV's 100 rows average to the summary's figures:
    the chain weights → per-image CSV → summary → card cannot be broken by editing one link."""
    filename = pretrained.SHIPPED_WEIGHTS[name]
    if filename not in PER_IMAGE_CSV:
        pytest.fail(f"{filename}: name its per-image CSV and images in PER_IMAGE_CSV")
    rows = _csv_rows(filename)
    summary = _summary(filename)["sets"]["Rain100L"]
    mean_row = rows.pop("MEAN")
    assert float(mean_row["psnr"]) == pytest.approx(summary["psnr_y"], abs=1e-9)
    assert len(rows) == 100
    assert np.mean([float(r["psnr"]) for r in rows.values()]) == pytest.approx(summary["psnr_y"], abs=1e-9)
    assert np.mean([float(r["ssim"]) for r in rows.values()]) == pytest.approx(summary["ssim_y"], abs=1e-9)
    model = pretrained.load_weights(name)
    root = Path(shared_data) / "Rain100L"
    for image in PER_IMAGE_CSV[filename][1]:
        with torch.no_grad():
            out8 = to_uint8(derain_array(model, read_image(str(root / "input" / image)).rgb))
        target = to_uint8(read_image(str(root / "target" / image)).rgb)
        assert psnr_y(out8, target, 0) == pytest.approx(float(rows[image]["psnr"]), abs=0.01), image
        assert ssim_y(out8, target, 0) == pytest.approx(float(rows[image]["ssim"]), abs=1e-4), image


def _card_table() -> tuple[list[str], list[list[str]]]:
    """Header and rows of the card's first table ("| set | metric | ...")."""
    lines = CARD.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| set | metric |"))
    cells = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells.append([c.strip() for c in line.strip().strip("|").split("|")])
    return cells[0], [r for r in cells[2:]]


def _numbers(cell: str) -> list[str]:
    return re.findall(r"[+-]?\d+\.\d+", cell.replace("**", ""))


# summary (set, key) -> the card row's (set label prefix, metric prefix); input_* keys go to the
# "rainy input" column of the same row. The self-ensemble row holds "PSNR / SSIM" in one cell.
CARD_ROWS = {("Rain100L", "psnr_y"): ("Rain100L (", "PSNR-Y"), ("Rain100L", "ssim_y"): ("Rain100L", "SSIM-Y"),
             ("heavy_val", "psnr_y"): ("held-out heavy", "PSNR-Y"), ("heavy_val", "ssim_y"): ("held-out heavy", "SSIM-Y"),
             ("RealRain", "niqe"): ("RealRain", "NIQE"), ("RealRain", "brisque"): ("RealRain", "BRISQUE")}


def _row(rows: list[list[str]], set_prefix: str, metric_prefix: str) -> list[str]:
    found = [r for r in rows if r[0].startswith(set_prefix) and r[1].startswith(metric_prefix)
             and "self-ensemble" not in r[0]]
    assert len(found) == 1, f"the card has {len(found)} rows for {set_prefix} {metric_prefix}"
    return found[0]


@pytest.mark.parametrize("name", sorted(pretrained.SHIPPED_WEIGHTS))
def test_each_card_figure_sits_in_its_own_row_and_column(name):
    """Every figure of the file's summary is the first number of its (set, metric) row in the
    model's own column (inputs' figures in the "rainy input" column): swapped columns or rows fail."""
    filename = pretrained.SHIPPED_WEIGHTS[name]
    summary = _summary(filename)["sets"]
    header, rows = _card_table()
    column = [i for i, h in enumerate(header) if f"`{name}`" in h]
    assert len(column) == 1, f"the card's table has no single column for {name}: {header}"
    col, input_col = column[0], header.index("rainy input")
    checked = 0
    for set_name, figures in summary.items():
        for key, value in figures.items():
            digits = 3 if key.startswith(("ssim", "niqe", "input_ssim", "input_niqe")) else 2
            if set_name == "Rain100L_self_ensemble":
                (row,) = [r for r in rows if "self-ensemble" in r[0]]
                got = _numbers(row[col])[0 if key == "psnr_y" else 1]
            else:
                base_key = key.removeprefix("input_")
                assert (set_name, base_key) in CARD_ROWS, f"{set_name} {key}: no card row known for it"
                row = _row(rows, *CARD_ROWS[(set_name, base_key)])
                got = _numbers(row[input_col if key.startswith("input_") else col])[0]
            assert got == f"{value:.{digits}f}", f"{name}: {set_name} {key} = {value:.{digits}f}, card says {got}"
            checked += 1
    assert checked >= 6
    # the heavy-rain gain in parentheses is the model's PSNR-Y minus the inputs' (from the summary
    # that holds the inputs' score)
    inputs = next(_summary(f)["sets"]["heavy_val"]["input_psnr_y"] for f in pretrained.SHIPPED_WEIGHTS.values()
                  if "input_psnr_y" in _summary(f)["sets"].get("heavy_val", {}))
    gain = _numbers(_row(rows, "held-out heavy", "PSNR-Y")[col])[1]
    assert gain == f"+{summary['heavy_val']['psnr_y'] - inputs:.2f}"


def test_card_check_rejects_swapped_model_columns(tmp_path, monkeypatch):
    """The two models' columns swapped in the table (the header stays): the per-cell check fails."""
    lines = CARD.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| set | metric |"))
    i = header + 1
    while i < len(lines) and lines[i].startswith("|"):
        cells = lines[i].split("|")
        if len(cells) == 7:
            cells[4], cells[5] = cells[5], cells[4]
            lines[i] = "|".join(cells)
        i += 1
    swapped = tmp_path / "README.md"
    swapped.write_text("\n".join(lines))
    monkeypatch.setattr(f"{__name__}.CARD", swapped)
    with pytest.raises(AssertionError):
        test_each_card_figure_sits_in_its_own_row_and_column(pretrained.DEFAULT_NAME)


def _center_crop(a: np.ndarray, size: int) -> np.ndarray:
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return a[top:top + size, left:left + size]


def _gain(model, pairs) -> float:
    """Mean PSNR-Y gain (dB) of the model's output over the rainy input, on (rainy, clean) uint8 crops."""
    gains = []
    with torch.no_grad():
        for rainy, clean in pairs:
            out = derain_array(model, rainy.astype(np.float32) / 255.0)
            gains.append(psnr_y(out, clean) - psnr_y(rainy, clean))
    return float(np.mean(gains))


# Margins: half the gains measured on the full sets (model card), so that four or three crops of
# 192 px — whose gains vary from image to image — clear them with room, while a model that did
# nothing (gain 0) or the light-rain-only model on heavy rain does not.
RAIN100L_MARGIN_DB = 3.5
HEAVY_MARGIN_DB = 4.0


def test_default_model_removes_light_rain(shared_data):
    model = pretrained.load_default_model()
    root = Path(shared_data) / "Rain100L"
    pairs = [(_center_crop(read_pixels(root / "input" / f"{i}.png"), 192),
              _center_crop(read_pixels(root / "target" / f"{i}.png"), 192)) for i in (1, 23, 57, 88)]
    assert _gain(model, pairs) > RAIN100L_MARGIN_DB


def test_default_model_removes_heavy_rain_on_held_out_photos(shared_data):
    """Held-out Clean208 photos (never drawn in training) with `heavy` rain rendered as
    ``ddsa-synth --holdout 28 --preset heavy`` renders them."""
    _, held_out = split_holdout(list_clean_images(os.path.join(shared_data, "Clean208")), n_holdout=28, seed=0)
    model = pretrained.load_default_model()
    pairs = []
    for path in held_out[:3]:
        clean = read_pixels(path)
        rainy = synthesize_rain(clean, "heavy", np.random.default_rng(name_seed(path.stem)))
        pairs.append((_center_crop(rainy, 192), _center_crop(clean, 192)))
    assert _gain(model, pairs) > HEAVY_MARGIN_DB
