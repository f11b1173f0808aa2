"""Image files: finding them, every common format in, PNG out, nothing half-written.

``read_image`` returns an :class:`Image` whose ``rgb`` is float32 (H, W, 3) in [0, 1] — what the
network eats — plus what is needed to write the result back in the input's own format:

* gray (L / I;16) inputs are replicated to RGB and written back as gray (BT.601 luma of the output);
* alpha (RGBA / LA / palette transparency) is kept and written back unchanged;
* 16-bit PNGs (gray, RGB, RGBA) stay 16-bit (Pillow cannot read 48-bit RGB: OpenCV is used when
  installed, else the small codec in :mod:`ddsa_model.pipeline.png16`);
* the EXIF orientation tag is applied, so the output is upright and has the displayed size.

Any failure to read becomes :class:`ImageReadError` naming the file. :meth:`Image.pixels` gives
the decoded integer pixels back (uint8 / uint16) for code that keeps images compactly (training).
"""
from __future__ import annotations

import glob
import io
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from . import png16
from ddsa_model.atomic import atomic_write_bytes

__all__ = ["Image", "ImageReadError", "read_image", "write_png", "IMAGE_EXTENSIONS", "is_image_name",
           "list_images", "expand_inputs"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")

PathLike = Union[str, os.PathLike]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as Pillow's convert("L")


class ImageReadError(ValueError):
    """A file could not be read as an image (corrupt, truncated, not an image, unsupported mode)."""


@dataclass
class Image:
    """A decoded image. ``rgb``: float32 (H, W, 3) in [0, 1]; ``alpha``: float32 (H, W) or None."""

    rgb: np.ndarray
    alpha: Optional[np.ndarray] = None
    gray: bool = False
    bits: int = 8
    path: Optional[str] = None

    @property
    def size(self) -> tuple:
        """(height, width) in pixels."""
        return self.rgb.shape[0], self.rgb.shape[1]

    def pixels(self) -> np.ndarray:
        """``rgb`` as the integers it was decoded from: (H, W, 3) uint8, or uint16 for 16-bit images."""
        top, dtype = (65535.0, np.uint16) if self.bits == 16 else (255.0, np.uint8)
        return np.round(self.rgb * np.float32(top)).astype(dtype)


# ------------------------------------------------------------------------------------- finding
def is_image_name(name: PathLike) -> bool:
    """True for a file name with an image extension that is not hidden (no leading dot)."""
    base = os.path.basename(os.fspath(name))
    return base.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".")


def list_images(folder: PathLike, recursive: bool = False) -> List[str]:
    """Sorted paths of the image files in ``folder`` (and its sub-folders if ``recursive``)."""
    folder = os.fspath(folder)
    if recursive:
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if is_image_name(f))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if is_image_name(f) and os.path.isfile(os.path.join(folder, f)))


def expand_inputs(items: Sequence[str], recursive: bool = False) -> Tuple[List[str], List[str]]:
    """Files, folders (their images, sorted) and glob patterns -> (file paths, problems).

    An explicitly named file is always taken (so a non-image is reported when read, not silently
    dropped); folders and globs contribute only files with image extensions. Duplicates (the same
    file reached twice) are dropped.
    """
    files: List[str] = []
    problems: List[str] = []
    for item in items:
        if os.path.isdir(item):
            found = list_images(item, recursive)
            if not found:
                problems.append(f"{item}: folder holds no images")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            found = sorted(m for m in glob.glob(item, recursive=recursive) if os.path.isfile(m) and is_image_name(m))
            if not found:
                problems.append(f"{item}: no such file, folder or matching images")
            files += found
    seen = set()
    unique = []
    for f in files:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


# ------------------------------------------------------------------------------------- reading


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array so the result displays upright."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def _exif_orientation(im: PILImage.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _decode_png16_colour(data: bytes, ctype: int) -> np.ndarray:
    """uint16 (H, W, C) with C in {2, 3, 4} in RGB(A)/LA order (PNG colour type 2, 6 or 4)."""
    try:
        import cv2  # OpenCV's libpng handles every variant (interlaced too) at C speed
    except ImportError:
        return png16.read_png16(data)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise png16.PNGError("OpenCV could not decode it")
    want = {2: 3, 4: 4, 6: 4}[ctype]  # OpenCV expands gray+alpha to BGRA
    if arr.ndim != 3 or arr.shape[2] != want:
        raise png16.PNGError(f"OpenCV decoded an unexpected shape {arr.shape}")
    arr = arr[..., [0, 3]] if ctype == 4 else (arr[..., ::-1] if want == 3 else arr[..., [2, 1, 0, 3]])
    return np.ascontiguousarray(arr)


def _from_array(arr: np.ndarray, scale: float, path: str, bits: int) -> Image:
    """(H, W, C) integer array with C in 1..4 -> Image."""
    f = arr.astype(np.float32) / np.float32(scale)
    ch = f.shape[2]
    gray = ch in (1, 2)
    rgb = np.repeat(f[..., :1], 3, axis=2) if gray else f[..., :3]
    alpha = f[..., ch - 1] if ch in (2, 4) else None
    return Image(np.ascontiguousarray(rgb), None if alpha is None else np.ascontiguousarray(alpha), gray, bits, path)


def read_image(path: PathLike) -> Image:
    """Decode an image file (EXIF orientation applied). Raises ImageReadError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file, not an image")
    try:
        im = PILImage.open(io.BytesIO(data))
        orientation = _exif_orientation(im)
        if im.format == "PNG":
            w, h, depth, ctype, _ = png16.read_header(data)
            if depth == 16 and ctype in (2, 4, 6):
                arr = _decode_png16_colour(data, ctype)
                if arr.shape[:2] != (h, w):
                    raise png16.PNGError(f"decoded size {arr.shape[:2]} differs from the header's {(h, w)}")
                return _from_array(_orient(arr, orientation), 65535.0, path, 16)
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            arr, scale, bits = np.asarray(im).astype(np.uint16)[..., None], 65535.0, 16
        elif mode == "I":
            arr = np.asarray(im)
            if arr.min() < 0 or arr.max() > 65535:
                raise ImageReadError(f"{path}: 32-bit integer pixel values outside 0..65535 are not supported")
            bits = 16 if arr.max() > 255 else 8
            arr, scale = arr.astype(np.uint16)[..., None], (65535.0 if bits == 16 else 255.0)
        elif mode == "F":
            raise ImageReadError(f"{path}: floating-point images (mode F) are not supported")
        else:
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "PA":
                im = im.convert("RGBA")
            elif mode == "1":
                im = im.convert("L")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
            arr = np.asarray(im)
            arr = arr[..., None] if arr.ndim == 2 else arr
            scale, bits = 255.0, 8
        return _from_array(_orient(arr, orientation), scale, path, bits)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (format not recognised)") from None
    except (OSError, ValueError, SyntaxError, EOFError, png16.PNGError) as e:
        raise ImageReadError(f"{path}: corrupt or unsupported image ({e})") from None
    except PILImage.DecompressionBombError as e:  # pragma: no cover - huge files only
        raise ImageReadError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------------- writing
def _quantise(x: np.ndarray, bits: int) -> np.ndarray:
    top = 65535.0 if bits == 16 else 255.0
    q = np.round(np.clip(x.astype(np.float32), 0.0, 1.0) * np.float32(top))
    return q.astype(np.uint16 if bits == 16 else np.uint8)


def write_png(path: PathLike, rgb: np.ndarray, alpha: Optional[np.ndarray] = None, gray: bool = False,
              bits: int = 8) -> None:
    """Write float (H, W, 3) in [0, 1] (+ optional alpha (H, W)) atomically as PNG.

    ``gray`` writes the BT.601 luma as a single channel; ``bits`` is 8 or 16.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected rgb of shape (H, W, 3), got {rgb.shape}")
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match image {rgb.shape[:2]}")
    planes = [rgb @ _LUMA] if gray else [rgb[..., i] for i in range(3)]
    if alpha is not None:
        planes.append(alpha)
    arr = _quantise(np.stack(planes, axis=2), bits)
    if bits == 16:
        data = png16.write_png16(arr) if arr.shape[2] != 1 else _pil_png(PILImage.fromarray(arr[..., 0]))
    else:
        data = _pil_png(PILImage.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr))
    atomic_write_bytes(path, data)


def _pil_png(im: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
