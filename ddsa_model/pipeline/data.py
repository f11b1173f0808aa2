"""Paired deraining data: folder pairing, random crops and a resumable sampler.

Layout (Restormer/MPRNet family): ``<root>/input/*`` (rainy) and ``<root>/target/*`` (clean),
matched by file name; Rain13K-style names (``rain-12.png`` ↔ ``norain-12.png``) and a different
extension with the same stem (``7.jpg`` ↔ ``7.png``) also pair.

Every random choice of training data is a pure function of ``(seed, global sample position)``:
the sampler yields ``(index, seed, position, crop)`` items and the dataset derives its crop offsets
and flips from ``numpy.random.default_rng([seed, position])``. The data order therefore does not
depend on the number of loader workers, and a resumed run sees exactly the samples the
uninterrupted run would have seen.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .imageio import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image

_MAX_LISTED = 20


class DatasetError(ValueError):
    """A data folder that cannot be used as given (missing, mismatched, unreadable, too small)."""


@dataclass(frozen=True)
class ImagePair:
    """One rainy/clean pair; ``size`` is (width, height) in pixels."""

    input: Path
    target: Path
    size: tuple[int, int]

    @property
    def name(self) -> str:
        return self.input.name


def _target_candidates(name: str) -> list[str]:
    """Target file names tried for an input name, in order: the same name, then the Rain13K
    convention ``rain-12.png`` → ``norain-12.png``."""
    names = [name]
    if name.lower().startswith(("rain-", "rain_")):
        names += ["no" + name, "norain" + name[4:]]
    return list(dict.fromkeys(names))


def _format_problems(root: Path, problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    lines = [f"{len(problems)} problem(s) with the image pairs in {root}:"]
    lines += [f"  - {p}" for p in shown]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def _probe(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) after EXIF orientation and None, or None and why the file is unreadable."""
    try:
        with Image.open(path) as im:
            im.verify()  # checks chunk CRCs / structure without decoding the pixels
        with Image.open(path) as im:  # verify() leaves the object unusable: reopen (header only)
            size = im.size
            # PNG: getexif() would decode the whole image to look for a trailing eXIf chunk
            has_exif = im.format != "PNG" or "exif" in im.info
            orientation = im.getexif().get(0x0112, 1) if has_exif else 1
        if orientation in (5, 6, 7, 8):
            size = (size[1], size[0])
        return size, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def find_pairs(root: str | os.PathLike, *, check_readable: bool = True) -> list[ImagePair]:
    """Pair ``root/input/*`` with ``root/target/*``.

    Raises one :class:`DatasetError` that lists every problem found: missing folders, inputs
    without a target, targets without an input, unreadable files and pairs of different size.
    With ``check_readable`` every file's header and structure is verified (no full decode).
    """
    root = Path(root)
    in_dir, tg_dir = root / "input", root / "target"
    missing = [str(d) for d in (in_dir, tg_dir) if not d.is_dir()]
    if missing:
        raise DatasetError(
            f"{root} is not a paired data folder: missing {', '.join(missing)} "
            "(expected <root>/input/* rainy images and <root>/target/* clean images)"
        )
    inputs, targets = (list(map(Path, list_images(d))) for d in (in_dir, tg_dir))
    if not inputs:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {in_dir}")

    by_name = {p.name: p for p in targets}
    by_stem: dict[str, list[Path]] = {}
    for p in targets:
        by_stem.setdefault(p.stem, []).append(p)
    used: set[Path] = set()
    problems: list[str] = []
    matched: list[tuple[Path, Path]] = []
    for inp in inputs:
        tgt = next((by_name[n] for n in _target_candidates(inp.name) if n in by_name), None)
        if tgt is None:
            stems = [Path(n).stem for n in _target_candidates(inp.name)]
            hits = [p for s in stems for p in by_stem.get(s, [])]
            if len(hits) == 1:
                tgt = hits[0]
        if tgt is None or tgt in used:
            problems.append(f"input/{inp.name}: no matching target (looked for "
                            f"{' or '.join('target/' + n for n in _target_candidates(inp.name))})")
            continue
        used.add(tgt)
        matched.append((inp, tgt))
    problems += [f"target/{t.name}: no matching input" for t in targets if t not in used]

    pairs: list[ImagePair] = []
    for inp, tgt in matched:
        if not check_readable:
            pairs.append(ImagePair(inp, tgt, (0, 0)))
            continue
        (s_in, e_in), (s_tg, e_tg) = _probe(inp), _probe(tgt)
        if e_in:
            problems.append(f"input/{inp.name}: unreadable image ({e_in})")
        if e_tg:
            problems.append(f"target/{tgt.name}: unreadable image ({e_tg})")
        if e_in or e_tg:
            continue
        if s_in != s_tg:
            problems.append(f"input/{inp.name} is {s_in[0]}x{s_in[1]} but target/{tgt.name} "
                            f"is {s_tg[0]}x{s_tg[1]}")
            continue
        pairs.append(ImagePair(inp, tgt, s_in))
    if problems:
        raise DatasetError(_format_problems(root, problems))
    return pairs


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to (H, W, 3) RGB pixels: uint8, or uint16 for 16-bit sources.

    :func:`ddsa_model.pipeline.imageio.read_image` (EXIF orientation applied, gray expanded to
    RGB, alpha dropped); raises :class:`DatasetError` naming the file when it cannot be decoded.
    """
    try:
        return read_image(path).pixels()
    except ImageReadError as exc:
        raise DatasetError(str(exc)) from None


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8/uint16 array → (3, H, W) float32 tensor in [0, 1]."""
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    return t.to(torch.float32).div_(scale)


def pad_to(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad an (H, W, C) array at the bottom/right to at least (height, width)."""
    ph, pw = max(0, height - arr.shape[0]), max(0, width - arr.shape[1])
    if ph == 0 and pw == 0:
        return arr
    mode = "reflect" if min(arr.shape[:2]) > 1 else "edge"
    return np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode=mode)


class PairedImageDataset(torch.utils.data.Dataset):
    """Rainy/clean pairs from one or more ``<root>/input`` + ``<root>/target`` folders.

    Training mode (``train=True``): indexed by the sampler's ``(index, seed, position, crop)``
    items and returns a random ``crop``×``crop`` patch pair, flipped horizontally/vertically (and
    rotated by 90° if ``rot90``) — the same transform on input and target.
    Evaluation mode: indexed by ``int`` and returns the full images.
    Items are ``(input, target)`` float32 tensors of shape (3, h, w) in [0, 1] (training) or
    ``(input, target, name)`` (evaluation).

    small_images: "pad" reflect-pads images smaller than the crop; "reject" raises a
    :class:`DatasetError` at construction listing them (``max_crop`` is the largest crop used).
    cache: decode every image once at construction and keep it in memory (uint8).
    """

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        train: bool = True,
        flips: bool = True,
        rot90: bool = False,
        small_images: str = "pad",
        max_crop: int = 128,
        cache: bool = True,
        max_items: int = 0,
    ) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        if not roots:
            raise DatasetError("no data folder given")
        if small_images not in ("pad", "reject"):
            raise DatasetError(f"small_images must be 'pad' or 'reject', got {small_images!r}")
        self.pairs: list[ImagePair] = []
        for root in roots:
            self.pairs += find_pairs(root)
        if max_items:
            self.pairs = self.pairs[:max_items]
        self.train, self.flips, self.rot90 = train, flips, rot90
        self.small_images = small_images
        if train and small_images == "reject":
            small = [p for p in self.pairs if min(p.size) < max_crop]
            if small:
                listed = [f"{p.input} ({p.size[0]}x{p.size[1]})" for p in small[:_MAX_LISTED]]
                more = f"\n  ... and {len(small) - _MAX_LISTED} more" if len(small) > _MAX_LISTED else ""
                raise DatasetError(
                    f"{len(small)} image pair(s) are smaller than the {max_crop}px crop "
                    "(set data.small_images=pad to reflect-pad them, or lower the crop):\n  "
                    + "\n  ".join(listed) + more
                )
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self._cache = [self._decode(i) for i in range(len(self.pairs))]

    def __len__(self) -> int:
        return len(self.pairs)

    def _decode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[i]
        inp, tgt = read_pixels(pair.input), read_pixels(pair.target)
        if inp.shape != tgt.shape:
            raise DatasetError(f"{pair.input} decodes to {inp.shape[1]}x{inp.shape[0]} but "
                               f"{pair.target} to {tgt.shape[1]}x{tgt.shape[0]}")
        if inp.dtype != tgt.dtype:  # one 16-bit, one 8-bit: compare on a common 16-bit scale
            inp, tgt = (a.astype(np.uint16) * 257 if a.dtype == np.uint8 else a for a in (inp, tgt))
        return inp, tgt

    def images(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (input, target) arrays of pair ``i``, (H, W, 3) uint8 or uint16."""
        return self._cache[i] if self._cache is not None else self._decode(i)

    def __getitem__(self, item):
        if not self.train:
            inp, tgt = self.images(int(item))
            return to_tensor(inp), to_tensor(tgt), self.pairs[int(item)].name
        index, seed, position, crop = item
        inp, tgt = self.images(index)
        inp, tgt = random_crop((inp, tgt), crop, np.random.default_rng([seed, position]), self.flips, self.rot90)
        return to_tensor(inp), to_tensor(tgt)


def random_crop(images: Sequence[np.ndarray], crop: int, rng: np.random.Generator, flips: bool = True,
                rot90: bool = False) -> list[np.ndarray]:
    """The same random ``crop``×``crop`` window and flips/rotation of every (H, W, C) array in
    ``images`` (all the same size; reflect-padded first when smaller than the crop).

    Draws, in this order: the top and left offsets, then three coin flips (horizontal, vertical,
    90°), always, so the stream does not depend on ``flips``/``rot90``.
    """
    padded = [pad_to(a, crop, crop) for a in images]
    h, w = padded[0].shape[:2]
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    hflip, vflip, rot = rng.random(3) < 0.5
    out = []
    for a in padded:
        a = a[top:top + crop, left:left + crop]
        if flips and hflip:
            a = a[:, ::-1]
        if flips and vflip:
            a = a[::-1]
        if rot90 and rot:
            a = np.rot90(a)
        out.append(a)
    return out


def crop_at(iteration: int, crop: int, progressive: Sequence[Sequence[int]] = ()) -> int:
    """Crop size used at ``iteration``: the last ``[start_iteration, crop]`` entry of
    ``progressive`` whose start is ≤ iteration, else ``crop``."""
    size = crop
    for start, c in sorted((int(s), int(c)) for s, c in progressive):
        if iteration >= start:
            size = c
    return size


class ResumableSampler(torch.utils.data.Sampler):
    """Infinite, sharded, resumable training sampler (the role of DistributedSampler).

    Global sample positions run 0, 1, 2, …; position g falls in epoch ``g // n`` and picks
    ``perm_epoch[g % n]`` with ``perm_epoch = default_rng([seed, epoch]).permutation(n)``.
    Each micro-batch of every rank takes a contiguous block of ``batch_size`` positions: rank
    ``r``'s k-th micro-batch (k = iteration·grad_accum + micro) covers positions
    ``(k·world_size + r)·batch_size + [0, batch_size)``. So 2 ranks × batch b see the same
    micro-batches as 1 process with batch b and 2 accumulation steps, and the data of any
    iteration is a pure function of (seed, iteration). ``start_iteration`` resumes there.

    Yields ``(index, seed, position, crop)`` for :class:`PairedImageDataset`.
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        seed: int = 0,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        crop: int = 128,
        progressive: Sequence[Sequence[int]] = (),
        start_iteration: int = 0,
    ) -> None:
        if num_items <= 0:
            raise DatasetError("the training set is empty")
        self.n, self.b, self.seed = num_items, batch_size, seed
        self.accum, self.world, self.rank = grad_accum, world_size, rank
        self.crop, self.progressive = crop, [tuple(p) for p in progressive]
        self.start_iteration = start_iteration
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def index_at(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[position % self.n])

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        k = self.start_iteration * self.accum
        while True:
            crop = crop_at(k // self.accum, self.crop, self.progressive)
            base = (k * self.world + self.rank) * self.b
            for g in range(base, base + self.b):
                yield self.index_at(g), self.seed, g, crop
            k += 1
