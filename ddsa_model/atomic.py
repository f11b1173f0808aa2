"""Atomic file writes: readers see the old file or the complete new one, never a half-written one.

Every writer follows the same recipe: write a temp file ``.<name>.<random>.tmp`` in the target's
own folder (so the final rename never crosses a file system), fsync it, give it the permissions a
plain ``open(path, "w")`` would (``0o666 & ~umask``; ``tempfile.mkstemp`` alone leaves 0600), then
``os.replace`` it over the target. On any exception (KeyboardInterrupt included) the temp file is
removed, the exception re-raised and a previous file at ``path`` is left untouched.

    with atomic_write("report.json", "w") as fh:      # a file object
        json.dump(report, fh)
    with atomic_path("model.safetensors") as tmp:      # a path, for writers that want one
        save_file(tensors, tmp)
    atomic_write_bytes("out.png", png_bytes)
    atomic_write_json("summary.json", {"psnr": float("nan")})   # strict JSON: NaN/inf as strings

The folder must exist (it is not created). The folder itself is not fsynced: after a crash the
rename may be lost, which leaves the old file — still never a torn one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Optional, Union

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "current_umask", "json_safe"]

PathLike = Union[str, os.PathLike]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:  # Linux: race-free, unlike the set-and-restore below
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # a common value in the brief window before it is restored
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temp path next to ``path``; when the block ends cleanly, publish it as ``path``.

    For writers that take a path (``torch.save``, safetensors' ``save_file``, Pillow, OpenCV). The
    temp path ends in ``.tmp``, so writers that pick the format from the extension need it given
    explicitly (e.g. ``img.save(tmp, format="PNG")``).
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        fd = os.open(tmp, os.O_WRONLY)  # writable: fsync needs it on Windows
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", *, encoding: Optional[str] = None) -> Iterator[IO[Any]]:
    """Yield a file object open on a temp file; when the block ends cleanly, publish it as ``path``.

    ``mode``: "wb" (bytes) or "w"/"wt" (text; ``encoding`` defaults to UTF-8).
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_write mode must be 'wb', 'w' or 'wt', got {mode!r}")
    if "b" in mode:
        if encoding is not None:
            raise ValueError("atomic_write: encoding is only for text modes")
    elif encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, as ``open(path, "w", encoding=encoding)`` would."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings ("inf", "-inf", "nan"), so strict JSON can hold it;
    tuples become lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: PathLike, obj: Any, indent: int = 1) -> None:
    """Write ``obj`` as indented strict JSON (see :func:`json_safe`) and a newline, atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")
