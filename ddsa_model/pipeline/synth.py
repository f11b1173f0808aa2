"""Synthetic rain streaks (numpy only): sparse seeds smeared by an oriented, blurred line kernel,
screen-blended over a clean image.

Model: a seed field S (each pixel a seed with probability ``density``, intensity uniform in
[0.5, 1]) is convolved with a kernel K that is a line segment of ``length`` px along the fall
direction d = (sin θ, cos θ) (x right, y down; θ = ``angle`` in degrees from vertical, positive
θ runs from top-left to bottom-right) blurred by an isotropic Gaussian of σ = ``blur`` px, peak 1.
The rain layer R = brightness · clip(S ∗ K, 0, 1) is blended as ``I + R − I·R`` (screen), which
keeps values in [0, 1] and only brightens.
"""
from __future__ import annotations

import math

import numpy as np


def streak_kernel(length: float, angle: float, blur: float) -> np.ndarray:
    """(K, K) float64 kernel with peak 1: a ``length``-px segment at ``angle`` degrees from
    vertical, blurred with a Gaussian of σ = max(blur, 0.5) px. K is odd."""
    sigma = max(float(blur), 0.5)
    length = max(float(length), 1.0)
    half = int(math.ceil(length / 2 + 3 * sigma))
    ys, xs = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    theta = math.radians(angle)
    dx, dy = math.sin(theta), math.cos(theta)
    # Distance from each pixel centre to the segment {t·d : |t| ≤ length/2}.
    t = np.clip(xs * dx + ys * dy, -length / 2, length / 2)
    dist2 = (xs - t * dx) ** 2 + (ys - t * dy) ** 2
    k = np.exp(-dist2 / (2 * sigma * sigma))
    return k / k.max()


def _convolve_same(field: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear (zero-padded, not circular) 2-D convolution, output the size of ``field``."""
    h, w = field.shape
    kh, kw = kernel.shape
    shape = (h + kh - 1, w + kw - 1)
    out = np.fft.irfft2(np.fft.rfft2(field, shape) * np.fft.rfft2(kernel, shape), shape)
    return out[kh // 2:kh // 2 + h, kw // 2:kw // 2 + w]


def rain_layer(
    height: int,
    width: int,
    *,
    density: float = 0.005,
    length: float = 20.0,
    angle: float = 0.0,
    blur: float = 0.8,
    brightness: float = 0.7,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """(height, width) float32 rain layer in [0, brightness] (see the module docstring)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1] (fraction of pixels seeding a streak), got {density}")
    if length <= 0 or blur < 0:
        raise ValueError(f"length must be > 0 and blur >= 0, got length={length}, blur={blur}")
    if not 0.0 <= brightness <= 1.0:
        raise ValueError(f"brightness must be in [0, 1], got {brightness}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    seeds = rng.random((height, width)) < density
    field = np.where(seeds, rng.uniform(0.5, 1.0, size=(height, width)), 0.0)
    layer = _convolve_same(field, streak_kernel(length, angle, blur))
    return (brightness * np.clip(layer, 0.0, 1.0)).astype(np.float32)


def add_rain(
    image: np.ndarray,
    *,
    density: float = 0.005,
    length: float = 20.0,
    angle: float = 0.0,
    blur: float = 0.8,
    brightness: float = 0.7,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Add rain streaks to ``image`` and return a new array of the same shape and dtype.

    image: (H, W, C) or (H, W); uint8 (0–255), uint16 (0–65535) or float in [0, 1]. An alpha
    channel (C = 4, or C = 2 for gray+alpha) is passed through unchanged.
    density: fraction of pixels seeding a streak (0.002 light … 0.05 heavy).
    length: streak length in px; angle: degrees from vertical (positive: top-left → bottom-right);
    blur: Gaussian σ in px of the streaks; brightness: peak streak intensity in [0, 1].
    rng: a numpy Generator or an int seed; the same seed gives the same rain.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"image must be (H, W) or (H, W, C) with C in 1..4, got shape {image.shape}")
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        scale = 1.0
    else:
        raise ValueError(f"image dtype must be uint8, uint16 or float, got {image.dtype}")
    h, w = image.shape[:2]
    rain = rain_layer(h, w, density=density, length=length, angle=angle, blur=blur,
                      brightness=brightness, rng=rng).astype(np.float64)
    img = image.astype(np.float64) / scale
    if img.ndim == 2:
        out = img + rain - img * rain
    else:
        colour = img.shape[2] if img.shape[2] in (1, 3) else img.shape[2] - 1
        out = img.copy()
        c = img[:, :, :colour]
        out[:, :, :colour] = c + rain[:, :, None] - c * rain[:, :, None]
    if scale == 1.0:
        return out.astype(image.dtype)
    return np.clip(np.round(out * scale), 0, scale).astype(image.dtype)
