"""Whole-image and tiled inference with overlap blending, in bounded device memory.

The full image and the output accumulators stay on the CPU (float32); one tile at a time is moved
to the device, run, and brought back. Tiles overlap by ``overlap`` pixels and are blended with
weights that ramp linearly from 1/(overlap+1) to 1 across the overlap on sides that have a
neighbour (weight 1 elsewhere, including at the image border), normalised by the sum of weights.

Tiling is exact for a purely local network when every tile that covers a pixel (with nonzero
weight) also contains that pixel's receptive field. DDSA is *not* local: its channel attention
forms a C×C Gram matrix over all pixels of its input, so a tile sees the statistics of the tile,
not of the whole image, and the tiled output differs slightly from the untiled one everywhere
(see ``tests/test_derain.py`` for the measured size of that difference).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["tile_starts", "blend_ramp", "precision_context", "run_model", "flip_view", "derain_tensor",
           "derain_array"]

MIN_TILE = 16  # smaller tiles would be mostly padding inside the U-Net (it pads to multiples of 8)


def tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of length ``tile`` covering [0, size) with at least ``overlap`` overlap.

    The stride is ``tile - overlap``; the last tile is aligned to the end of the image.
    """
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def blend_ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weights (length,) float32: linear ramps of ``overlap`` px on the chosen sides."""
    w = np.ones(length, np.float32)
    n = min(overlap, length)
    if n > 0:
        ramp = np.arange(1, n + 1, dtype=np.float32) / np.float32(n + 1)
        if ramp_start:
            w[:n] = np.minimum(w[:n], ramp)
        if ramp_end:
            w[length - n:] = np.minimum(w[length - n:], ramp[::-1])
    return w


def precision_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` (float16 / bfloat16) on ``device``'s type; float32: a no-op context."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


FLIP_DIMS = ((), (-1,), (-2,), (-2, -1))  # identity, left-right, up-down, both (= 180° rotation)


def flip_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0–3) flip of (…, H, W): none, left-right, up-down, both. Each is its own inverse.

    Rotations by 90° are left out on purpose: they turn near-vertical rain streaks horizontal, which
    a deraining network has not been trained on (self-ensembling with them costs several dB).
    """
    return x.flip(FLIP_DIMS[k]) if FLIP_DIMS[k] else x


@torch.no_grad()
def run_model(model: torch.nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32,
              self_ensemble: bool = False) -> torch.Tensor:
    """Run ``model`` on one CPU tensor (1, 3, h, w) on ``device``; returns a float32 CPU tensor.

    The network accepts any size (it pads internally). ``dtype`` float16/bfloat16 runs under
    autocast (the weights stay float32). ``self_ensemble``: the mean of the outputs for the 4 flips
    of the input (:func:`flip_view`), each flipped back (4× the time).
    """
    views = range(len(FLIP_DIMS)) if self_ensemble else (0,)
    total = None
    for k in views:
        with precision_context(device, dtype):
            y = model(flip_view(x, k).to(device, non_blocking=True))
        y = flip_view(y.float().cpu(), k)
        if y.shape != x.shape:
            raise RuntimeError(f"the model returned shape {tuple(y.shape)} for an input of shape {tuple(x.shape)}")
        total = y if total is None else total + y
    return total / len(views) if self_ensemble else total


def _tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[Tuple[int, int, int, int]]:
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            yield y0, min(y0 + tile, h), x0, min(x0 + tile, w)


@torch.no_grad()
def derain_tensor(model: torch.nn.Module, x: torch.Tensor, device: Optional[torch.device] = None,
                  tile: Optional[int] = None, overlap: int = 32, dtype: torch.dtype = torch.float32,
                  progress=None, self_ensemble: bool = False) -> torch.Tensor:
    """Derain a CPU image tensor (1, 3, H, W) in [0, 1]; returns float32 (1, 3, H, W) on the CPU.

    ``tile`` None or 0, or an image no larger than one tile: a single forward pass. Otherwise
    tiles of ``tile``×``tile`` px overlapping by ``overlap`` px, blended (see module docstring).
    The output is not clipped. ``progress``: optional callable receiving the number of tiles done.
    ``self_ensemble``: average the 4 flips of every tile (see :func:`run_model`).
    """
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected an image tensor of shape (1, 3, H, W), got {tuple(x.shape)}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    device = torch.device("cpu") if device is None else torch.device(device)
    x = x.detach().to("cpu", torch.float32)
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return run_model(model, x, device, dtype, self_ensemble)
    if tile < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} px, got {tile}")
    out = torch.zeros_like(x)
    wsum = torch.zeros((1, 1, h, w), dtype=torch.float32)
    done = 0
    for y0, y1, x0, x1 in _tiles(h, w, tile, overlap):
        pred = run_model(model, x[..., y0:y1, x0:x1], device, dtype, self_ensemble)
        wy = blend_ramp(y1 - y0, overlap, y0 > 0, y1 < h)
        wx = blend_ramp(x1 - x0, overlap, x0 > 0, x1 < w)
        wt = torch.from_numpy(np.outer(wy, wx))[None, None]
        out[..., y0:y1, x0:x1] += pred * wt
        wsum[..., y0:y1, x0:x1] += wt
        done += 1
        if progress is not None:
            progress(done)
    return out / wsum


def derain_array(model: torch.nn.Module, rgb: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`derain_tensor` for a float (H, W, 3) array in [0, 1]; returns float32 (H, W, 3) clipped to [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {rgb.shape}")
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    y = derain_tensor(model, x, **kwargs)
    return y[0].permute(1, 2, 0).clamp_(0.0, 1.0).numpy()
