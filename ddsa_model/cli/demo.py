"""ddsa-demo: derain sample images and write side-by-side PNGs (rainy | derained | clean).

    ddsa-demo                       # scikit-image's sample photos with synthetic rain, default model
    ddsa-demo --images my_clean/ --out demo/ --weights model.safetensors
    ddsa-demo --images rainy_photos/ --rainy        # real rain: rainy | derained, no clean panel

Without --images the clean photos shipped with scikit-image (astronaut, coffee, chelsea) are used
(``pip install scikit-image``). Synthetic rain comes from ``ddsa_model.pipeline.synth.add_rain`` with a fixed
seed, so the demo is reproducible. Captions give PSNR-Y (dB) against the clean image.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ddsa_model.cli._common import (
    CLIError, add_model_args, error, load_model_for_cli, resolve_device, run_cli,
)

__all__ = ["main", "compose", "SAMPLES"]

SAMPLES = ("astronaut", "coffee", "chelsea")
CAPTION_H = 22
GAP = 6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddsa-demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", default="ddsa_demo", help="output folder (default: ./ddsa_demo)")
    p.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                   help="your own images or folders instead of scikit-image's samples")
    p.add_argument("--rainy", action="store_true", help="--images are already rainy: no synthetic rain, no PSNR")
    add_model_args(p)
    p.add_argument("--size", type=int, default=256, help="longest side of each panel in px (default 256)")
    p.add_argument("--density", type=float, default=0.003,
                   help="synthetic rain density (default 0.003: about Rain100L's 25-27 dB rainy PSNR)")
    p.add_argument("--brightness", type=float, default=0.5, help="streak brightness in [0, 1] (default 0.5)")
    p.add_argument("--length", type=float, default=18.0, help="streak length in px (default 18)")
    p.add_argument("--angle", type=float, default=-12.0, help="streak angle from vertical in degrees")
    p.add_argument("--seed", type=int, default=0, help="rain seed (default 0)")
    p.add_argument("--tile", type=int, default=512, help="tile size for large images (default 512)")
    return p


def _sample_images() -> List[Tuple[str, np.ndarray]]:
    try:
        from skimage import data
    except ImportError:
        raise CLIError("the built-in samples come from scikit-image: pip install scikit-image, "
                       "or pass --images with your own photos") from None
    return [(name, np.asarray(getattr(data, name)())[..., :3]) for name in SAMPLES]


def _user_images(items: Sequence[str]) -> List[Tuple[str, np.ndarray]]:
    from ddsa_model.pipeline.imageio import ImageReadError, expand_inputs, read_image
    from ddsa_model.pipeline.metrics import to_uint8

    files, problems = expand_inputs(items)
    for p in problems:
        error(p)
    out = []
    for f in files:
        try:
            img = read_image(f)
        except ImageReadError as e:
            error(str(e))
            continue
        out.append((os.path.splitext(os.path.basename(f))[0], to_uint8(img.rgb)))
    if not out:
        raise CLIError("no readable images among --images", status=1)
    return out


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """Downscale (Lanczos) so the longest side is at most ``size``; uint8 (H, W, 3)."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale >= 1:
        return img
    im = Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return np.asarray(im)


def compose(panels: Sequence[Tuple[np.ndarray, str]]) -> np.ndarray:
    """Side-by-side uint8 image of equally sized panels, each under a caption bar."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = panels[0][0].shape[:2]
    canvas = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * GAP, h + CAPTION_H), "white")
    draw = ImageDraw.Draw(canvas)
    longest = max((c for _, c in panels), key=len)
    font = None
    for size in range(14, 5, -1):  # the largest font whose longest caption fits in a panel
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: one bitmap font without sizes
            font = ImageFont.load_default()
            break
        if draw.textlength(longest, font=font) <= w - 6:
            break
    for i, (img, caption) in enumerate(panels):
        x = i * (w + GAP)
        canvas.paste(Image.fromarray(img), (x, CAPTION_H))
        draw.text((x + 4, 4), caption, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def run(args: argparse.Namespace) -> int:
    from ddsa_model.pipeline.imageio import write_png
    from ddsa_model.pipeline.inference import derain_array
    from ddsa_model.pipeline.metrics import psnr_y, to_uint8

    if args.size < 8:
        raise CLIError("--size must be at least 8")
    if args.rainy and not args.images:
        raise CLIError("--rainy needs --images")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CLIError(f"--out {args.out}: exists and is not a folder")
    images = _user_images(args.images) if args.images else _sample_images()
    device, dtype = resolve_device(args.device, args.half)
    model = load_model_for_cli(args.weights, args.preset, args.attention_backend, device, dtype)
    from ddsa_model.pipeline.synth import add_rain

    os.makedirs(args.out, exist_ok=True)
    rows = []
    print(f"{'image':<16} {'rainy PSNR-Y':>13} {'derained PSNR-Y':>16}")
    for i, (name, img) in enumerate(images):
        clean = _fit(img, args.size)
        if args.rainy:
            rainy = clean
        else:
            rainy = add_rain(clean, density=args.density, length=args.length, angle=args.angle,
                             brightness=args.brightness, rng=np.random.default_rng([args.seed, i]))
        out = to_uint8(derain_array(model, rainy / 255.0, device=device, tile=args.tile or None, dtype=dtype))
        if args.rainy:
            panels = [(rainy, "rainy"), (out, "derained")]
            print(f"{name:<16} {'-':>13} {'-':>16}")
        else:
            p_in, p_out = psnr_y(rainy, clean), psnr_y(out, clean)
            panels = [(rainy, f"rainy  {p_in:.2f} dB"), (out, f"derained  {p_out:.2f} dB"), (clean, "clean")]
            print(f"{name:<16} {p_in:>10.2f} dB {p_out:>13.2f} dB")
        side = compose(panels)
        path = os.path.join(args.out, f"demo_{name}.png")
        write_png(path, side / 255.0)
        rows.append(side)
    width = max(r.shape[1] for r in rows)
    grid = np.full((sum(r.shape[0] for r in rows) + GAP * (len(rows) - 1), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        grid[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0] + GAP
    write_png(os.path.join(args.out, "demo.png"), grid / 255.0)
    print(f"wrote {len(rows)} side-by-side image(s) and demo.png to {args.out}"
          + ("" if args.rainy else "  (panels: rainy | derained | clean; PSNR-Y against clean)"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
