"""Minimal 16-bit PNG codec (numpy + zlib) for what Pillow cannot do: 16-bit RGB / RGBA / LA.

Pillow reads 48-bit RGB PNGs as 8-bit RGB and cannot write them. ``read_png16`` decodes any
non-interlaced 16-bit PNG (colour types 0, 2, 4, 6) to a uint16 array (H, W, C) with C = 1, 3, 2, 4;
``write_png16`` writes one. Filters None/Sub/Up are vectorised, Average/Paeth run a per-row Python
loop (seconds for a 12-megapixel photo); OpenCV, when installed, is preferred by ``imageio``.
"""
from __future__ import annotations

import struct
import zlib
from typing import Tuple

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


class PNGError(ValueError):
    """The file is not a PNG this codec can decode."""


def read_header(data: bytes) -> Tuple[int, int, int, int, int]:
    """(width, height, bit_depth, colour_type, interlace) from the IHDR of PNG bytes."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise PNGError("not a PNG file")
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, ctype, interlace


def _chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise PNGError("truncated PNG chunk")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise PNGError("PNG ends without an IEND chunk")


def _unfilter_slow(kind: int, line: bytearray, prev: bytes, bpp: int) -> None:
    n = len(line)
    if kind == 3:  # Average
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
    else:  # Paeth
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF


def read_png16(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG: uint16 array (H, W, C)."""
    w, h, depth, ctype, interlace = read_header(data)
    if depth != 16 or ctype not in _CHANNELS:
        raise PNGError(f"not a 16-bit gray/RGB/LA/RGBA PNG (bit depth {depth}, colour type {ctype})")
    if interlace:
        raise PNGError("interlaced 16-bit PNGs are not supported without OpenCV")
    idat = b"".join(body for kind, body in _chunks(data) if kind == b"IDAT")
    try:
        raw = zlib.decompress(idat)
    except zlib.error as e:
        raise PNGError(f"corrupt PNG image data ({e})") from None
    ch = _CHANNELS[ctype]
    bpp = 2 * ch
    stride = w * bpp
    if len(raw) < h * (stride + 1):
        raise PNGError("truncated PNG image data")
    rows = np.frombuffer(raw, np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    out = np.empty((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        kind = int(rows[y, 0])
        f = rows[y, 1:]
        if kind == 0:
            line = f.copy()
        elif kind == 1:  # Sub: running sum over pixels, per byte lane, modulo 256
            line = np.cumsum(f.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            line = f + prev  # uint8 arithmetic wraps modulo 256
        elif kind in (3, 4):
            buf = bytearray(f.tobytes())
            _unfilter_slow(kind, buf, prev.tobytes(), bpp)
            line = np.frombuffer(bytes(buf), np.uint8)
        else:
            raise PNGError(f"bad PNG filter type {kind} in row {y}")
        out[y] = line
        prev = out[y]
    return out.view(">u2").reshape(h, w, ch).astype(np.uint16)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png16(arr: np.ndarray) -> bytes:
    """Encode a uint16 array (H, W) or (H, W, C), C in {1, 2, 3, 4}, as 16-bit PNG bytes."""
    if arr.dtype != np.uint16:
        raise ValueError(f"expected uint16, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, ch = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}.get(ch)
    if ctype is None:
        raise ValueError(f"expected 1-4 channels, got {ch}")
    rows = arr.astype(">u2").reshape(h, w * ch).view(np.uint8)
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]  # filter "Up" (wraps modulo 256): cheap and compresses photos well
    filt = np.full((h, 1), 2, np.uint8)
    filt[0] = 0
    up[0] = rows[0]
    raw = np.concatenate([filt, up], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")
