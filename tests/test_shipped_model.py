"""The shipped weights: the model card's figures belong to the file that is shipped, and the default
model removes rain it was trained for (light Rain100L streaks and heavy synthetic rain on photos it
never saw).

``ddsa_model/weights/eval/<stem>_summary.json`` records, per shipped file, its sha256 and the figures
``ddsa-eval`` measured with it; the card (``ddsa_model/weights/README.md``) quotes them. If the
weights change without a new evaluation, or the card without the summary, these tests fail.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ddsa_model import pretrained
from ddsa_model.pipeline.data import read_pixels
from ddsa_model.pipeline.inference import derain_array
from ddsa_model.pipeline.metrics import psnr_y
from ddsa_model.pipeline.synth import synthesize_rain
from ddsa_model.pipeline.synthetic_data import list_clean_images, name_seed, split_holdout

WEIGHTS = Path(pretrained.__file__).resolve().parent / "weights"
CARD = WEIGHTS / "README.md"


def _summary(filename: str) -> dict:
    path = WEIGHTS / "eval" / (Path(filename).stem + "_summary.json")
    if not path.is_file():
        pytest.skip(f"no evaluation summary for {filename}")
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
