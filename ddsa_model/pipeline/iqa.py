"""No-reference image quality for rainy photos without ground truth: NIQE and BRISQUE (lower = better).

NIQE (Mittal, Soundararajan, Bovik 2013) follows the original MATLAB release (``computequality.m``):

1. RGB -> gray with MATLAB's ``rgb2gray`` weights on 8-bit values, rounded (uint8 result).
2. Crop to whole 96×96 blocks; two scales (the second by MATLAB ``imresize(im, 0.5)``: bicubic
   with antialiasing, symmetric border).
3. MSCN coefficients ``(I - μ) / (σ + 1)`` with a 7×7 Gaussian (σ = 7/6) and replicate borders.
4. Per block (96 px at scale 1, 48 px at scale 2): an asymmetric generalised Gaussian (AGGD) fit of
   the MSCN values (shape, mean of left/right scales) and of their products with the 4 neighbours
   (right, down, down-right, down-left; circular shift within the block) -> 18 numbers per scale.
5. Fit a multivariate Gaussian to the 36-D block features (NaN rows dropped for the covariance)
   and report the Mahalanobis-like distance to the pristine model (``mu_pris_param``,
   ``cov_pris_param`` from an ``.npz`` file): ``sqrt(d^T pinv((Σp + Σd)/2) d)``.

BRISQUE uses OpenCV's contrib ``quality`` module (``opencv-contrib-python-headless``, the
optional ``iqa`` extra) with the LIVE model/range files in OpenCV's YAML format.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from .metrics import to_uint8

__all__ = ["NIQE", "niqe", "niqe_features", "matlab_imresize_half", "brisque", "aggd_fit"]

_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])  # MATLAB rgb2gray
_BLOCK = 96


@lru_cache(maxsize=1)
def _aggd_table() -> Tuple[np.ndarray, np.ndarray]:
    gam = 0.2 + 0.001 * np.arange(9801)  # MATLAB 0.2:0.001:10
    lg = np.vectorize(math.lgamma)
    r_gam = np.exp(2.0 * lg(2.0 / gam) - lg(1.0 / gam) - lg(3.0 / gam))
    return gam, r_gam


def aggd_fit(vec: np.ndarray) -> Tuple[float, float, float]:
    """Moment-matching AGGD fit of 1-D data: (shape α, left scale β_l, right scale β_r).

    Scales are NaN when the data have no negative (β_l) or no positive (β_r) values.
    """
    vec = np.asarray(vec, dtype=np.float64).ravel()
    gam, r_gam = _aggd_table()
    neg, pos = vec[vec < 0], vec[vec > 0]
    left = math.sqrt(np.mean(neg * neg)) if neg.size else float("nan")
    right = math.sqrt(np.mean(pos * pos)) if pos.size else float("nan")
    g = left / right
    mean_sq = float(np.mean(vec * vec))
    rhat = float(np.mean(np.abs(vec))) ** 2 / mean_sq if mean_sq > 0 else float("nan")
    rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = float(gam[np.argmin((r_gam - rnorm) ** 2)]) if np.isfinite(rnorm) else float(gam[0])
    k = math.sqrt(math.gamma(1.0 / alpha) / math.gamma(3.0 / alpha))
    return alpha, left * k, right * k


def _block_features(block: np.ndarray) -> list:
    alpha, bl, br = aggd_fit(block)
    feat = [alpha, (bl + br) / 2.0]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = block * np.roll(block, shift, axis=(0, 1))
        alpha, bl, br = aggd_fit(pair)
        mean = (br - bl) * math.gamma(2.0 / alpha) / math.gamma(1.0 / alpha)
        feat += [alpha, mean, bl, br]
    return feat


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    a2, a3 = a * a, a * a * a
    return ((1.5 * a3 - 2.5 * a2 + 1) * (a <= 1)
            + (-0.5 * a3 + 2.5 * a2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _resize_matrix(n: int, scale: float) -> np.ndarray:
    """(ceil(n·scale), n) matrix of MATLAB's antialiased bicubic resampling along one axis."""
    out = int(math.ceil(n * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])  # symmetric padding
    cols = mirror[(idx.astype(np.int64) - 1) % (2 * n)]
    m = np.zeros((out, n))
    np.add.at(m, (np.repeat(np.arange(out), taps), cols.ravel()), w.ravel())
    return m


def matlab_imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased) of a float 2-D array."""
    h, w = img.shape
    return _resize_matrix(h, 0.5) @ img @ _resize_matrix(w, 0.5).T


def _gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _filter_replicate(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    k = window.shape[0]
    r = k // 2
    padded = np.pad(img, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, (k, k))
    return np.einsum("ijkl,kl->ij", win, window)


def _to_gray(img) -> np.ndarray:
    u8 = to_uint8(img)
    if u8.ndim == 3 and u8.shape[2] == 1:
        u8 = u8[..., 0]
    if u8.ndim == 2:
        return u8.astype(np.float64)
    if u8.shape[2] not in (3, 4):
        raise ValueError(f"expected a gray or RGB image, got {u8.shape[2]} channels")
    return np.floor(u8[..., :3].astype(np.float64) @ _GRAY + 0.5)  # uint8 rounding as MATLAB


def niqe_features(gray: np.ndarray, window: Optional[np.ndarray] = None) -> np.ndarray:
    """(n_blocks, 36) NIQE block features of a float 2-D image in [0, 255] (at least 96×96)."""
    window = _gaussian_window() if window is None else window
    h, w = gray.shape
    bh, bw = h // _BLOCK, w // _BLOCK
    if bh == 0 or bw == 0:
        raise ValueError(f"NIQE needs an image of at least {_BLOCK}x{_BLOCK} pixels, got {w}x{h}")
    img = gray[: bh * _BLOCK, : bw * _BLOCK].astype(np.float64)
    scales = []
    for scale in (1, 2):
        mu = _filter_replicate(img, window)
        sigma = np.sqrt(np.abs(_filter_replicate(img * img, window) - mu * mu))
        mscn = (img - mu) / (sigma + 1.0)
        b = _BLOCK // scale
        feats = [_block_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b])
                 for i in range(bh) for j in range(bw)]
        scales.append(np.asarray(feats))
        if scale == 1:
            img = matlab_imresize_half(img)
    return np.concatenate(scales, axis=1)


class NIQE:
    """NIQE scorer with pristine parameters from an ``.npz`` (``mu_pris_param``, ``cov_pris_param``),
    e.g. ``niqe_pris_params.npz`` of the MATLAB release.

    A ``gaussian_window`` array in the file is ignored: the window is recomputed (MATLAB's
    ``fspecial('gaussian', 7, 7/6)``). Stored copies differ from it in the last bits, and NIQE's
    AGGD shape search on a 0.001 grid turns such differences into ~1e-3 changes of the score.
    """

    def __init__(self, params_path: str):
        if not os.path.isfile(params_path):
            raise FileNotFoundError(f"NIQE parameter file not found: {params_path}")
        try:
            with np.load(params_path) as p:
                self.mu = np.asarray(p["mu_pris_param"], np.float64).reshape(-1)
                self.cov = np.asarray(p["cov_pris_param"], np.float64)
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{params_path}: not a NIQE parameter file "
                             f"(needs arrays mu_pris_param (36,) and cov_pris_param (36, 36)): {e}") from None
        if self.mu.shape != (36,) or self.cov.shape != (36, 36):
            raise ValueError(f"{params_path}: expected mu (36,) and cov (36, 36), got {self.mu.shape}, {self.cov.shape}")

    def __call__(self, img) -> float:
        """NIQE of an RGB or gray image (uint8, or float in [0, 1]); lower is better."""
        feats = niqe_features(_to_gray(img))
        mu_d = np.nanmean(feats, axis=0)
        complete = feats[~np.isnan(feats).any(axis=1)]
        if complete.shape[0] < 2:
            raise ValueError("NIQE needs at least two 96x96 blocks with finite features "
                             f"(image has {feats.shape[0]} blocks)")
        cov_d = np.cov(complete, rowvar=False)
        d = self.mu - mu_d
        return float(math.sqrt(max(d @ np.linalg.pinv((self.cov + cov_d) / 2.0) @ d, 0.0)))


def niqe(img, params_path: str) -> float:
    """NIQE of one image with the pristine parameters at ``params_path`` (see :class:`NIQE`)."""
    return NIQE(params_path)(img)


def _cv2_quality():
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is None or not hasattr(cv2, "quality"):
        raise RuntimeError("BRISQUE needs OpenCV's contrib quality module: "
                           "pip install opencv-contrib-python-headless  (or: pip install 'ddsa[iqa]')")
    return cv2


def brisque(img, model_path: str, range_path: str) -> float:
    """BRISQUE score of an RGB or gray image (uint8, or float in [0, 1]); lower is better.

    Computed by OpenCV's ``cv2.quality.QualityBRISQUE`` with the SVR model and feature ranges in
    OpenCV YAML format (``brisque_model_live.yml``, ``brisque_range_live.yml``).
    """
    for p in (model_path, range_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"BRISQUE model file not found: {p}")
    cv2 = _cv2_quality()
    u8 = to_uint8(img)
    if u8.ndim == 3 and u8.shape[2] == 4:
        u8 = u8[..., :3]
    bgr = u8[..., ::-1].copy() if u8.ndim == 3 and u8.shape[2] == 3 else np.ascontiguousarray(u8)
    return float(cv2.quality.QualityBRISQUE_compute(bgr, model_path, range_path)[0])
