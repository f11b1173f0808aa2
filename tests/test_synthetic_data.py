"""On-the-fly synthetic pairs: the resume property, hold-out split, mixture weights, real folders."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddsa_model.pipeline.data import DatasetError, PairedImageDataset, ResumableSampler
from ddsa_model.pipeline.synth import synthesize_rain
from ddsa_model.pipeline.synthetic_data import (
    MixedDataset,
    SyntheticRainDataset,
    list_clean_images,
    split_holdout,
)


def _constant_images(folder: Path, n: int, size=(20, 16), start=0) -> dict[str, tuple[int, int, int]]:
    """n images of distinct constant colours (kept dark so rain is visible); name → colour."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = {}
    for i in range(start, start + n):
        colour = (i % 7 * 20, i // 7 % 7 * 20, i // 49 * 20 + 5)
        Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(folder / f"img{i:03d}.png")
        colours[f"img{i:03d}.png"] = colour
    return colours


def _colour(t: torch.Tensor) -> tuple[int, int, int]:
    px = torch.round(t * 255).to(torch.int64)
    assert (px == px[:, :1, :1]).all(), "clean crop is not one constant image"
    return tuple(int(v) for v in px[:, 0, 0])


def test_items_are_a_pure_function_of_seed_and_position(tmp_path):
    _constant_images(tmp_path / "clean", 3)
    _smooth = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    Image.fromarray(_smooth).save(tmp_path / "clean" / "textured.png")
    items = [(i % 4, 7, pos, 16) for i, pos in enumerate(range(40, 52))]
    ds = SyntheticRainDataset(tmp_path / "clean", "mixed")
    forward = [ds[it] for it in items]
    fresh = SyntheticRainDataset(tmp_path / "clean", "mixed", cache=False)
    backward = {it: fresh[it] for it in reversed(items)}
    for it, (rainy, clean) in zip(items, forward):
        assert rainy.dtype == torch.float32 and rainy.shape == (3, 16, 16) == clean.shape
        assert 0 <= rainy.min() and rainy.max() <= 1
        assert torch.equal(rainy, backward[it][0]) and torch.equal(clean, backward[it][1])
        # the rainy input is quantised to 8 bit like a saved PNG
        assert torch.equal(torch.round(rainy * 255) / 255, rainy)
    # other positions / seeds get other rain on the textured image
    a, b, c = ds[(3, 7, 1, 32)], ds[(3, 7, 2, 32)], ds[(3, 8, 1, 32)]
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_crops_and_flips_match_the_paired_dataset(tmp_path):
    # same (seed, position) → the same clean crop as PairedImageDataset takes of the same image
    rng = np.random.default_rng(1)
    for sub in ("input", "target"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for sub in ("input", "target"):
        Image.fromarray(img).save(tmp_path / "pairs" / sub / "a.png")
    paired = PairedImageDataset(tmp_path / "pairs", rot90=True)
    synth = SyntheticRainDataset(tmp_path / "pairs", "heavy", rot90=True)  # paired folder → target/
    assert [p.parent.name for p in synth.paths] == ["target"]
    for pos in range(12):
        item = (0, 3, pos, 24 if pos % 2 else 48)  # 48 > 30: reflect-padded
        assert torch.equal(paired[item][1], synth[item][1])
        rainy, clean = synth[item]
        expect = synthesize_rain(clean.permute(1, 2, 0).numpy().copy(), "heavy", np.random.default_rng([3, pos, 1]))
        np.testing.assert_array_equal(rainy.permute(1, 2, 0).numpy(), np.round(expect * 255) / 255)


def test_holdout_split_is_fixed_and_never_drawn(tmp_path):
    colours = _constant_images(tmp_path / "clean", 30)
    paths = list_clean_images(tmp_path / "clean")
    train, hold = split_holdout(paths, n_holdout=6, seed=0)
    assert len(train) == 24 and len(hold) == 6 and not set(train) & set(hold)
    assert train == sorted(train, key=lambda p: p.name) and hold == sorted(hold, key=lambda p: p.name)
    # deterministic, independent of the order given; another seed holds out others
    assert split_holdout(list(reversed(paths)), 6, 0) == (train, hold)
    assert split_holdout(paths, 6, 1)[1] != hold
    with pytest.raises(ValueError):
        split_holdout(paths, 31)

    ds = SyntheticRainDataset(train, "light")
    sampler = ResumableSampler(len(ds), batch_size=4, seed=5, crop=8)
    seen = set()
    it = iter(sampler)
    for _ in range(400):
        seen.add(_colour(ds[next(it)][1]))
    held_colours = {colours[p.name] for p in hold}
    assert seen == {colours[p.name] for p in train}  # every training image drawn, nothing else
    assert not seen & held_colours


def test_mixture_respects_weights_and_resumes(tmp_path):
    real = tmp_path / "real"
    for sub in ("input", "target"):
        (real / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((12, 12, 3), 200 + i, np.uint8)).save(real / sub / f"r{i}.png")
    red_colours = _constant_images(tmp_path / "a", 4)
    blue_colours = _constant_images(tmp_path / "b", 5, start=100)
    sources = [PairedImageDataset(real), SyntheticRainDataset(tmp_path / "a", "light"),
               SyntheticRainDataset(tmp_path / "b", "heavy")]
    mixed = MixedDataset(sources, [0.5, 0.3, 0.2])
    assert len(mixed) == 12
    n = 2000
    kinds = np.zeros(3)
    for pos in range(n):
        k, i = mixed.choose(9, pos)
        assert 0 <= i < len(sources[k])
        kinds[k] += 1
    # binomial bounds: 4.5 standard deviations
    for k, w in enumerate([0.5, 0.3, 0.2]):
        assert abs(kinds[k] / n - w) < 4.5 * np.sqrt(w * (1 - w) / n), kinds
    # items come from the chosen source and are bitwise reproducible with a fresh object
    sampler = ResumableSampler(len(mixed), batch_size=3, seed=9, crop=8)
    it = iter(sampler)
    first = [next(it) for _ in range(60)]
    fresh = MixedDataset([PairedImageDataset(real), SyntheticRainDataset(tmp_path / "a", "light"),
                          SyntheticRainDataset(tmp_path / "b", "heavy")], [0.5, 0.3, 0.2])
    resumed = iter(ResumableSampler(len(mixed), batch_size=3, seed=9, crop=8, start_iteration=10))
    for item in first[30:]:
        again = next(resumed)
        assert again == item
        x, y = mixed[item], fresh[again]
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
        k, _ = mixed.choose(item[1], item[2])
        colour = _colour(x[1])
        if k == 0:
            assert colour[0] in (200, 201, 202) and torch.equal(x[0], x[1])  # real pairs: input = target here
        else:
            assert colour in (red_colours if k == 1 else blue_colours).values()
    zero = MixedDataset(sources, [1.0, 0.0, 0.0])
    assert all(zero.choose(0, p)[0] == 0 for p in range(300))
    with pytest.raises(DatasetError):
        MixedDataset(sources, [1.0, 1.0])
    with pytest.raises(DatasetError):
        MixedDataset(sources, [1.0, -1.0, 1.0])


def test_evaluation_items_and_errors(tmp_path):
    _constant_images(tmp_path / "c", 2, size=(30, 20))
    ds = SyntheticRainDataset(tmp_path / "c", "heavy")
    rainy, clean, name = ds[1]
    assert name == "img001.png" and rainy.shape == clean.shape == (3, 20, 30)
    assert torch.equal(ds[1][0], rainy) and (rainy > clean).float().mean() > 0.3
    with pytest.raises(DatasetError):
        SyntheticRainDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown rain preset"):
        SyntheticRainDataset(tmp_path / "c", "drizzle")


def test_real_clean208_and_raintrainl_targets(shared_data):
    clean208 = list_clean_images(os.path.join(shared_data, "Clean208"))
    assert len(clean208) == 208
    train, hold = split_holdout(clean208)
    assert (len(train), len(hold)) == (180, 28)
    targets = list_clean_images(os.path.join(shared_data, "RainTrainL"))
    assert len(targets) == 200 and all(p.parent.name == "target" for p in targets)
    ds = SyntheticRainDataset(train[:3], "heavy", cache=False)
    rainy, clean = ds[(2, 0, 0, 64)]
    assert rainy.shape == (3, 64, 64) and float((rainy - clean).mean()) > 0.05
