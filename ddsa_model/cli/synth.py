"""ddsa-synth: add synthetic rain to clean images and write ``OUT/input`` + ``OUT/target`` pairs.

    ddsa-synth clean_photos/ extra.jpg "more/*.png" -o synthetic --preset mixed --seed 0
    ddsa-synth clean_photos/ -o synthetic --density 0.003:0.01 --length 15:30 --angle -20:20 \
        --blur 0.8 --brightness 0.7
    ddsa-synth Clean208/ --holdout 28 --preset heavy -o data/heavy_val

``--preset light|heavy|mixed`` draws layered rain (streak layers + veil, see ddsa_model.pipeline.synth).
Without it the single-layer generator is used with per-parameter flags, each a number or a
``LOW:HIGH`` range sampled uniformly per image. ``--holdout N`` keeps only the N images that
``ddsa_model.pipeline.synthetic_data.split_holdout(inputs, N, --split-seed)`` holds out of training: with
``--preset heavy`` this writes the heavy-rain validation set for ``ddsa-eval --data OUT``.
The rain of an image depends only on --seed and its output name, so reruns are identical.
Unreadable inputs are reported by name and skipped; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np

from ddsa_model.atomic import atomic_write_text
from ddsa_model.pipeline.imageio import ImageReadError, expand_inputs, read_image, write_png
from ddsa_model.pipeline.metrics import to_uint8
from ddsa_model.pipeline.synth import PRESET_NAMES, add_rain, synthesize_rain
from ddsa_model.pipeline.synthetic_data import split_holdout

PARAMS = ("density", "length", "angle", "blur", "brightness")
DEFAULTS = {"density": "0.005", "length": "20", "angle": "0", "blur": "0.8", "brightness": "0.7"}


def parse_range(text: str, name: str) -> tuple[float, float]:
    """``"0.5"`` → (0.5, 0.5); ``"-20:20"`` → (-20.0, 20.0)."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--{name}: expected a number or LOW:HIGH, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2 or values[0] > values[1]:
        raise ValueError(f"--{name}: expected LOW:HIGH with LOW <= HIGH, got {text!r}")
    return values[0], values[1]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ddsa-synth",
        description="Add synthetic rain to clean images; writes OUT/input/<name>.png (rainy) and "
                    "OUT/target/<name>.png (clean). Layered rain with --preset, or single-layer streaks "
                    "whose parameters take a value or a LOW:HIGH range. The rain of an image depends "
                    "only on --seed and its output name.",
    )
    ap.add_argument("inputs", nargs="+", help="clean images: files, folders or glob patterns")
    ap.add_argument("-o", "--out", required=True, help="output folder (gets input/ and target/)")
    ap.add_argument("--preset", choices=PRESET_NAMES,
                    help="layered rain preset (streak layers + veil): light ~27 dB, heavy ~14 dB rainy "
                         "PSNR-Y, mixed = a severity between them drawn per image; excludes the "
                         "single-layer flags below")
    single = ap.add_argument_group("single-layer rain (used without --preset)")
    single.add_argument("--density", help="fraction of pixels seeding a streak, 0.002 light .. 0.05 heavy "
                                          f"(default {DEFAULTS['density']})")
    single.add_argument("--length", help=f"streak length in px (default {DEFAULTS['length']})")
    single.add_argument("--angle", help="degrees from vertical, positive = top-left to bottom-right "
                                        f"(default {DEFAULTS['angle']})")
    single.add_argument("--blur", help=f"Gaussian sigma of the streaks in px (default {DEFAULTS['blur']})")
    single.add_argument("--brightness", help=f"peak streak intensity in [0, 1] (default {DEFAULTS['brightness']})")
    ap.add_argument("--holdout", type=int, default=0, metavar="N",
                    help="write only the N images held out of training by split_holdout(inputs, N, "
                         "--split-seed), e.g. --holdout 28 --preset heavy for the validation set")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the --holdout split (default 0)")
    ap.add_argument("--copies", type=int, default=1, help="rainy versions per clean image (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap


def _glue_negative_values(argv: list[str]) -> list[str]:
    """``--angle -20:20`` → ``--angle=-20:20`` (argparse would read -20:20 as an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a in tuple(f"--{p}" for p in PARAMS) and nxt[:1] == "-" and nxt[1:2] in tuple("0123456789."):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_glue_negative_values(argv))
    prog = "ddsa-synth"
    try:
        given = [f"--{name}" for name in PARAMS if getattr(args, name) is not None]
        if args.preset and given:
            raise ValueError(f"--preset cannot be combined with {', '.join(given)}")
        ranges = {} if args.preset else {
            name: parse_range(getattr(args, name) if getattr(args, name) is not None else DEFAULTS[name], name)
            for name in PARAMS}
        if args.copies < 1:
            raise ValueError(f"--copies must be >= 1, got {args.copies}")
        if args.holdout < 0:
            raise ValueError(f"--holdout must be >= 0, got {args.holdout}")
        probe = np.zeros((2, 2, 3), np.uint8)
        for end in (0, 1) if ranges else ():  # both ends of every range, before anything is written
            add_rain(probe, rng=0, **{k: r[end] for k, r in ranges.items()})
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    files, problems = expand_inputs(args.inputs)
    paths = [Path(f) for f in files]
    if args.holdout:
        if args.holdout > len(paths):
            print(f"{prog}: error: --holdout {args.holdout} but only {len(paths)} input image(s)", file=sys.stderr)
            return 2
        paths = split_holdout(paths, args.holdout, args.split_seed)[1]
    out = Path(args.out)
    in_dir, tg_dir = out / "input", out / "target"
    in_dir.mkdir(parents=True, exist_ok=True)
    tg_dir.mkdir(parents=True, exist_ok=True)
    sources = {p.resolve() for p in paths}

    jobs: dict[str, tuple[Path, int]] = {}
    for p in paths:
        for c in range(args.copies):
            name = p.stem if args.copies == 1 else f"{p.stem}_{c}"
            if name in jobs:
                problems.append(f"{p}: output name {name}.png clashes with {jobs[name][0]}; skipped")
                continue
            if (in_dir / f"{name}.png").resolve() in sources or (tg_dir / f"{name}.png").resolve() in sources:
                problems.append(f"{p}: output {name}.png would overwrite an input; skipped")
                continue
            jobs[name] = (p, c)

    try:
        from tqdm import tqdm
        bar = tqdm(jobs.items(), desc=prog, unit="img", disable=args.no_progress or None)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        bar = jobs.items()
    record = {"seed": args.seed, "preset": args.preset, "ranges": ranges, "images": {}}
    if args.holdout:
        record["holdout"] = {"n": args.holdout, "split_seed": args.split_seed}
    current: tuple[Path | None, np.ndarray | None] = (None, None)  # copies of one image are consecutive
    for name, (path, _copy) in bar:
        if current[0] != path:
            try:
                current = (path, to_uint8(read_image(path).rgb))
            except ImageReadError as exc:
                problems.append(str(exc))
                current = (path, None)
        clean = current[1]
        if clean is None:
            continue
        rng = np.random.default_rng([args.seed, zlib.crc32(name.encode())])
        if args.preset:
            params: dict = {}
            rainy = synthesize_rain(clean, args.preset, rng)
        else:
            params = {k: float(rng.uniform(lo, hi)) if lo < hi else lo for k, (lo, hi) in ranges.items()}
            rainy = add_rain(clean, rng=rng, **params)  # parameters were validated above
        write_png(in_dir / f"{name}.png", rainy / 255.0)
        write_png(tg_dir / f"{name}.png", clean / 255.0)
        record["images"][name] = {"source": str(path), **params}

    atomic_write_text(out / "synth.json", json.dumps(record, indent=1))
    for p in problems:
        print(f"{prog}: {p}", file=sys.stderr)
    n = len(record["images"])
    print(f"{prog}: wrote {n} pair(s) to {out}" + (f", {len(problems)} problem(s)" if problems else ""),
          file=sys.stderr)
    return 1 if problems or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
