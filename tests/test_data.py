"""Paired data: pairing rules and their errors, decoding, crops/flips alignment, padding and the
resumable sampler."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddsa_model.pipeline.data import (
    DatasetError,
    PairedImageDataset,
    ResumableSampler,
    crop_at,
    find_pairs,
    to_tensor,
)
from ddsa_model.pipeline.imageio import ImageReadError, read_image


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _rand_img(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _coord_img(h: int, w: int) -> np.ndarray:
    """R = column, G = row, B = 7: every pixel tells where it came from."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys, np.full_like(xs, 7)], axis=2).astype(np.uint8)


def test_pairs_by_name_rain13k_and_stem(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png"):
        _save(tmp_path / "input" / name, _rand_img(rng, 8, 9))
        _save(tmp_path / "target" / name, _rand_img(rng, 8, 9))
    _save(tmp_path / "input" / "rain-12.png", _rand_img(rng, 10, 6))
    _save(tmp_path / "target" / "norain-12.png", _rand_img(rng, 10, 6))
    _save(tmp_path / "input" / "7.jpg", _rand_img(rng, 5, 5))
    _save(tmp_path / "target" / "7.png", _rand_img(rng, 5, 5))
    (tmp_path / "input" / "notes.txt").write_text("not an image, ignored")

    pairs = find_pairs(tmp_path)
    got = {(p.input.name, p.target.name, p.size) for p in pairs}
    assert got == {("a.png", "a.png", (9, 8)), ("b.png", "b.png", (9, 8)),
                   ("rain-12.png", "norain-12.png", (6, 10)), ("7.jpg", "7.png", (5, 5))}


def test_one_error_lists_every_problem(tmp_path):
    rng = np.random.default_rng(1)
    _save(tmp_path / "input" / "ok.png", _rand_img(rng, 8, 8))
    _save(tmp_path / "target" / "ok.png", _rand_img(rng, 8, 8))
    _save(tmp_path / "input" / "lonely.png", _rand_img(rng, 8, 8))          # no target
    _save(tmp_path / "target" / "orphan.png", _rand_img(rng, 8, 8))         # no input
    _save(tmp_path / "input" / "size.png", _rand_img(rng, 8, 8))
    _save(tmp_path / "target" / "size.png", _rand_img(rng, 8, 9))          # sizes differ
    good = _save(tmp_path / "input" / "trunc.png", _rand_img(rng, 32, 32))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])                                # truncated PNG
    _save(tmp_path / "target" / "trunc.png", _rand_img(rng, 32, 32))
    _save(tmp_path / "input" / "junk.png", _rand_img(rng, 8, 8))
    (tmp_path / "target" / "junk.png").write_bytes(b"this is not a png at all")

    with pytest.raises(DatasetError) as exc:
        find_pairs(tmp_path)
    msg = str(exc.value)
    assert msg.startswith("5 problem(s)")
    for needle in ("input/lonely.png: no matching target", "target/orphan.png: no matching input",
                   "input/size.png is 8x8 but target/size.png is 9x8", "input/trunc.png: unreadable",
                   "target/junk.png: unreadable"):
        assert needle in msg
    assert "ok.png" not in msg


def test_missing_folders_and_empty_input(tmp_path):
    with pytest.raises(DatasetError, match="missing .*target"):
        (tmp_path / "input").mkdir()
        find_pairs(tmp_path)
    (tmp_path / "target").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        find_pairs(tmp_path)


def test_read_image_modes(tmp_path):
    gray16 = (np.arange(6 * 5, dtype=np.uint16).reshape(6, 5) * 2000)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    arr = read_image(tmp_path / "g16.png").pixels()
    assert arr.dtype == np.uint16 and arr.shape == (6, 5, 3)
    np.testing.assert_array_equal(arr[..., 1], gray16)
    torch.testing.assert_close(to_tensor(arr)[0], torch.from_numpy(gray16.astype(np.float32) / 65535.0))

    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png").pixels()
    assert out.shape == (4, 3, 3) and (out[..., 0] == 200).all()

    with pytest.raises(ImageReadError, match="bad.png"):
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        read_image(tmp_path / "bad.png")


def test_exif_orientation_counts_for_pairing(tmp_path):
    rng = np.random.default_rng(5)
    stored = _rand_img(rng, 8, 16)                       # stored 16 wide, 8 high
    exif = Image.Exif()
    exif[0x0112] = 6                                     # "rotate 90° clockwise to display"
    (tmp_path / "input").mkdir()
    Image.fromarray(stored).save(tmp_path / "input" / "p.jpg", exif=exif, quality=95)
    _save(tmp_path / "target" / "p.png", _rand_img(rng, 16, 8))   # displayed size: 8 wide, 16 high
    (pair,) = find_pairs(tmp_path)
    assert pair.size == (8, 16)
    assert read_image(pair.input).pixels().shape == (16, 8, 3)


def _dataset(tmp_path, img, target=None, **kw):
    _save(tmp_path / "input" / "x.png", img)
    _save(tmp_path / "target" / "x.png", 255 - img if target is None else target)
    return PairedImageDataset(tmp_path, **kw)


def test_crops_are_windows_and_flips_keep_pairs_aligned(tmp_path):
    h, w, crop = 40, 50, 16
    img = _coord_img(h, w)
    ds = _dataset(tmp_path, img, max_crop=crop)
    seen = set()
    for pos in range(64):
        inp, tgt = ds[(0, 3, pos, crop)]
        assert inp.shape == tgt.shape == (3, crop, crop) and inp.dtype == torch.float32
        # target was 255 - input pixelwise: the same transform must have been applied to both
        torch.testing.assert_close(tgt, 1.0 - inp, rtol=0, atol=1e-6)
        a = np.round(inp.permute(1, 2, 0).numpy() * 255).astype(int)
        xs, ys = a[..., 0], a[..., 1]
        # a window of the source, flipped along x and/or y
        dx = np.unique(np.diff(xs, axis=1))
        dy = np.unique(np.diff(ys, axis=0))
        assert len(dx) == 1 and abs(dx[0]) == 1 and len(dy) == 1 and abs(dy[0]) == 1
        assert (np.diff(xs, axis=0) == 0).all() and (np.diff(ys, axis=1) == 0).all()
        assert 0 <= xs.min() and xs.max() < w and 0 <= ys.min() and ys.max() < h
        seen.add((int(dx[0]), int(dy[0])))
        # same (seed, position) → same sample
        torch.testing.assert_close(ds[(0, 3, pos, crop)][0], inp, rtol=0, atol=0)
    assert seen == {(1, 1), (-1, 1), (1, -1), (-1, -1)}

    no_flip = PairedImageDataset(tmp_path, flips=False)
    for pos in range(8):
        a = np.round(no_flip[(0, 3, pos, crop)][0].permute(1, 2, 0).numpy() * 255).astype(int)
        assert (np.diff(a[..., 0], axis=1) == 1).all() and (np.diff(a[..., 1], axis=0) == 1).all()


def test_small_images_pad_or_reject(tmp_path):
    rng = np.random.default_rng(2)
    img = _rand_img(rng, 10, 13)
    ds = _dataset(tmp_path, img, flips=False, small_images="pad", max_crop=24)
    inp, tgt = ds[(0, 0, 5, 24)]
    expected = np.pad(img, ((0, 14), (0, 11), (0, 0)), mode="reflect")[:24, :24]
    np.testing.assert_array_equal(np.round(inp.permute(1, 2, 0).numpy() * 255).astype(np.uint8), expected)
    torch.testing.assert_close(tgt, 1.0 - inp, rtol=0, atol=1e-6)
    tiny = _dataset(tmp_path / "one", _rand_img(rng, 1, 1), flips=False, max_crop=8)
    assert tiny[(0, 0, 0, 8)][0].shape == (3, 8, 8)

    with pytest.raises(DatasetError, match=r"(?s)1 image pair\(s\) are smaller than the 24px crop.*x\.png \(13x10\)"):
        PairedImageDataset(tmp_path, small_images="reject", max_crop=24)
    assert len(PairedImageDataset(tmp_path, small_images="reject", max_crop=10)) == 1


def test_uncached_dataset_matches_cached(tmp_path):
    rng = np.random.default_rng(3)
    _dataset(tmp_path, _rand_img(rng, 20, 30))
    a, b = PairedImageDataset(tmp_path, cache=True), PairedImageDataset(tmp_path, cache=False)
    for pos in range(4):
        torch.testing.assert_close(a[(0, 1, pos, 16)][0], b[(0, 1, pos, 16)][0], rtol=0, atol=0)
    full_in, full_tg, name = PairedImageDataset(tmp_path, train=False)[0]
    assert name == "x.png" and full_in.shape == (3, 20, 30)


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_sampler_epochs_shards_and_resume():
    n, b = 7, 3
    one = ResumableSampler(n, batch_size=b, seed=5)
    items = _take(one, 4 * n)
    positions = [g for _, _, g, _ in items]
    assert positions == list(range(4 * n))
    for e in range(4):  # each epoch is a permutation of the data set
        assert sorted(i for i, _, g, _ in items if g // n == e) == list(range(n))
    assert [i for i, *_ in items[:n]] != [i for i, *_ in items[n:2 * n]]

    # 2 ranks × batch b  ==  1 process, batch b, 2 accumulation steps (same micro-batches)
    accum = _take(ResumableSampler(n, batch_size=b, seed=5, grad_accum=2), 4 * b)
    r0 = _take(ResumableSampler(n, batch_size=b, seed=5, world_size=2, rank=0), 2 * b)
    r1 = _take(ResumableSampler(n, batch_size=b, seed=5, world_size=2, rank=1), 2 * b)
    assert accum == r0[:b] + r1[:b] + r0[b:] + r1[b:]

    # resuming at iteration k continues the uninterrupted stream
    full = _take(ResumableSampler(n, batch_size=b, seed=5, grad_accum=2), 10 * b)
    resumed = _take(ResumableSampler(n, batch_size=b, seed=5, grad_accum=2, start_iteration=3), 4 * b)
    assert resumed == full[6 * b:]


def test_progressive_crop_schedule():
    prog = [[0, 64], [100, 96], [300, 128]]
    assert [crop_at(i, 32, prog) for i in (0, 99, 100, 299, 300, 10**6)] == [64, 64, 96, 96, 128, 128]
    assert crop_at(5, 32) == 32
    s = ResumableSampler(5, batch_size=2, crop=48, progressive=[[2, 64]], grad_accum=2)
    crops = [c for *_, c in _take(s, 12)]
    assert crops == [48] * 8 + [64] * 4   # iterations 0,1 (2 micro-batches of 2 each) then 2


def test_loader_workers_give_identical_batches(tmp_path):
    rng = np.random.default_rng(4)
    for i in range(5):
        _save(tmp_path / "input" / f"{i}.png", _rand_img(rng, 24, 20))
        _save(tmp_path / "target" / f"{i}.png", _rand_img(rng, 24, 20))
    ds = PairedImageDataset(tmp_path)

    def batches(workers):
        loader = torch.utils.data.DataLoader(
            ds, batch_size=2, num_workers=workers, generator=torch.Generator(),
            sampler=ResumableSampler(len(ds), batch_size=2, seed=9, crop=16))
        it = iter(loader)
        return [next(it) for _ in range(4)]

    for (a0, b0), (a2, b2) in zip(batches(0), batches(2)):
        torch.testing.assert_close(a0, a2, rtol=0, atol=0)
        torch.testing.assert_close(b0, b2, rtol=0, atol=0)


def test_real_raintrainl_pairs(shared_data):
    root = os.path.join(shared_data, "RainTrainL")
    pairs = find_pairs(root)
    assert len(pairs) == 200
    assert {p.size for p in pairs} <= {(481, 321), (321, 481)}
    ds = PairedImageDataset(root, max_items=3)
    inp, tgt = ds[(1, 0, 0, 128)]
    assert inp.shape == (3, 128, 128) and 0 <= float(inp.min()) and float(inp.max()) <= 1
    # rain only brightens in RainTrainL's synthesis: rainy input ≥ clean target on average
    assert float((inp - tgt).mean()) > 0
