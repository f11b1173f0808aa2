"""Torch-free writers and table formatting of the benchmarks (``run_summary`` runs without torch).

Files are written atomically: a temporary file in the same folder, then ``os.replace``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        mask = os.umask(0o022)  # mkstemp leaves 0600: give the file what a plain open() would
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically; NaN/inf become strings."""
    write_text(path, json.dumps(_finite(obj), indent=1, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; None renders as an en dash."""
    def cell(x: Any) -> str:
        return "–" if x is None else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: Optional[float], digits: int = 3) -> Optional[str]:
    """Format a number with ``digits`` significant figures (None and strings pass through)."""
    if x is None or isinstance(x, str):
        return x
    if x == 0 or not math.isfinite(x):
        return str(x) if x != 0 else "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"
