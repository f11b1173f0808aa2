"""ddsa-eval: measure a deraining model the way the papers do.

    ddsa-eval --data ../shared/data --sets Rain100L RealRain --iqa-dir ../shared/data/iqa \
        [--weights W] [--json out.json] [--csv out.csv] [--save-images DIR] [--tile N]
    ddsa-eval --data ../shared/data/Rain100L --input-only      # the rainy input itself: 26.90 / 0.838

--data is one set (a folder with input/ and target/, or input/ only, or a folder of images) or a
folder of such sets. Paired sets get PSNR and SSIM on the Y channel (ITU-R BT.601, MATLAB
rgb2ycbcr, 8-bit; SSIM with an 11×11 Gaussian window, σ = 1.5; see ddsa_model.pipeline.metrics); sets
without targets get NIQE and BRISQUE (lower is better) from the parameter files in --iqa-dir.
Outputs are quantised to 8 bit before scoring, exactly as saved PNGs would be.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ddsa_model.cli._common import (
    CLIError, add_model_args, error, load_model_for_cli, resolve_device, run_cli,
)

__all__ = ["main", "discover_sets", "EvalSet"]

NIQE_FILE = "niqe_pris_params.npz"
BRISQUE_MODEL = "brisque_model_live.yml"
BRISQUE_RANGE = "brisque_range_live.yml"


@dataclass
class EvalSet:
    """One evaluation set: ``items`` are (input path, target path or None)."""

    name: str
    root: str
    items: List[tuple] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return bool(self.items) and self.items[0][1] is not None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddsa-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", required=True, metavar="ROOT", help="a set folder or a folder of sets")
    p.add_argument("--sets", nargs="+", default=None, help="names of the sets under ROOT to evaluate (default: all)")
    add_model_args(p)
    p.add_argument("--input-only", action="store_true",
                   help="score the rainy inputs themselves (no model): the baseline of every table")
    p.add_argument("--iqa-dir", metavar="DIR", default=None,
                   help=f"folder with {NIQE_FILE}, {BRISQUE_MODEL} and {BRISQUE_RANGE} (for sets without targets)")
    p.add_argument("--niqe-params", default=None, help=f"NIQE pristine model (.npz); default DIR/{NIQE_FILE}")
    p.add_argument("--brisque-model", default=None, help=f"BRISQUE SVR model (OpenCV YAML); default DIR/{BRISQUE_MODEL}")
    p.add_argument("--brisque-range", default=None, help=f"BRISQUE feature ranges; default DIR/{BRISQUE_RANGE}")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped at each border before PSNR/SSIM")
    p.add_argument("--tile", type=int, default=0,
                   help="tile size in px (0: whole images, the paper's protocol; default 0)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in px (default 32)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of each set")
    p.add_argument("--save-images", metavar="DIR", default=None, help="write the outputs to DIR/<set>/<name>.png")
    p.add_argument("--json", metavar="FILE", default=None, help="write per-image and mean scores as JSON")
    p.add_argument("--csv", metavar="FILE", default=None, help="write per-image scores and set means as CSV")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# ------------------------------------------------------------------------------- set discovery

def _images_in(folder: str) -> List[str]:
    from ddsa_model.pipeline.imageio import IMAGE_EXTENSIONS

    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
                  and os.path.isfile(os.path.join(folder, f)))


def _as_set(folder: str) -> Optional[EvalSet]:
    """The set in ``folder`` or None when it is not one (raises CLIError on a broken paired set)."""
    from ddsa_model.pipeline.data import DatasetError, find_pairs

    name = os.path.basename(os.path.normpath(folder))
    inp, tgt = os.path.join(folder, "input"), os.path.join(folder, "target")
    if os.path.isdir(inp) and os.path.isdir(tgt):
        try:
            pairs = find_pairs(folder, check_readable=False)
        except DatasetError as e:
            raise CLIError(str(e)) from None
        return EvalSet(name, folder, [(str(p.input), str(p.target)) for p in pairs])
    if os.path.isdir(inp):
        images = _images_in(inp)
        return EvalSet(name, folder, [(f, None) for f in images]) if images else None
    images = _images_in(folder)
    return EvalSet(name, folder, [(f, None) for f in images]) if images else None


def discover_sets(root: str, names: Optional[Sequence[str]] = None) -> List[EvalSet]:
    """Sets under ``root`` (itself a set, or a folder of sets), optionally restricted to ``names``."""
    if not os.path.isdir(root):
        raise CLIError(f"--data {root}: no such folder")
    own = os.path.isdir(os.path.join(root, "input")) or bool(_images_in(root))
    if own:
        s = _as_set(root)
        if s is None:
            raise CLIError(f"--data {root}: no images found")
        if names and s.name not in names:
            raise CLIError(f"--data {root} is the set {s.name!r}, not {', '.join(names)}")
        return [s]
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if names:
        missing = [n for n in names if n not in subdirs]
        if missing:
            raise CLIError(f"--sets: {', '.join(missing)} not found under {root} "
                           f"(available: {', '.join(subdirs) or 'none'})")
        subdirs = list(names)
    sets = []
    for d in subdirs:
        s = _as_set(os.path.join(root, d))
        if s is not None:
            sets.append(s)
        elif names:
            raise CLIError(f"{os.path.join(root, d)}: holds neither input/ + target/ nor images")
    if not sets:
        raise CLIError(f"--data {root}: no evaluation sets found (expected <set>/input + <set>/target, "
                       "or folders of images)")
    return sets


# ------------------------------------------------------------------------------------- scoring

class _NoRef:
    """NIQE / BRISQUE scorers built once from the parameter files."""

    def __init__(self, args: argparse.Namespace):
        d = args.iqa_dir
        self.niqe_path = args.niqe_params or (os.path.join(d, NIQE_FILE) if d else None)
        self.brisque_paths = (args.brisque_model or (os.path.join(d, BRISQUE_MODEL) if d else None),
                              args.brisque_range or (os.path.join(d, BRISQUE_RANGE) if d else None))
        if self.niqe_path is None:
            raise CLIError("sets without target/ are scored with NIQE and BRISQUE: pass --iqa-dir DIR "
                           f"(holding {NIQE_FILE}, {BRISQUE_MODEL}, {BRISQUE_RANGE}) or --niqe-params")
        from ddsa_model.pipeline import iqa

        try:
            self.niqe = iqa.NIQE(self.niqe_path)
        except (FileNotFoundError, ValueError) as e:
            raise CLIError(str(e)) from None
        self.brisque_ok = all(p and os.path.isfile(p) for p in self.brisque_paths)
        if not self.brisque_ok:
            error(f"BRISQUE model files not found ({', '.join(str(p) for p in self.brisque_paths)}): BRISQUE skipped")
        else:
            try:
                iqa._cv2_quality()
            except RuntimeError as e:
                error(f"{e}; BRISQUE skipped")
                self.brisque_ok = False

    def __call__(self, img) -> Dict[str, Optional[float]]:
        from ddsa_model.pipeline import iqa

        out: Dict[str, Optional[float]] = {"niqe": None, "brisque": None}
        try:
            out["niqe"] = self.niqe(img)
        except ValueError as e:
            out["niqe_error"] = str(e)
        if self.brisque_ok:
            out["brisque"] = iqa.brisque(img, *self.brisque_paths)
        return out


def _mean(values: List[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def evaluate_set(s: EvalSet, model, args, device, dtype, noref: Optional[_NoRef]) -> dict:
    """Per-image and mean scores of one set."""
    from tqdm import tqdm

    from ddsa_model.pipeline.imageio import ImageReadError, read_image, write_png
    from ddsa_model.pipeline.inference import derain_array
    from ddsa_model.pipeline.metrics import psnr_y, ssim_y, to_uint8

    items = s.items[: args.limit] if args.limit else s.items
    rows, failures = [], []
    out_dir = os.path.join(args.save_images, s.name) if args.save_images else None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    for inp, tgt in tqdm(items, desc=s.name, unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True):
        name = os.path.basename(inp)
        try:
            img = read_image(inp)
            out = img.rgb if model is None else derain_array(
                model, img.rgb, device=device, tile=args.tile or None, overlap=args.overlap, dtype=dtype)
            out8 = to_uint8(out)
            row: Dict[str, object] = {"image": name}
            if tgt is not None:
                target = to_uint8(read_image(tgt).rgb)
                if target.shape != out8.shape:
                    raise ValueError(f"{tgt}: size {target.shape[1]}x{target.shape[0]} differs from the "
                                     f"input's {out8.shape[1]}x{out8.shape[0]}")
                row["psnr"] = psnr_y(out8, target, args.crop_border)
                row["ssim"] = ssim_y(out8, target, args.crop_border)
            else:
                row.update(noref(out8))
            if out_dir:
                write_png(os.path.join(out_dir, os.path.splitext(name)[0] + ".png"), out8 / 255.0,
                          alpha=img.alpha, gray=img.gray)
            rows.append(row)
        except (ImageReadError, ValueError) as e:
            failures.append(str(e))
            tqdm.write(f"error: {e}", file=sys.stderr)
    keys = ("psnr", "ssim") if s.paired else ("niqe", "brisque")
    summary = {"set": s.name, "root": os.path.abspath(s.root), "paired": s.paired, "n": len(rows),
               "failed": failures, "seconds": round(time.perf_counter() - t0, 3)}
    for k in keys:
        summary[k] = _mean([r.get(k) for r in rows])
    summary["images"] = rows
    return summary


# -------------------------------------------------------------------------------------- output

def _fmt(v: Optional[float], digits: int) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def format_table(summary: dict) -> str:
    if summary["paired"]:
        head = f"{'set':<16} {'images':>6} {'PSNR-Y (dB)':>12} {'SSIM-Y':>8}"
        line = (f"{summary['set']:<16} {summary['n']:>6} {_fmt(summary['psnr'], 2):>12} "
                f"{_fmt(summary['ssim'], 4):>8}")
    else:
        head = f"{'set':<16} {'images':>6} {'NIQE':>8} {'BRISQUE':>8}   (lower is better)"
        line = f"{summary['set']:<16} {summary['n']:>6} {_fmt(summary['niqe'], 3):>8} {_fmt(summary['brisque'], 3):>8}"
    return head + "\n" + line


def _csv_text(results: List[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["set", "image", "psnr", "ssim", "niqe", "brisque"])
    for s in results:
        for r in s["images"]:
            w.writerow([s["set"], r["image"]] + [r.get(k, "") if r.get(k) is not None else ""
                                                 for k in ("psnr", "ssim", "niqe", "brisque")])
        w.writerow([s["set"], "MEAN"] + [s.get(k, "") if s.get(k) is not None else ""
                                         for k in ("psnr", "ssim", "niqe", "brisque")])
    return buf.getvalue()


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    from ddsa_model.pipeline.imageio import atomic_write_bytes

    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be >= 1")
    if args.input_only and args.weights:
        raise CLIError("--input-only scores the rainy inputs; it takes no --weights")
    if args.tile and args.overlap >= args.tile:
        raise CLIError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    for out in (args.json, args.csv):
        if out and os.path.isdir(out):
            raise CLIError(f"{out}: is a folder, expected a file name")
    sets = discover_sets(args.data, args.sets)
    noref = _NoRef(args) if any(not s.paired for s in sets) else None
    device, dtype = resolve_device(args.device, args.half)
    model = None if args.input_only else load_model_for_cli(args.weights, args.preset, args.attention_backend, device)
    weights = "input-only" if args.input_only else (args.weights or "default (shipped ddsa-small)")

    results = []
    for s in sets:
        summary = evaluate_set(s, model, args, device, dtype, noref)
        results.append(summary)
        print(format_table(summary), flush=True)
    report = {
        "weights": weights,
        "protocol": {"psnr_ssim": "Y of BT.601 YCbCr (MATLAB rgb2ycbcr, 8-bit, Y rounded), "
                                  "SSIM 11x11 Gaussian sigma 1.5, valid region",
                     "crop_border": args.crop_border, "tile": args.tile or None,
                     "niqe": "MATLAB release algorithm, lower is better",
                     "brisque": "OpenCV quality.QualityBRISQUE, lower is better"},
        "sets": {r["set"]: r for r in results},
    }
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(_json_safe(report), indent=2) + "\n").encode())
    if args.csv:
        atomic_write_bytes(args.csv, _csv_text(results).encode())
    failed = sum(len(r["failed"]) for r in results)
    if failed:
        error(f"{failed} image(s) could not be scored (listed above)")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
