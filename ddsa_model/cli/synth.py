"""ddsa-synth: add synthetic rain to clean images and write ``OUT/input`` + ``OUT/target`` pairs.

    ddsa-synth clean_photos/ extra.jpg "more/*.png" -o synthetic --density 0.003:0.01 \
        --length 15:30 --angle -20:20 --blur 0.8 --brightness 0.7 --seed 0

Each parameter is a number or a ``LOW:HIGH`` range sampled uniformly per image. The rain of an
image depends only on --seed and its output name, so reruns are identical. Unreadable inputs are
reported by name and skipped; the exit status is then 1.
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
from ddsa_model.pipeline.synth import add_rain

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
        description="Add synthetic rain streaks to clean images; writes OUT/input/<name>.png (rainy) "
                    "and OUT/target/<name>.png (clean). Parameters take a value or a LOW:HIGH range.",
    )
    ap.add_argument("inputs", nargs="+", help="clean images: files, folders or glob patterns")
    ap.add_argument("-o", "--out", required=True, help="output folder (gets input/ and target/)")
    ap.add_argument("--density", default=DEFAULTS["density"],
                    help="fraction of pixels seeding a streak, 0.002 light .. 0.05 heavy (default %(default)s)")
    ap.add_argument("--length", default=DEFAULTS["length"], help="streak length in px (default %(default)s)")
    ap.add_argument("--angle", default=DEFAULTS["angle"],
                    help="degrees from vertical, positive = top-left to bottom-right (default %(default)s)")
    ap.add_argument("--blur", default=DEFAULTS["blur"], help="Gaussian sigma of the streaks in px (default %(default)s)")
    ap.add_argument("--brightness", default=DEFAULTS["brightness"],
                    help="peak streak intensity in [0, 1] (default %(default)s)")
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
        ranges = {name: parse_range(getattr(args, name), name) for name in PARAMS}
        if args.copies < 1:
            raise ValueError(f"--copies must be >= 1, got {args.copies}")
        probe = np.zeros((2, 2, 3), np.uint8)
        for end in (0, 1):  # both ends of every range, before anything is written
            add_rain(probe, rng=0, **{k: r[end] for k, r in ranges.items()})
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    files, problems = expand_inputs(args.inputs)
    paths = [Path(f) for f in files]
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
    record = {"seed": args.seed, "ranges": ranges, "images": {}}
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
