"""Side-by-side panels of real rainy photos and their derained versions, for the model card.

    python docs/make_realrain_panels.py [--weights W ...] [--labels L ...] [-o panels.jpg]

One row per photo: the rainy input, then the output of each model (default: the shipped default
model). Photos are read from ``--folder`` (default ``data/RealRain``: real rain, no ground truth),
derained whole at their own size on CPU, and shown at a width of 360 px per column.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ddsa_model.pretrained import load_weights
from ddsa_model.pipeline.imageio import read_image
from ddsa_model.pipeline.inference import derain_array

DEFAULT_FOLDER = Path("data") / "RealRain"
# Dense streaks in forest and street scenes first, then two lighter ones.
NAMES = ("134.jpg", "113.jpg", "78.jpg", "50.jpg", "71.jpg", "120.jpg")
COLUMN_WIDTH = 360
LABEL_HEIGHT = 18


def _tile(rgb: np.ndarray) -> Image.Image:
    img = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    height = round(img.height * COLUMN_WIDTH / img.width)
    return img.resize((COLUMN_WIDTH, height), Image.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=str(DEFAULT_FOLDER), help="folder of real rainy photos")
    ap.add_argument("--weights", nargs="*", default=[None], help="model files (default: the shipped model)")
    ap.add_argument("--labels", nargs="*", default=None, help="one column title per model")
    ap.add_argument("--tile", type=int, default=0, help="inference tile size in px (0: whole image, as ddsa-eval)")
    ap.add_argument("-o", "--out", default="realrain_panels.jpg")
    args = ap.parse_args(argv)
    labels = args.labels or [("default model" if w is None else Path(w).stem) for w in args.weights]
    if len(labels) != len(args.weights):
        ap.error(f"{len(args.weights)} model(s) but {len(labels)} label(s)")
    models = [load_weights(w) for w in args.weights]
    rows = []
    for name in NAMES:
        rainy = read_image(Path(args.folder) / name).rgb
        outputs = [derain_array(m, rainy, tile=args.tile or None) for m in models]
        rows.append([_tile(rainy)] + [_tile(o) for o in outputs])
    columns = 1 + len(models)
    height = sum(LABEL_HEIGHT + row[0].height for row in rows)
    panel = Image.new("RGB", (COLUMN_WIDTH * columns, height), "white")
    draw = ImageDraw.Draw(panel)
    y = 0
    for name, row in zip(NAMES, rows):
        for col, (tile, title) in enumerate(zip(row, [f"{name}: rainy input", *labels])):
            draw.text((col * COLUMN_WIDTH + 4, y + 3), title, fill="black")
            panel.paste(tile, (col * COLUMN_WIDTH, y + LABEL_HEIGHT))
        y += LABEL_HEIGHT + row[0].height
    panel.save(args.out, quality=88)
    print(f"wrote {args.out} ({panel.width}×{panel.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
