"""On-the-fly synthetic rain pairs, mixtures of training sources, and a fixed hold-out split.

Training items follow the protocol of :mod:`ddsa_model.pipeline.data`: a
:class:`~ddsa_model.pipeline.data.ResumableSampler` yields ``(index, seed, position, crop)`` and every
random choice is a pure function of ``(seed, position)``, drawn from separate streams:

* ``default_rng([seed, position])``: crop offsets and flips (the same draws, in the same order, as
  :class:`~ddsa_model.pipeline.data.PairedImageDataset`);
* ``default_rng([seed, position, 1])``: the rain rendered on the crop;
* ``default_rng([seed, position, 2])``: the source dataset (and the image in it) of a
  :class:`MixedDataset`.

So a resumed run, any number of loader workers and any order of access see the same tensors.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch

from .data import DatasetError, random_crop, read_pixels, to_tensor
from .imageio import IMAGE_EXTENSIONS, list_images
from .synth import RainParams, preset_params, synthesize_rain

__all__ = ["list_clean_images", "split_holdout", "name_seed", "SyntheticRainDataset", "MixedDataset"]

PathLike = Union[str, os.PathLike]


def list_clean_images(sources: PathLike | Sequence[PathLike]) -> list[Path]:
    """Clean image paths from folders, paired folders and files.

    A folder contributes its images (``*.png``, ``*.jpg``, …, sorted by name); a paired data
    folder (one with ``input/`` and ``target/``) contributes its ``target/`` images, which are
    clean; a file is taken as it is. Duplicates are dropped, the order is kept.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            folder = p / "target" if (p / "input").is_dir() and (p / "target").is_dir() else p
            found = [Path(q) for q in list_images(folder)]
            if not found:
                raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise DatasetError(f"{p}: no such image file or folder")
    return list(dict.fromkeys(paths))


def split_holdout(
    paths: Sequence[PathLike], n_holdout: int = 28, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Fixed split into ``(train_paths, holdout_paths)``, both sorted by file name.

    The paths are sorted by (name, full path), permuted with ``default_rng(seed)`` and the first
    ``n_holdout`` are held out, so the split depends only on the set of names and the seed.
    """
    ordered = sorted((Path(p) for p in dict.fromkeys(paths)), key=lambda q: (q.name, str(q)))
    if not 0 <= n_holdout <= len(ordered):
        raise ValueError(f"n_holdout must be in [0, {len(ordered)}], got {n_holdout}")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    held = set(perm[:n_holdout].tolist())
    train = [p for i, p in enumerate(ordered) if i not in held]
    holdout = [p for i, p in enumerate(ordered) if i in held]
    return train, holdout


def name_seed(name: str, seed: int = 0) -> list[int]:
    """Seed sequence ``[seed, crc32(name)]`` of a whole image's rain (as ``ddsa-synth`` uses it)."""
    return [int(seed), zlib.crc32(name.encode())]


class SyntheticRainDataset(torch.utils.data.Dataset):
    """Clean images with rain rendered on the fly.

    clean: folders, paired folders (their ``target/``) or image files, see :func:`list_clean_images`
    (pass the *train* list of :func:`split_holdout` to keep a hold-out set unseen).
    preset: ``light``, ``heavy``, ``mixed`` or a :class:`~ddsa_model.pipeline.synth.RainParams`.

    Training items ``(index, seed, position, crop)``: image ``index`` is reflect-padded to at least
    ``crop`` px, cropped and flipped (and rotated by 90° if ``rot90``) exactly as
    :class:`~ddsa_model.pipeline.data.PairedImageDataset` does, then rain is drawn on the crop from
    ``default_rng([seed, position, 1])``; returns ``(rainy, clean)`` float32 tensors (3, crop,
    crop) in [0, 1]. With ``quantize`` the rainy crop is rounded to 8 bit like a saved PNG.
    Evaluation items (an ``int``): the full image, rain from ``default_rng(name_seed(file stem))``,
    returned as ``(rainy, clean, name)``.
    cache: decode every image once at construction (uint8/uint16 arrays in memory).
    """

    def __init__(
        self,
        clean: PathLike | Sequence[PathLike],
        preset: str | RainParams = "mixed",
        *,
        flips: bool = True,
        rot90: bool = False,
        cache: bool = True,
        quantize: bool = True,
    ) -> None:
        self.paths = list_clean_images(clean)
        if not self.paths:
            raise DatasetError("no clean images given")
        preset_params(preset, np.random.default_rng(0))  # an unknown preset name fails here
        self.preset, self.flips, self.rot90, self.quantize = preset, flips, rot90, quantize
        self._cache: list[np.ndarray] | None = None
        if cache:
            self._cache = [read_pixels(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        """Decoded clean image ``i``, (H, W, 3) uint8 or uint16."""
        return self._cache[i] if self._cache is not None else read_pixels(self.paths[i])

    def _rain(self, clean: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        scale = np.float32(65535.0 if clean.dtype == np.uint16 else 255.0)
        rainy = synthesize_rain(np.ascontiguousarray(clean).astype(np.float32) / scale, self.preset, rng)
        if self.quantize:
            rainy = np.round(rainy * np.float32(255.0)) / np.float32(255.0)
        return torch.from_numpy(np.ascontiguousarray(rainy)).permute(2, 0, 1).contiguous()

    def __getitem__(self, item):
        if not isinstance(item, (tuple, list)):
            i = int(item)
            clean = self.image(i)
            rng = np.random.default_rng(name_seed(self.paths[i].stem))
            return self._rain(clean, rng), to_tensor(clean), self.paths[i].name
        index, seed, position, crop = item
        (a,) = random_crop((self.image(int(index)),), crop, np.random.default_rng([seed, position]),
                           self.flips, self.rot90)
        rainy = self._rain(a, np.random.default_rng([seed, position, 1]))
        return rainy, to_tensor(a)


class MixedDataset(torch.utils.data.Dataset):
    """A weighted mixture of training datasets with the ``(index, seed, position, crop)`` protocol
    (e.g. real :class:`~ddsa_model.pipeline.data.PairedImageDataset` pairs and :class:`SyntheticRainDataset`).

    For a training item the source dataset k is drawn with probability ``weights[k] / sum(weights)``
    and the image inside it uniformly, both from ``default_rng([seed, position, 2])``; the source
    then gets ``(image, seed, position, crop)``. The sampler's ``index`` is not used, so the mix is
    a pure function of (seed, position). ``len`` is the total number of images of the sources
    (use it as ``ResumableSampler(num_items=len(mixed))``: an "epoch" is that many samples).
    Evaluation items (an ``int``) index the concatenation of the sources.
    """

    def __init__(self, datasets: Sequence[torch.utils.data.Dataset], weights: Sequence[float]) -> None:
        if not datasets or len(datasets) != len(weights):
            raise DatasetError(f"need one weight per dataset, got {len(datasets)} dataset(s) and "
                               f"{len(weights)} weight(s)")
        w = np.asarray(weights, np.float64)
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise DatasetError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
        if any(len(d) == 0 for d, wk in zip(datasets, w) if wk > 0):
            raise DatasetError("a dataset with a positive weight is empty")
        self.datasets = list(datasets)
        self.weights = (w / w.sum()).tolist()
        self._cum = np.cumsum(w / w.sum())
        self._cum[-1] = 1.0

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def choose(self, seed: int, position: int) -> tuple[int, int]:
        """(source dataset, image index in it) of global sample ``position``."""
        rng = np.random.default_rng([seed, position, 2])
        k = int(np.searchsorted(self._cum, rng.random(), side="right"))
        k = min(k, len(self.datasets) - 1)
        while self.weights[k] == 0:  # only reachable through rounding at a zero-weight boundary
            k -= 1
        return k, int(rng.integers(0, len(self.datasets[k])))

    def __getitem__(self, item):
        if not isinstance(item, (tuple, list)):
            i = int(item)
            for d in self.datasets:
                if i < len(d):
                    return d[i]
                i -= len(d)
            raise IndexError(item)
        _index, seed, position, crop = item
        k, i = self.choose(seed, position)
        return self.datasets[k][(i, seed, position, crop)]
