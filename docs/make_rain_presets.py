"""Regenerate docs/images/rain_presets.png: clean crops of three photos and the same crops with
``light``, ``heavy`` and ``mixed`` synthetic rain (ddsa_model.pipeline.synth presets).

    python docs/make_rain_presets.py [CLEAN_FOLDER] [-o docs/images/rain_presets.png]

CLEAN_FOLDER holds clean photos (default: ``data/Clean208``). Rain is drawn
on the full image with a fixed seed per photo and preset, then a 200×136 centre crop is shown.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ddsa_model.pipeline.data import read_pixels
from ddsa_model.pipeline.metrics import psnr_y
from ddsa_model.pipeline.synth import synthesize_rain

DEFAULT_CLEAN = Path("data") / "Clean208"
NAMES = ("100080.jpg", "105019.jpg", "118072.jpg")  # picked from the sorted list; any photos work
PRESETS = ("light", "heavy", "mixed")
CROP = (200, 136)  # (width, height) of each tile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clean", nargs="?", default=str(DEFAULT_CLEAN), help="folder of clean photos")
    ap.add_argument("-o", "--out", default=str(Path(__file__).resolve().parent / "images" / "rain_presets.png"))
    args = ap.parse_args(argv)
    folder = Path(args.clean)
    names = [n for n in NAMES if (folder / n).is_file()]
    if len(names) < len(NAMES):  # other folder: its first photos
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:len(NAMES)]
    cw, ch = CROP
    label_h = 18
    panel = Image.new("RGB", (cw * (1 + len(PRESETS)), (ch + label_h) * len(names)), "white")
    draw = ImageDraw.Draw(panel)
    for row, name in enumerate(names):
        clean = read_pixels(folder / name)
        if clean.dtype != np.uint8:
            clean = np.round(clean / 257.0).astype(np.uint8)
        h, w = clean.shape[:2]
        top, left = (h - ch) // 2, (w - cw) // 2
        tiles = [("clean", clean)]
        for k, preset in enumerate(PRESETS):
            tiles.append((preset, synthesize_rain(clean, preset, np.random.default_rng([row, k]))))
        y = row * (ch + label_h)
        for col, (label, img) in enumerate(tiles):
            if label != "clean":
                label = f"{label}  {psnr_y(img, clean):.1f} dB"
            panel.paste(Image.fromarray(img[top:top + ch, left:left + cw]), (col * cw, y + label_h))
            draw.text((col * cw + 4, y + 3), label, fill="black")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the figure small (~230 KB) with no visible banding
    panel.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, format="PNG", optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
