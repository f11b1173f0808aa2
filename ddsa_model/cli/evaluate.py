"""ddsa-eval: measure a deraining model the way the papers do.

    ddsa-eval --data data --sets Rain100L RealRain --iqa-dir data/iqa \
        [--weights W] [--json out.json] [--csv out.csv] [--save-images DIR] [--tile N]
    ddsa-eval --data data/Rain100L --input-only      # the rainy input itself: 26.90 / 0.838

--data is one set (a folder with input/ and target/, or input/ only, or a folder of images) or a
folder of such sets. Paired sets get PSNR and SSIM on the Y channel (ITU-R BT.601, MATLAB
rgb2ycbcr, 8-bit; SSIM with an 11×11 Gaussian window, σ = 1.5; see ddsa_model.pipeline.metrics); sets
without targets get NIQE and BRISQUE (lower is better) from the parameter files in --iqa-dir.
Outputs are quantised to 8 bit before scoring, exactly as saved PNGs would be.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from ddsa_model.cli._common import (
    CLIError, add_model_args, error, load_model_for_cli, resolve_device, run_cli,
)
from ddsa_model.atomic import atomic_write_bytes
from ddsa_model.pipeline.evaluate import (
    BRISQUE_MODEL, BRISQUE_RANGE, NIQE_FILE, EvalError, NoReferenceScorer, build_report, csv_text, discover_sets,
    evaluate_set, format_table, json_safe,
)

__all__ = ["main", "build_parser"]


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
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the outputs for the 4 flips of each image (none, left-right, up-down, both; 4x the time)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of each set")
    p.add_argument("--save-images", metavar="DIR", default=None, help="write the outputs to DIR/<set>/<name>.png")
    p.add_argument("--json", metavar="FILE", default=None, help="write per-image and mean scores as JSON")
    p.add_argument("--csv", metavar="FILE", default=None, help="write per-image scores and set means as CSV")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _noref(args: argparse.Namespace) -> NoReferenceScorer:
    """The NIQE / BRISQUE scorer from --iqa-dir / --niqe-params / --brisque-*; CLIError when NIQE is unusable."""
    d = args.iqa_dir
    niqe_path = args.niqe_params or (os.path.join(d, NIQE_FILE) if d else None)
    if niqe_path is None:
        raise CLIError("sets without target/ are scored with NIQE and BRISQUE: pass --iqa-dir DIR "
                       f"(holding {NIQE_FILE}, {BRISQUE_MODEL}, {BRISQUE_RANGE}) or --niqe-params")
    try:
        scorer = NoReferenceScorer(niqe_path,
                                   args.brisque_model or (os.path.join(d, BRISQUE_MODEL) if d else None),
                                   args.brisque_range or (os.path.join(d, BRISQUE_RANGE) if d else None))
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    if scorer.brisque_problem:
        error(scorer.brisque_problem)
    return scorer


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be >= 1")
    if args.input_only and args.weights:
        raise CLIError("--input-only scores the rainy inputs; it takes no --weights")
    if args.input_only and args.self_ensemble:
        raise CLIError("--input-only scores the rainy inputs; --self-ensemble needs a model")
    if args.tile and args.overlap >= args.tile:
        raise CLIError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    for out in (args.json, args.csv):
        if out and os.path.isdir(out):
            raise CLIError(f"{out}: is a folder, expected a file name")
    try:
        sets = discover_sets(args.data, args.sets)
    except EvalError as e:
        raise CLIError(str(e)) from None
    noref = _noref(args) if any(not s.paired for s in sets) else None
    device, dtype = resolve_device(args.device, args.half)
    model = None if args.input_only else load_model_for_cli(args.weights, args.preset, args.attention_backend, device, dtype)
    weights = "input-only" if args.input_only else (args.weights or "default (shipped ddsa-small)")

    results = []
    for s in sets:
        summary = evaluate_set(s, model, device=device, dtype=dtype, tile=args.tile, overlap=args.overlap,
                               crop_border=args.crop_border, limit=args.limit, save_dir=args.save_images,
                               noref=noref, progress=not args.quiet, self_ensemble=args.self_ensemble)
        results.append(summary)
        print(format_table(summary), flush=True)
    report = build_report(results, weights, crop_border=args.crop_border, tile=args.tile,
                          self_ensemble=args.self_ensemble)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(json_safe(report), indent=2) + "\n").encode())
    if args.csv:
        atomic_write_bytes(args.csv, csv_text(results).encode())
    failed = sum(len(r["failed"]) for r in results)
    if failed:
        error(f"{failed} image(s) could not be scored (listed above)")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
