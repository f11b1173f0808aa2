"""Full-reference image metrics as deraining papers report them: PSNR and SSIM on the Y channel.

Protocol (the MATLAB evaluation scripts of the Restormer / MPRNet / DDSA family):

* Images are quantised to 8 bit first (a network output in [0, 1] is rounded to uint8, exactly as
  it would be when saved to PNG).
* RGB -> Y with ITU-R BT.601 as in MATLAB's ``rgb2ycbcr`` on uint8 input:
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with R, G, B the 8-bit values, so Y lies in
  [16, 235]. MATLAB returns uint8 for uint8 input, i.e. Y is *rounded*; ``round_y=True`` (the
  default) does the same. Grayscale images are used as they are.
* PSNR = 10 log10(255² / MSE) over the Y plane (``inf`` for identical images).
* SSIM of Wang et al. (2004, ``ssim_index.m``): 11×11 Gaussian window, σ = 1.5, K1 = 0.01,
  K2 = 0.03, L = 255, statistics from the *valid* region of the filtered image (no padding), SSIM
  map averaged over that region. This equals scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255`` (which filters
  with padding and then crops the 5-pixel border).

Everything here is plain numpy in float64.
"""
from __future__ import annotations

from typing import Union

import numpy as np

ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821  (torch is optional here)

__all__ = [
    "to_uint8",
    "rgb_to_y",
    "psnr",
    "ssim",
    "psnr_y",
    "ssim_y",
    "gaussian_kernel",
]

_K1 = 0.01
_K2 = 0.03


def to_uint8(img: ArrayLike) -> np.ndarray:
    """Quantise an image to uint8, channels last.

    Accepts a uint8 array (H, W) / (H, W, C) returned unchanged, a uint16 array (scaled by
    255/65535), a float array or torch tensor in [0, 1] — (H, W), (H, W, C) or a tensor (C, H, W) /
    (1, C, H, W) — which is clipped, multiplied by 255 and rounded half to even (as numpy's
    ``round``; PNG writers in this package use the same rule).
    """
    if not isinstance(img, np.ndarray):
        try:
            import torch
        except ImportError:  # pragma: no cover
            raise TypeError(f"expected a numpy array, got {type(img).__name__}") from None
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"expected a numpy array or torch tensor, got {type(img).__name__}")
        t = img.detach().to("cpu", torch.float64)
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected a single image, got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.dim() == 3:
            t = t.permute(1, 2, 0)
        img = t.numpy()
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got {img.shape}")
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.round(img.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"unsupported image dtype {img.dtype} (use uint8, uint16 or float in [0, 1])")
    return np.round(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_to_y(img: ArrayLike, round_y: bool = True) -> np.ndarray:
    """BT.601 luma of an image in MATLAB's 8-bit convention, float64 (H, W) in [16, 235].

    A grayscale (H, W) or (H, W, 1) image is returned as float64 unchanged. RGBA drops alpha.
    ``round_y`` rounds Y to integers as MATLAB's ``rgb2ycbcr`` does for uint8 input.
    """
    u8 = to_uint8(img)
    if u8.ndim == 2:
        return u8.astype(np.float64)
    if u8.shape[2] == 1:
        return u8[..., 0].astype(np.float64)
    if u8.shape[2] not in (3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got {u8.shape[2]}")
    rgb = u8[..., :3].astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    # MATLAB rounds half away from zero; Y > 0 so floor(y + 0.5) is the same thing.
    return np.floor(y + 0.5) if round_y else y


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 2:
        raise ValueError(f"expected 2-D planes, got shape {a.shape}")


def _crop(a: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, got {border}")
    if border == 0:
        return a
    if 2 * border >= min(a.shape[:2]):
        raise ValueError(f"crop_border {border} leaves nothing of an image of shape {a.shape}")
    return a[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB between two equally shaped 2-D planes (``inf`` when identical)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _check_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps (MATLAB ``fspecial('gaussian')`` is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with ``outer(g, g)``, valid region only: (H, W) -> (H-k+1, W-k+1)."""
    k = g.shape[0]
    rows = np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=0) @ g


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win_size: int = 11,
         sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) between two 2-D planes, Gaussian window, valid region.

    Raises ValueError when a side is shorter than the window.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _check_pair(a, b)
    if min(a.shape) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size} pixels, got {a.shape}")
    g = gaussian_kernel(win_size, sigma)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def psnr_y(a: ArrayLike, b: ArrayLike, crop_border: int = 0, round_y: bool = True) -> float:
    """PSNR (dB) on the BT.601 Y channel of two images (see module docstring for the protocol)."""
    return psnr(_crop(rgb_to_y(a, round_y), crop_border), _crop(rgb_to_y(b, round_y), crop_border))


def ssim_y(a: ArrayLike, b: ArrayLike, crop_border: int = 0, round_y: bool = True) -> float:
    """SSIM on the BT.601 Y channel of two images (see module docstring for the protocol)."""
    return ssim(_crop(rgb_to_y(a, round_y), crop_border), _crop(rgb_to_y(b, round_y), crop_border))
