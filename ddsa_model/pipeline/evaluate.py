"""Evaluation the way deraining papers do it: evaluation sets, per-image scores, means and reports.

A set is a folder with ``input/`` + ``target/`` (paired: PSNR and SSIM on the Y channel, see
:mod:`ddsa_model.pipeline.metrics`), ``input/`` only, or a folder of images (unpaired: NIQE and
BRISQUE, lower is better, see :mod:`ddsa_model.pipeline.iqa`). Outputs are quantised to 8 bit
before scoring, exactly as saved PNGs would be.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from ddsa_model.atomic import json_safe  # noqa: F401  (part of this module's API)

from . import iqa
from .data import DatasetError, find_pairs
from .imageio import ImageReadError, list_images, read_image, write_png
from .inference import derain_array
from .metrics import psnr_y, ssim_y, to_uint8

__all__ = ["EvalError", "EvalSet", "NoReferenceScorer", "discover_sets", "evaluate_set", "format_table",
           "csv_text", "build_report", "json_safe", "NIQE_FILE", "BRISQUE_MODEL", "BRISQUE_RANGE"]

NIQE_FILE = "niqe_pris_params.npz"
BRISQUE_MODEL = "brisque_model_live.yml"
BRISQUE_RANGE = "brisque_range_live.yml"


class EvalError(ValueError):
    """Evaluation data or parameter files that cannot be used; the message says which and why."""


@dataclass
class EvalSet:
    """One evaluation set: ``items`` are (input path, target path or None)."""

    name: str
    root: str
    items: List[tuple] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return bool(self.items) and self.items[0][1] is not None


# ------------------------------------------------------------------------------- set discovery

def _as_set(folder: str) -> Optional[EvalSet]:
    """The set in ``folder`` or None when it is not one (raises EvalError on a broken paired set)."""
    name = os.path.basename(os.path.normpath(folder))
    inp, tgt = os.path.join(folder, "input"), os.path.join(folder, "target")
    if os.path.isdir(inp) and os.path.isdir(tgt):
        try:
            pairs = find_pairs(folder, check_readable=False)
        except DatasetError as e:
            raise EvalError(str(e)) from None
        return EvalSet(name, folder, [(str(p.input), str(p.target)) for p in pairs])
    if os.path.isdir(inp):
        images = list_images(inp)
        return EvalSet(name, folder, [(f, None) for f in images]) if images else None
    images = list_images(folder)
    return EvalSet(name, folder, [(f, None) for f in images]) if images else None


def discover_sets(root: str, names: Optional[Sequence[str]] = None) -> List[EvalSet]:
    """Sets under ``root`` (itself a set, or a folder of sets), optionally restricted to ``names``.

    Raises EvalError (worded for ddsa-eval's --data / --sets) when none can be used.
    """
    if not os.path.isdir(root):
        raise EvalError(f"--data {root}: no such folder")
    own = os.path.isdir(os.path.join(root, "input")) or bool(list_images(root))
    if own:
        s = _as_set(root)
        if s is None:
            raise EvalError(f"--data {root}: no images found")
        if names and s.name not in names:
            raise EvalError(f"--data {root} is the set {s.name!r}, not {', '.join(names)}")
        return [s]
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if names:
        missing = [n for n in names if n not in subdirs]
        if missing:
            raise EvalError(f"--sets: {', '.join(missing)} not found under {root} "
                            f"(available: {', '.join(subdirs) or 'none'})")
        subdirs = list(names)
    sets = []
    for d in subdirs:
        s = _as_set(os.path.join(root, d))
        if s is not None:
            sets.append(s)
        elif names:
            raise EvalError(f"{os.path.join(root, d)}: holds neither input/ + target/ nor images")
    if not sets:
        raise EvalError(f"--data {root}: no evaluation sets found (expected <set>/input + <set>/target, "
                        "or folders of images)")
    return sets


# ------------------------------------------------------------------------------------- scoring

class NoReferenceScorer:
    """NIQE / BRISQUE scorers built once from the parameter files.

    NIQE is required (FileNotFoundError / ValueError from :class:`iqa.NIQE` otherwise); BRISQUE is
    skipped when its files or OpenCV's quality module are missing: ``brisque_problem`` says why.
    """

    def __init__(self, niqe_params: str, brisque_model: Optional[str], brisque_range: Optional[str]) -> None:
        self.niqe = iqa.NIQE(niqe_params)
        self.brisque_paths = (brisque_model, brisque_range)
        self.brisque_problem: Optional[str] = None
        if not all(p and os.path.isfile(p) for p in self.brisque_paths):
            self.brisque_problem = (f"BRISQUE model files not found "
                                    f"({', '.join(str(p) for p in self.brisque_paths)}): BRISQUE skipped")
        else:
            try:
                iqa._cv2_quality()
            except RuntimeError as e:
                self.brisque_problem = f"{e}; BRISQUE skipped"

    def __call__(self, img) -> Dict[str, Optional[float]]:
        """{"niqe", "brisque"} of a uint8 (H, W, 3) image (None when not computed)."""
        out: Dict[str, Optional[float]] = {"niqe": None, "brisque": None}
        try:
            out["niqe"] = self.niqe(img)
        except ValueError as e:
            out["niqe_error"] = str(e)
        if self.brisque_problem is None:
            out["brisque"] = iqa.brisque(img, *self.brisque_paths)
        return out


def _mean(values: List[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def evaluate_set(s: EvalSet, model: Optional[torch.nn.Module], *, device: torch.device, dtype: torch.dtype,
                 tile: int = 0, overlap: int = 32, crop_border: int = 0, limit: Optional[int] = None,
                 save_dir: Optional[str] = None, noref: Optional[NoReferenceScorer] = None,
                 progress: bool = True, self_ensemble: bool = False) -> dict:
    """Per-image and mean scores of one set; ``model`` None scores the inputs themselves.

    ``tile`` 0: whole images; ``limit``: only the first N images; ``save_dir``: outputs are written
    to ``save_dir/<set>/<name>.png``. Images that cannot be scored are listed under "failed".
    ``self_ensemble``: the mean over the 4 flips (none, left-right, up-down, both) of each input (4× the time).
    """
    items = s.items[:limit] if limit else s.items
    rows, failures = [], []
    out_dir = os.path.join(save_dir, s.name) if save_dir else None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    for inp, tgt in tqdm(items, desc=s.name, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        name = os.path.basename(inp)
        try:
            img = read_image(inp)
            out = img.rgb if model is None else derain_array(
                model, img.rgb, device=device, tile=tile or None, overlap=overlap, dtype=dtype,
                self_ensemble=self_ensemble)
            out8 = to_uint8(out)
            row: Dict[str, object] = {"image": name}
            if tgt is not None:
                target = to_uint8(read_image(tgt).rgb)
                if target.shape != out8.shape:
                    raise ValueError(f"{tgt}: size {target.shape[1]}x{target.shape[0]} differs from the "
                                     f"input's {out8.shape[1]}x{out8.shape[0]}")
                row["psnr"] = psnr_y(out8, target, crop_border)
                row["ssim"] = ssim_y(out8, target, crop_border)
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
    """A two-line table (header, values) of one set's means."""
    if summary["paired"]:
        head = f"{'set':<16} {'images':>6} {'PSNR-Y (dB)':>12} {'SSIM-Y':>8}"
        line = (f"{summary['set']:<16} {summary['n']:>6} {_fmt(summary['psnr'], 2):>12} "
                f"{_fmt(summary['ssim'], 4):>8}")
    else:
        head = f"{'set':<16} {'images':>6} {'NIQE':>8} {'BRISQUE':>8}   (lower is better)"
        line = f"{summary['set']:<16} {summary['n']:>6} {_fmt(summary['niqe'], 3):>8} {_fmt(summary['brisque'], 3):>8}"
    return head + "\n" + line


def csv_text(results: List[dict]) -> str:
    """Per-image scores and a MEAN row per set, as CSV text."""
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


def build_report(results: List[dict], weights: str, crop_border: int = 0, tile: int = 0,
                 self_ensemble: bool = False) -> dict:
    """The JSON report: the weights scored, the protocol and every set's summary."""
    return {
        "weights": weights,
        "protocol": {"psnr_ssim": "Y of BT.601 YCbCr (MATLAB rgb2ycbcr, 8-bit, Y rounded), "
                                  "SSIM 11x11 Gaussian sigma 1.5, valid region",
                     "crop_border": crop_border, "tile": tile or None, "self_ensemble": self_ensemble,
                     "niqe": "MATLAB release algorithm, lower is better",
                     "brisque": "OpenCV quality.QualityBRISQUE, lower is better"},
        "sets": {r["set"]: r for r in results},
    }
