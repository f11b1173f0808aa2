"""Synthetic rain (numpy only): multi-layer streaks with per-streak angle jitter, veiling, presets.

Two generators live here.

**Layered rain** (:func:`synthesize_rain`, presets ``light`` / ``heavy`` / ``mixed``). An image's
rain is drawn from a :class:`RainParams`: a rain angle θ (degrees from vertical, x right, y down,
positive θ runs top-left → bottom-right), several :class:`LayerParams` streak layers (near: long,
wide, bright, sparse; far: short, thin, faint, dense) and a veil. Every field of a parameter
class is a ``(low, high)`` range drawn uniformly once per image (and per layer).

* A layer of density ρ (streaks per 1000 px²) holds Poisson(ρ·area/1000) streaks with centres
  uniform over the image grown by a margin (so streaks cross the borders). Streak i has length
  ``length · U(0.6, 1.4)`` px, angle ``θ + offset + N(0, angle_spread)`` degrees and intensity
  ``brightness · U(0.6, 1)``; its ends fade linearly over the outer 20 % of the length (the
  motion-blur trail of a falling drop). Streaks are drawn as anti-aliased (bilinearly splatted)
  segments, then the layer is blurred by a Gaussian of σ = sqrt((width/2.355)² + blur²) px and
  scaled so that an isolated in-focus streak peaks at its intensity (``blur`` is defocus: it
  widens and dims). Layers are clipped to [0, 1] and combined as R = 1 − Π(1 − R_k).
* Veil (rain accumulation): α(x, y) = veil · (1 + variation · n(x, y)) clipped to [0, 1], with n
  a smooth unit-variance field (bilinearly interpolated Gaussian noise on a ``veil_scale``-px
  grid); atmospheric light A is a bright grey ``atmosphere`` per image, each channel shifted by
  N(0, tint).
* Composition, per colour channel with B the clean image in [0, 1]:
  ``V = B·(1 − α) + α·A`` then ``I = V + R − V·R`` (screen: only brightens, stays in [0, 1]).

Calibration: rainy-vs-clean PSNR-Y (dB, 8-bit, MATLAB Y) over the first 40 Clean208 photos
(481×321 BSDS500 images, sorted by name), image i with ``rng = default_rng([0, i])``, measured by
:func:`preset_statistics` (Rain100L's rainy inputs score 26.90 dB, Rain100H's about 13.5 dB as published):

    ======  ===============  ======  ===============
    preset  mean ± std       median  min … max
    ======  ===============  ======  ===============
    light   27.21 ± 2.52     26.69   22.03 … 33.13
    heavy   14.05 ± 2.12     13.52   10.73 … 18.71
    mixed   21.58 ± 4.44     20.98   12.83 … 30.54
    ======  ===============  ======  ===============

Speed (one core, float32 RGB, light … heavy): 0.5–1 ms for a 64×64 crop, 1–1.5 ms for 128×128 and
10–22 ms for 481×321 (the range spans machine load).

**Single-layer streaks** (:func:`add_rain`, :func:`rain_layer`, the per-parameter mode of
``ddsa-synth``): a seed field S (each pixel a seed with probability ``density``, intensity
uniform in [0.5, 1]) is convolved with a kernel K that is a line segment of ``length`` px along
the fall direction d = (sin θ, cos θ) blurred by an isotropic Gaussian of σ = ``blur`` px, peak
1. The rain layer R = brightness · clip(S ∗ K, 0, 1) is screen-blended as ``I + R − I·R``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

Range = tuple[float, float]

__all__ = [
    "LayerParams", "RainParams", "RainComponents", "PRESETS", "MIXED_SEVERITY", "preset_params",
    "interpolate_params", "streak_layer", "rain_components", "compose_rain", "synthesize_rain",
    "preset_statistics", "streak_kernel", "rain_layer", "add_rain",
]


def _check_range(name: str, r: Range, lo: float | None = None, hi: float | None = None) -> None:
    if len(r) != 2 or not r[0] <= r[1]:
        raise ValueError(f"{name} must be a (low, high) range with low <= high, got {r!r}")
    if (lo is not None and r[0] < lo) or (hi is not None and r[1] > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {r!r}")


@dataclass(frozen=True)
class LayerParams:
    """One streak layer; each field is a (low, high) range drawn once per image.

    density: streaks per 1000 px² of image; length: mean streak length in px; width: FWHM of the
    in-focus cross-section in px; brightness: peak intensity of an isolated streak in [0, 1];
    blur: Gaussian defocus σ in px; angle_spread: std in degrees of each streak's angle around
    the layer angle; angle_offset: layer angle minus the image's rain angle, degrees.
    """

    density: Range = (1.0, 1.0)
    length: Range = (20.0, 20.0)
    width: Range = (1.0, 1.0)
    brightness: Range = (0.5, 0.5)
    blur: Range = (0.0, 0.0)
    angle_spread: Range = (0.0, 0.0)
    angle_offset: Range = (0.0, 0.0)

    def __post_init__(self) -> None:
        _check_range("density", self.density, 0.0)
        _check_range("length", self.length, 0.5)
        _check_range("width", self.width, 0.1)
        _check_range("brightness", self.brightness, 0.0, 1.0)
        _check_range("blur", self.blur, 0.0)
        _check_range("angle_spread", self.angle_spread, 0.0)
        _check_range("angle_offset", self.angle_offset)


@dataclass(frozen=True)
class RainParams:
    """Rain of one image: streak layers and veil; ranges are drawn once per image.

    angle: rain angle in degrees from vertical (positive: top-left → bottom-right);
    veil: mean veiling opacity α in [0, 1]; veil_variation: relative amplitude of α's smooth
    spatial variation; veil_scale: its correlation length in px; atmosphere: grey level of the
    atmospheric light A in [0, 1]; tint: std of A's per-channel deviation.
    """

    layers: tuple[LayerParams, ...] = (LayerParams(),)
    angle: Range = (0.0, 0.0)
    veil: Range = (0.0, 0.0)
    veil_variation: Range = (0.0, 0.0)
    veil_scale: float = 96.0
    atmosphere: Range = (0.9, 0.9)
    tint: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not all(isinstance(layer, LayerParams) for layer in self.layers):
            raise ValueError("layers must be LayerParams")
        _check_range("angle", self.angle, -90.0, 90.0)
        _check_range("veil", self.veil, 0.0, 1.0)
        _check_range("veil_variation", self.veil_variation, 0.0)
        _check_range("atmosphere", self.atmosphere, 0.0, 1.0)
        if self.veil_scale <= 0 or self.tint < 0:
            raise ValueError(f"veil_scale must be > 0 and tint >= 0, got {self.veil_scale}, {self.tint}")


#: Rain100L-like: thin, faint-to-moderate streaks in one main direction, no veil.
LIGHT = RainParams(
    layers=(
        LayerParams(density=(0.03, 0.08), length=(30, 50), width=(2.0, 3.0), brightness=(0.3, 0.5),
                    blur=(0.3, 1.0), angle_spread=(1, 4), angle_offset=(-3, 3)),
        LayerParams(density=(1.0, 2.0), length=(12, 30), width=(1.5, 2.2), brightness=(0.4, 0.65),
                    blur=(0.0, 0.3), angle_spread=(1, 3)),
        LayerParams(density=(1.0, 2.0), length=(6, 12), width=(0.8, 1.2), brightness=(0.1, 0.2),
                    angle_spread=(2, 5), angle_offset=(-3, 3)),
    ),
    angle=(-25, 25), veil=(0.0, 0.02), veil_variation=(0.2, 0.5), atmosphere=(0.8, 0.95), tint=0.02,
)

#: Rain100H-like: dense, bright, wide streaks at several depths plus a veil.
HEAVY = RainParams(
    layers=(
        LayerParams(density=(0.2, 0.4), length=(50, 90), width=(3, 5), brightness=(0.6, 0.85),
                    blur=(0.5, 1.5), angle_spread=(3, 8), angle_offset=(-5, 5)),
        LayerParams(density=(2.0, 3.5), length=(25, 45), width=(2.0, 3.0), brightness=(0.6, 0.85),
                    blur=(0.0, 0.7), angle_spread=(2, 6)),
        LayerParams(density=(4.0, 8.0), length=(10, 20), width=(1.0, 1.5), brightness=(0.25, 0.4),
                    blur=(0.0, 0.5), angle_spread=(3, 8), angle_offset=(-5, 5)),
    ),
    angle=(-30, 30), veil=(0.15, 0.3), veil_variation=(0.2, 0.5), atmosphere=(0.8, 0.95), tint=0.02,
)

PRESETS: dict[str, RainParams] = {"light": LIGHT, "heavy": HEAVY}
PRESET_NAMES = ("light", "heavy", "mixed")

#: ``mixed`` draws a severity s ~ U(MIXED_SEVERITY) per image and uses
#: ``interpolate_params(LIGHT, HEAVY, s)`` (s = 0: light, s = 1: heavy).
MIXED_SEVERITY: Range = (-0.15, 1.05)


def _lerp_range(a: Range, b: Range, s: float, geometric: bool) -> Range:
    if s == 0.0 or s == 1.0:
        return tuple(a if s == 0.0 else b)  # type: ignore[return-value]
    out = []
    for x, y in zip(a, b):
        if geometric and x > 0 and y > 0:
            out.append(float(x * (y / x) ** s))
        else:
            out.append(float(x + (y - x) * s))
    lo, hi = sorted(out)
    return lo, hi


_GEOMETRIC = {"density", "length", "width", "brightness", "veil"}


def interpolate_params(a: RainParams, b: RainParams, s: float) -> RainParams:
    """Parameters between ``a`` (s = 0) and ``b`` (s = 1); s outside [0, 1] extrapolates.

    Range ends of density, length, width, brightness and veil are interpolated geometrically
    (when both are > 0), the rest linearly; results are clipped to the valid domains. Both must
    have the same number of layers.
    """
    if len(a.layers) != len(b.layers):
        raise ValueError(f"cannot interpolate {len(a.layers)} layers with {len(b.layers)}")

    bounds = {"brightness": (0.0, 1.0), "veil": (0.0, 1.0), "atmosphere": (0.0, 1.0), "angle": (-90.0, 90.0),
              "angle_offset": (-90.0, 90.0), "length": (0.5, np.inf), "width": (0.1, np.inf)}

    def clip(name: str, r: Range) -> Range:
        lo, hi = bounds.get(name, (0.0, np.inf))
        return float(np.clip(r[0], lo, hi)), float(np.clip(r[1], lo, hi))

    layers = []
    for la, lb in zip(a.layers, b.layers):
        kw = {f.name: clip(f.name, _lerp_range(getattr(la, f.name), getattr(lb, f.name), s, f.name in _GEOMETRIC))
              for f in fields(LayerParams)}
        layers.append(LayerParams(**kw))
    kw = {name: clip(name, _lerp_range(getattr(a, name), getattr(b, name), s, name in _GEOMETRIC))
          for name in ("angle", "veil", "veil_variation", "atmosphere")}
    return RainParams(layers=tuple(layers), veil_scale=a.veil_scale + (b.veil_scale - a.veil_scale) * s,
                      tint=max(0.0, a.tint + (b.tint - a.tint) * s), **kw)


def preset_params(preset: str | RainParams, rng: np.random.Generator | None = None) -> RainParams:
    """The :class:`RainParams` of a preset name (``light``, ``heavy``, or ``mixed``, which draws its
    severity from ``rng``); a RainParams is returned as it is."""
    if isinstance(preset, RainParams):
        return preset
    if preset == "mixed":
        rng = rng if rng is not None else np.random.default_rng()
        return interpolate_params(LIGHT, HEAVY, float(rng.uniform(*MIXED_SEVERITY)))
    if preset not in PRESETS:
        raise ValueError(f"unknown rain preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    return PRESETS[preset]


def _rng(rng: np.random.Generator | int | Sequence[int] | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _draw(r: Range, rng: np.random.Generator) -> float:
    return float(rng.uniform(r[0], r[1]))


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float32 array, zero padding, output the same size."""
    if sigma < 0.2:
        return img
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-x * x / (2.0 * sigma * sigma))
    k = (k / k.sum()).astype(np.float32)
    h, w = img.shape
    p = np.zeros((h + 2 * r, w), np.float32)
    p[r:r + h] = img
    out = k[0] * p[0:h]
    for i in range(1, 2 * r + 1):
        out += k[i] * p[i:i + h]
    p = np.zeros((h, w + 2 * r), np.float32)
    p[:, r:r + w] = out
    out = k[0] * p[:, 0:w]
    for i in range(1, 2 * r + 1):
        out += k[i] * p[:, i:i + w]
    return out


_TAPER = 0.2  # fraction of a streak's length over which each end fades in/out
_SPACING = 0.5  # max distance in px between splatted points along a streak


def streak_layer(
    height: int,
    width: int,
    *,
    density: float,
    length: float,
    streak_width: float = 1.0,
    brightness: float = 0.5,
    blur: float = 0.0,
    angle: float = 0.0,
    angle_spread: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """(height, width) float32 layer in [0, 1] of one streak layer with fixed (drawn) values.

    density: streaks per 1000 px²; length: mean length in px; streak_width: FWHM in px;
    brightness: peak intensity; blur: defocus σ in px; angle, angle_spread: degrees (see the
    module docstring for the per-streak jitter).
    """
    rng = _rng(rng)
    margin = 0.7 * length + 3.0 * streak_width + 3.0 * blur + 2.0
    area = (height + 2 * margin) * (width + 2 * margin)
    n = int(rng.poisson(density * area / 1000.0))
    acc = np.zeros((height + 2) * (width + 2), np.float32)
    if n:
        cx = rng.uniform(-margin, width + margin, n)
        cy = rng.uniform(-margin, height + margin, n)
        lengths = length * rng.uniform(0.6, 1.4, n)
        theta = np.radians(angle + angle_spread * rng.standard_normal(n))
        intensity = brightness * rng.uniform(0.6, 1.0, n)
        m = int(math.ceil(1.4 * length / _SPACING)) + 1
        t = np.linspace(-0.5, 0.5, m, dtype=np.float32)
        taper = np.clip((0.5 - np.abs(t)) / _TAPER, 0.0, 1.0).astype(np.float32)
        xs = cx[:, None].astype(np.float32) + (lengths * np.sin(theta)).astype(np.float32)[:, None] * t
        ys = cy[:, None].astype(np.float32) + (lengths * np.cos(theta)).astype(np.float32)[:, None] * t
        wts = (intensity * lengths / (m - 1)).astype(np.float32)[:, None] * taper
        xs, ys, wts = xs.ravel(), ys.ravel(), wts.ravel()
        keep = (xs >= -1.0) & (xs < width) & (ys >= -1.0) & (ys < height)
        xs, ys, wts = xs[keep], ys[keep], wts[keep]
        x0, y0 = np.floor(xs), np.floor(ys)
        fx, fy = xs - x0, ys - y0
        idx = (y0.astype(np.int64) + 1) * (width + 2) + (x0.astype(np.int64) + 1)
        size = acc.size
        acc += np.bincount(idx, wts * (1 - fx) * (1 - fy), size).astype(np.float32)
        acc += np.bincount(idx + 1, wts * fx * (1 - fy), size).astype(np.float32)
        acc += np.bincount(idx + width + 2, wts * (1 - fx) * fy, size).astype(np.float32)
        acc += np.bincount(idx + width + 3, wts * fx * fy, size).astype(np.float32)
    layer = acc.reshape(height + 2, width + 2)[1:height + 1, 1:width + 1]
    sigma_w = streak_width / 2.3548
    layer = _gaussian_blur(np.ascontiguousarray(layer), math.hypot(sigma_w, blur))
    layer *= math.sqrt(2.0 * math.pi * (sigma_w * sigma_w + 1.0 / 6.0))
    return np.clip(layer, 0.0, 1.0)


@dataclass(frozen=True)
class RainComponents:
    """Drawn rain of one image: ``streaks`` R (H, W) float32 in [0, 1], veil opacity ``alpha``
    (H, W) float32 in [0, 1], atmospheric light ``atmosphere`` (3,) float32 RGB in [0, 1], and the
    concrete ``params`` they were drawn from."""

    streaks: np.ndarray
    alpha: np.ndarray
    atmosphere: np.ndarray
    params: RainParams


def _smooth_noise(height: int, width: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """(height, width) float32 field, ~unit variance, bilinear interpolation of N(0, 1) values on
    a grid of spacing ``scale`` px with a random phase."""
    gh, gw = int(height / scale) + 2, int(width / scale) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    oy, ox = rng.uniform(0, 1, 2)

    def interp(n: int, g: int, o: float) -> tuple[np.ndarray, np.ndarray]:
        pos = o + np.arange(n) / scale
        i0 = np.minimum(np.floor(pos).astype(np.int64), g - 2)
        return i0, (pos - i0).astype(np.float32)

    iy, fy = interp(height, gh, oy)
    ix, fx = interp(width, gw, ox)
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy + 1] * fy[:, None]          # (height, gw)
    field = rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx                      # (height, width)
    return field * np.float32(1.5)  # bilinear interpolation lowers the variance to ~4/9 on average


def rain_components(
    height: int,
    width: int,
    preset: str | RainParams = "light",
    rng: np.random.Generator | int | Sequence[int] | None = None,
) -> RainComponents:
    """Draw the rain of one (height, width) image from a preset name or :class:`RainParams`."""
    rng = _rng(rng)
    params = preset_params(preset, rng)
    angle = _draw(params.angle, rng)
    streaks = np.zeros((height, width), np.float32)
    for lp in params.layers:
        vals = {f.name: _draw(getattr(lp, f.name), rng) for f in fields(LayerParams)}
        layer = streak_layer(
            height, width, density=vals["density"], length=vals["length"], streak_width=vals["width"],
            brightness=vals["brightness"], blur=vals["blur"], angle=angle + vals["angle_offset"],
            angle_spread=vals["angle_spread"], rng=rng,
        )
        streaks = streaks + layer - streaks * layer
    veil, variation = _draw(params.veil, rng), _draw(params.veil_variation, rng)
    noise = _smooth_noise(height, width, params.veil_scale, rng)
    alpha = np.clip(veil * (1.0 + variation * noise), 0.0, 1.0).astype(np.float32)
    grey = _draw(params.atmosphere, rng)
    atmosphere = np.clip(grey + params.tint * rng.standard_normal(3), 0.0, 1.0).astype(np.float32)
    return RainComponents(streaks, alpha, atmosphere, params)


def compose_rain(clean: np.ndarray, rain: RainComponents) -> np.ndarray:
    """Rainy image from a clean (H, W, C) float image in [0, 1] with C = 1 or 3 (gray uses the mean of
    A): ``V = B·(1 − α) + α·A``, ``I = V + R − V·R``; float32 (H, W, C)."""
    b = np.asarray(clean, np.float32)
    a = rain.atmosphere if b.shape[2] == 3 else np.full(b.shape[2], rain.atmosphere.mean(), np.float32)
    alpha, r = rain.alpha[:, :, None], rain.streaks[:, :, None]
    v = a - b
    v *= alpha
    v += b                      # V = B + α·(A − B)
    out = 1.0 - v
    out *= r
    out += v                    # I = V + R·(1 − V)
    return out


def _split_dtype(image: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(float array in [0, 1] of the whole image, the dtype's scale, number of colour channels)."""
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
    colour = 1 if image.ndim == 2 else (image.shape[2] if image.shape[2] in (1, 3) else image.shape[2] - 1)
    return image, scale, colour


def _join_dtype(out: np.ndarray, like: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return out.astype(like.dtype)
    return np.clip(np.round(out * scale), 0, scale).astype(like.dtype)


def _rain_on_colour(image: np.ndarray, dtype: type, rain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``image`` with its colour channels, as ``dtype`` in [0, 1] and (H, W, C), replaced by ``rain`` of
    them; an alpha channel passes through. Returns the shape and dtype of ``image``."""
    image, scale, colour = _split_dtype(image)
    img = image.astype(dtype) / dtype(scale)
    img3 = img[:, :, None] if img.ndim == 2 else img
    out = img3.copy()
    out[:, :, :colour] = rain(img3[:, :, :colour])
    return _join_dtype(out[:, :, 0] if img.ndim == 2 else out, image, scale)


def synthesize_rain(
    image: np.ndarray,
    preset: str | RainParams = "light",
    rng: np.random.Generator | int | Sequence[int] | None = None,
) -> np.ndarray:
    """Add layered rain (streaks + veil) to ``image``; returns a new array of the same shape and dtype.

    image: (H, W) or (H, W, C), uint8 (0–255), uint16 (0–65535) or float in [0, 1]; an alpha
    channel (C = 2 or 4) passes through unchanged. preset: ``light``, ``heavy``, ``mixed`` or a
    :class:`RainParams`. rng: a numpy Generator or seed; the same seed gives the same rain.
    """
    return _rain_on_colour(image, np.float32,
                           lambda clean: compose_rain(clean, rain_components(*clean.shape[:2], preset, rng)))


def preset_statistics(
    images: Sequence[np.ndarray],
    preset: str | RainParams,
    seed: int = 0,
) -> dict:
    """Rainy-vs-clean PSNR-Y (dB, 8-bit MATLAB Y) of ``preset`` on clean uint8 (H, W, 3) images;
    image i gets ``rng = default_rng([seed, i])``. Returns ``{"mean", "std", "median", "min",
    "max", "n", "psnr"}`` (``psnr``: the per-image list)."""
    from .metrics import psnr_y

    values = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            raise ValueError(f"preset_statistics takes uint8 images, got {img.dtype}")
        values.append(psnr_y(synthesize_rain(img, preset, np.random.default_rng([seed, i])), img))
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size), "psnr": v.tolist()}



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
    rng = _rng(rng)
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
    def screen(clean: np.ndarray) -> np.ndarray:
        rain = rain_layer(*clean.shape[:2], density=density, length=length, angle=angle, blur=blur,
                          brightness=brightness, rng=rng).astype(np.float64)[:, :, None]
        return clean + rain - clean * rain

    return _rain_on_colour(image, np.float64, screen)
