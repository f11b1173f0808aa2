"""ddsa_model.atomic: all-or-nothing writes with the permissions of a plain open()."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from ddsa_model.atomic import (atomic_path, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text,
                               current_umask, json_safe)

posix_only = pytest.mark.skipif(os.name != "posix", reason="permission bits and umask are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for one test; restored afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda m: os.umask(m)
    os.umask(saved)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _plain_mode(folder) -> int:
    """The mode a plain open(..., "w") gives a new file in ``folder`` (the oracle)."""
    ref = folder / "plain-reference"
    with open(ref, "w") as fh:
        fh.write("x")
    mode = _mode(ref)
    ref.unlink()
    return mode


def test_target_shows_old_content_until_the_block_completes(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as fh:
        fh.write(b"new, first half ")
        fh.flush()
        assert target.read_bytes() == b"old"  # a reader never sees the partial write
        others = [p for p in tmp_path.iterdir() if p != target]
        assert len(others) == 1 and others[0].name.startswith(".data.bin.")  # temp sits in the same folder
        fh.write(b"second half")
    assert target.read_bytes() == b"new, first half second half"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_atomic_path_publishes_what_the_writer_wrote(tmp_path):
    target = tmp_path / "weights.npy"
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as fh:  # a path-taking writer (np.save would append .npy to a str path)
            np.save(fh, arr)
        assert not target.exists()
    np.testing.assert_array_equal(np.load(target), arr)
    assert os.listdir(tmp_path) == ["weights.npy"]


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("kind", ["file", "path"])
def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path, exc, kind):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous checkpoint")
    with pytest.raises(type(exc)):
        if kind == "file":
            with atomic_write(target) as fh:
                fh.write(b"half a checkp")
                raise exc
        else:
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(b"half a checkp")
                raise exc
    assert target.read_bytes() == b"previous checkpoint"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_failure_without_previous_file_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with atomic_write(tmp_path / "new.json", "w") as fh:
            fh.write("{")
            raise ValueError("boom")
    assert os.listdir(tmp_path) == []


def test_text_is_utf8_and_bytes_round_trip(tmp_path):
    atomic_write_text(tmp_path / "t.md", "speed-up 2.1× — ok\n")
    assert (tmp_path / "t.md").read_bytes() == "speed-up 2.1× — ok\n".encode("utf-8")
    atomic_write_bytes(str(tmp_path / "b"), bytes(range(256)))
    assert (tmp_path / "b").read_bytes() == bytes(range(256))


def test_bad_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_mode_matches_a_plain_open_write(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    expected = _plain_mode(tmp_path)
    assert expected == 0o666 & ~mask
    atomic_write_bytes(tmp_path / "a", b"x")
    with atomic_write(tmp_path / "b", "w") as fh:
        fh.write("x")
    with atomic_path(tmp_path / "c") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"x")
    assert {name: _mode(tmp_path / name) for name in "abc"} == dict.fromkeys("abc", expected)


@posix_only
def test_overwrite_gets_plain_mode_not_mkstemp_0600(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert _mode(target) == _plain_mode(tmp_path) == 0o644


@posix_only
def test_project_writers_give_plain_mode(tmp_path, umask):
    """The outputs users share (PNGs, checkpoints, benchmark JSON) are not owner-only."""
    from ddsa_bench.common import write_json
    from ddsa_model import build_model, save_model
    from ddsa_model.pipeline.imageio import write_png

    umask(0o022)
    expected = _plain_mode(tmp_path)
    write_png(str(tmp_path / "img.png"), np.zeros((4, 5, 3), np.float32))
    save_model(build_model("tiny"), tmp_path / "m.safetensors")
    write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == dict.fromkeys(
        ["img.png", "m.safetensors", "r.json"], expected)


def test_atomic_write_json_is_strict_json_with_non_finite_floats_as_strings(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"a": [1.5, float("nan")], "b": (float("inf"), -float("inf")), "c": {"d": 2}})
    text = target.read_text()
    assert text.endswith("\n")
    # json.loads with parse_constant raising: a bare NaN/Infinity token would fail here
    got = json.loads(text, parse_constant=lambda tok: pytest.fail(f"non-strict JSON token {tok}"))
    assert got == {"a": [1.5, "nan"], "b": ["inf", "-inf"], "c": {"d": 2}}
    assert json_safe([float("nan"), (1.0,)]) == ["nan", [1.0]]


def test_atomic_module_imports_without_torch():
    """The GPU run's bookkeeping (ddsa_bench.summary) writes through this module without torch."""
    import subprocess
    import sys

    code = ("import sys, ddsa_model.atomic, ddsa_bench.summary; "
            "print(sorted(m for m in ('torch', 'ddsa_kernels', 'ddsa_model.network') if m in sys.modules))")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True)
    assert res.stdout.strip() == "[]", res.stdout
