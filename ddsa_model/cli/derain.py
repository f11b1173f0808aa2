"""ddsa-derain: remove rain from photos.

    ddsa-derain photo.jpg holiday/ "shots/*.png" -o derained/ [--weights W] [--tile 512 --overlap 32]

Each input becomes ``OUTDIR/<name>.png`` with the input's size (after EXIF rotation), mode (gray,
RGB, alpha kept) and bit depth (16-bit PNGs stay 16-bit). Images larger than --tile are processed
tile by tile (only one tile on the device at a time). A file that cannot be read is reported by
name and skipped; the exit status is then 1. Inputs are never overwritten; outputs are written
atomically (temporary file + rename).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ddsa_model.cli._common import (
    CLIError, add_model_args, error, load_model_for_cli, resolve_device, run_cli,
)

__all__ = ["main", "plan_outputs"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddsa-derain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the derained PNGs")
    add_model_args(p)
    p.add_argument("--tile", type=int, default=512,
                   help="tile size in px for images larger than it (0: never tile; default 512)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in px, blended linearly (default 32)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the outputs for the 4 flips of each image or tile (none, left-right, up-down, "
                        "both): 4x the time")
    p.add_argument("--recursive", action="store_true", help="also take images from sub-folders of folder inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def plan_outputs(files: Sequence[str], outdir: str) -> Tuple[Dict[str, str], List[str]]:
    """Map each input to ``outdir/<stem>.png`` -> (input -> output, problems).

    Stems shared by several inputs get ``_<ext>`` (then ``_2``, ``_3`` ...) appended. An output
    path that is one of the inputs is refused (reported as a problem, the input is skipped).
    """
    inputs_real = {os.path.realpath(f) for f in files}
    used: set = set()
    plan: Dict[str, str] = {}
    problems: List[str] = []
    stems: Dict[str, int] = {}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        stems[stem] = stems.get(stem, 0) + 1
    for f in files:
        stem, ext = os.path.splitext(os.path.basename(f))
        name = stem if stems[stem] == 1 else f"{stem}_{ext.lstrip('.').lower() or 'noext'}"
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = f"{name}_{k}"
        used.add(candidate)
        out = os.path.join(outdir, candidate + ".png")
        if os.path.realpath(out) in inputs_real or (os.path.exists(out) and _same_file(out, f)):
            problems.append(f"{f}: refusing to overwrite an input with its output {out} (choose another -o)")
            continue
        plan[f] = out
    return plan, problems


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def derain_file(model, src: str, dst: str, device, dtype, tile: int, overlap: int,
                self_ensemble: bool = False) -> None:
    """Read ``src``, derain, write ``dst`` (PNG, same size/mode/bit depth, alpha kept)."""
    from ddsa_model.pipeline.imageio import read_image, write_png
    from ddsa_model.pipeline.inference import derain_array

    img = read_image(src)
    out = derain_array(model, img.rgb, device=device, tile=tile or None, overlap=overlap, dtype=dtype,
                       self_ensemble=self_ensemble)
    write_png(dst, out, alpha=img.alpha, gray=img.gray, bits=img.bits)


def run(args: argparse.Namespace) -> int:
    if args.tile < 0 or args.overlap < 0:
        raise CLIError("--tile and --overlap must be >= 0")
    if args.tile and args.overlap >= args.tile:
        raise CLIError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    from ddsa_model.pipeline.inference import MIN_TILE

    if args.tile and args.tile < MIN_TILE:
        raise CLIError(f"--tile must be 0 or at least {MIN_TILE}")
    from ddsa_model.pipeline.imageio import expand_inputs

    files, problems = expand_inputs(args.inputs, args.recursive)
    outdir = args.output
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise CLIError(f"-o {outdir}: exists and is not a folder (it must be a folder for the outputs)")
    plan, refused = plan_outputs(files, outdir)
    problems += refused
    for p in problems:
        error(p)
    if not plan:
        error("no images to process")
        return 1
    device, dtype = resolve_device(args.device, args.half)
    model = load_model_for_cli(args.weights, args.preset, args.attention_backend, device, dtype)
    os.makedirs(outdir, exist_ok=True)

    from tqdm import tqdm

    from ddsa_model.pipeline.imageio import ImageReadError

    failed = len(problems)
    bar = tqdm(list(plan.items()), unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    for src, dst in bar:
        bar.set_postfix_str(os.path.basename(src), refresh=False)
        try:
            derain_file(model, src, dst, device, dtype, args.tile, args.overlap, args.self_ensemble)
        except ImageReadError as e:
            failed += 1
            tqdm.write(f"error: {e}", file=sys.stderr)
        except (RuntimeError, ValueError, OSError) as e:  # e.g. out of memory, disk full
            failed += 1
            tqdm.write(f"error: {src}: {type(e).__name__}: {e}", file=sys.stderr)
    done = len(plan) - (failed - len(problems))
    print(f"{done} image(s) written to {outdir}" + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
