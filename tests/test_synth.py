"""Synthetic rain: determinism, the blend model, streak orientation/length, dtypes, layered presets
and their calibration, ddsa-synth CLI."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddsa_model.cli.synth import main as synth_main
from ddsa_model.pipeline.data import find_pairs
from ddsa_model.pipeline.imageio import read_image
from ddsa_model.pipeline.synth import (
    HEAVY,
    LIGHT,
    LayerParams,
    RainParams,
    add_rain,
    compose_rain,
    interpolate_params,
    preset_params,
    preset_statistics,
    rain_components,
    rain_layer,
    streak_kernel,
    streak_layer,
    synthesize_rain,
)
from image_oracles import skimage_y

REPO = Path(__file__).resolve().parents[1]


def _smooth_image(h=96, w=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.3 + 0.3 * np.sin(3 * xs + p) * np.cos(2 * ys) for p in rng.uniform(0, 3, 3)], axis=2)
    return np.clip(np.round(base * 255), 0, 255).astype(np.uint8)


def test_deterministic_per_seed():
    img = _smooth_image()
    a = add_rain(img, density=0.01, rng=np.random.default_rng(7))
    b = add_rain(img, density=0.01, rng=7)
    c = add_rain(img, density=0.01, rng=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_screen_blend_of_the_rain_layer():
    gray = np.full((40, 50, 3), 0.5)
    kw = dict(density=0.02, length=9, angle=15, blur=1.0, brightness=0.6)
    out = add_rain(gray, rng=3, **kw)
    r = rain_layer(40, 50, rng=3, **kw).astype(np.float64)
    np.testing.assert_allclose(out, np.broadcast_to(0.5 + 0.5 * r[..., None], out.shape), atol=1e-12)
    assert r.min() >= 0 and r.max() <= 0.6 + 1e-6 and r.max() > 0.3


def test_rain_brightens_with_density_and_brightness():
    img = _smooth_image()
    means = []
    for density in (0.002, 0.01, 0.04):
        out = add_rain(img, density=density, rng=1)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert (out >= img).all() and (out != img).any()
        means.append(float(out.mean() - img.mean()))
    assert 0 < means[0] < means[1] < means[2]
    dim = float(add_rain(img, density=0.01, brightness=0.3, rng=1).mean())
    bright = float(add_rain(img, density=0.01, brightness=0.9, rng=1).mean())
    assert img.mean() < dim < bright
    np.testing.assert_array_equal(add_rain(img, brightness=0.0, rng=1), img)


def _orientation(layer: np.ndarray) -> tuple[float, float]:
    """(streak angle in degrees from vertical, energy ratio across/along) from the structure tensor."""
    gy, gx = np.gradient(layer.astype(np.float64))
    j = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
    evals, evecs = np.linalg.eigh(j)          # ascending: evecs[:, 0] is along the streaks
    vx, vy = evecs[:, 0]
    angle = math.degrees(math.atan2(vx, vy))
    angle = (angle + 90) % 180 - 90           # a direction, not a vector: fold into [-90, 90)
    return angle, evals[1] / evals[0]


@pytest.mark.parametrize("angle", [-45.0, -20.0, 0.0, 30.0, 60.0])
def test_streaks_follow_the_angle(angle):
    # the kernel's principal axis (intensity-weighted second moments) is the requested direction
    k = streak_kernel(20, angle, 0.7)
    c = k.shape[0] // 2
    ys, xs = np.mgrid[-c:c + 1, -c:c + 1]
    cov = np.array([[np.sum(k * xs * xs), np.sum(k * xs * ys)], [np.sum(k * xs * ys), np.sum(k * ys * ys)]])
    vx, vy = np.linalg.eigh(cov)[1][:, 1]
    axis = (math.degrees(math.atan2(vx, vy)) + 90) % 180 - 90
    assert abs((axis - angle + 90) % 180 - 90) < 0.1

    # a whole rain image: gradients run across the streaks (structure tensor; blur 1.5 keeps
    # central differences unbiased by aliasing)
    black = np.zeros((160, 160), np.float64)
    layer = add_rain(black, density=0.004, length=30, angle=angle, blur=1.5, rng=11)
    est, ratio = _orientation(layer)
    assert abs((est - angle + 90) % 180 - 90) < 2.5, (angle, est)
    assert ratio > 8
    # positive angles run top-left → bottom-right: the layer correlates with its (+x, +y) shift
    if abs(angle) >= 20:
        shift = lambda a, dx, dy: a[10 + dy:-10 + dy, 10 + dx:-10 + dx]
        down_right = np.sum(shift(layer, 0, 0) * shift(layer, 3, 3))
        down_left = np.sum(shift(layer, 0, 0) * shift(layer, -3, 3))
        assert (down_right > down_left) == (angle > 0)


@pytest.mark.parametrize("length", [6, 15, 30])
def test_streak_length_in_pixels(length):
    k = streak_kernel(length, 0.0, 0.5)
    column = k[:, k.shape[1] // 2]
    assert length <= int((column >= 0.5).sum()) <= length + 2
    diag = streak_kernel(length, 45.0, 0.5)
    c = diag.shape[0] // 2
    on_line = np.array([diag[c + i, c + i] for i in range(-c, c + 1)])
    extent = (on_line >= 0.5).sum() * math.sqrt(2)   # diagonal pixel pitch
    assert length - 2 <= extent <= length + 4


def test_dtypes_alpha_and_errors():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    out = add_rain(rgba, density=0.05, rng=0)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    assert (out[..., :3] != rgba[..., :3]).any()
    u16 = (rng.random((20, 20, 3)) * 30000).astype(np.uint16)
    o16 = add_rain(u16, density=0.05, rng=0)
    o8 = add_rain(np.zeros((20, 20, 3), np.uint8), density=0.05, rng=0)
    assert o16.dtype == np.uint16 and (o16 >= u16).all() and o16.max() > 30000
    np.testing.assert_allclose(o8 / 255.0, add_rain(np.zeros((20, 20, 3)), density=0.05, rng=0), atol=0.5 / 255)
    f32 = add_rain(np.full((9, 9), 0.25, np.float32), density=0.2, rng=0)
    assert f32.dtype == np.float32 and f32.shape == (9, 9) and f32.max() <= 1.0
    for bad, kw in ((np.zeros((4, 4, 5)), {}), (np.zeros((4, 4), np.int32), {}),
                    (np.zeros((4, 4)), {"density": 1.5}), (np.zeros((4, 4)), {"length": 0}),
                    (np.zeros((4, 4)), {"brightness": -0.1})):
        with pytest.raises(ValueError):
            add_rain(bad, rng=0, **kw)


def _write_clean(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"clean{i}.png"
        Image.fromarray(_smooth_image(48, 40, seed=i)).save(p)
        paths.append(p)
    return paths


def test_cli_writes_pairs_deterministically(tmp_path, capsys):
    clean = _write_clean(tmp_path / "clean")
    (tmp_path / "clean" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    args = [str(tmp_path / "clean"), "--angle", "-20:20", "--density", "0.01", "--seed", "4", "--no-progress"]
    rc = synth_main(args + ["-o", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "wrote 2 pair(s)" in err

    pairs = find_pairs(tmp_path / "a")
    assert sorted(p.input.name for p in pairs) == ["clean0.png", "clean1.png"]
    for p in pairs:
        src = read_image(tmp_path / "clean" / p.target.name).pixels()
        np.testing.assert_array_equal(read_image(p.target).pixels(), src)
        rainy = read_image(p.input).pixels()
        assert (rainy >= src).all() and rainy.mean() > src.mean()
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    angles = [v["angle"] for v in meta["images"].values()]
    assert all(-20 <= a <= 20 for a in angles) and len(set(angles)) == 2

    assert synth_main([str(p) for p in clean] + args[1:] + ["-o", str(tmp_path / "b")]) == 0
    for name in ("clean0.png", "clean1.png"):
        assert (tmp_path / "a" / "input" / name).read_bytes() == (tmp_path / "b" / "input" / name).read_bytes()
    assert synth_main([str(clean[0]), "--seed", "5", "--density", "0.01", "--angle=-20:20", "--no-progress",
                       "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "input" / "clean0.png").read_bytes() != (tmp_path / "a" / "input" / "clean0.png").read_bytes()


def test_cli_copies_and_bad_arguments(tmp_path, capsys):
    clean = _write_clean(tmp_path / "clean", 1)
    assert synth_main([str(clean[0]), "--copies", "3", "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    outs = sorted(p.name for p in (tmp_path / "o" / "input").iterdir())
    assert outs == ["clean0_0.png", "clean0_1.png", "clean0_2.png"]
    assert len({(tmp_path / "o" / "input" / n).read_bytes() for n in outs}) == 3
    capsys.readouterr()
    assert synth_main([str(clean[0]), "--density", "2:3", "-o", str(tmp_path / "bad")]) == 2
    assert "density must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert synth_main([str(tmp_path / "nothing*.png"), "-o", str(tmp_path / "none"), "--no-progress"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_cli_as_a_user_runs_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "ddsa_model.cli.synth", str(tmp_path), "-o", str(tmp_path / "o"),
                          "--length", "abc"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "--length: expected a number or LOW:HIGH, got 'abc'" in res.stderr
    assert "Traceback" not in res.stderr


# ---------------------------------------------------------------- layered rain (synthesize_rain)

def _psnr_y_oracle(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of scikit-image's Y planes (independent of ddsa_model.metrics)."""
    mse = np.mean((skimage_y(a) - skimage_y(b)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


@pytest.mark.parametrize("preset", ["light", "heavy", "mixed"])
def test_layered_rain_deterministic_per_seed(preset):
    img = _smooth_image(64, 80)
    a = synthesize_rain(img, preset, np.random.default_rng([3, 4]))
    b = synthesize_rain(img, preset, [3, 4])
    c = synthesize_rain(img, preset, [3, 5])
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert (a != img).mean() > 0.02


def test_layered_rain_dtypes_and_shapes():
    rng = np.random.default_rng(0)
    u8 = _smooth_image(40, 50)
    f32 = u8.astype(np.float32) / 255
    out8, out32 = synthesize_rain(u8, "heavy", 1), synthesize_rain(f32, "heavy", 1)
    assert out8.dtype == np.uint8 and out8.shape == u8.shape
    assert out32.dtype == np.float32 and 0.0 <= out32.min() and out32.max() <= 1.0
    np.testing.assert_allclose(out8 / 255.0, out32, atol=0.51 / 255)  # the same rain, quantised
    f64 = synthesize_rain(f32.astype(np.float64), "heavy", 1)
    assert f64.dtype == np.float64
    u16 = synthesize_rain(u8.astype(np.uint16) * 257, "heavy", 1)
    assert u16.dtype == np.uint16 and np.abs(u16 / 65535.0 - out32).max() < 1e-4
    rgba = rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)
    out = synthesize_rain(rgba, "heavy", 2)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    assert (out[..., :3] != rgba[..., :3]).any()
    gray = synthesize_rain(np.full((20, 24), 0.3, np.float32), "heavy", 2)
    assert gray.shape == (20, 24) and gray.dtype == np.float32 and gray.mean() > 0.3
    with pytest.raises(ValueError):
        synthesize_rain(np.zeros((4, 4), np.int32), "light", 0)
    with pytest.raises(ValueError, match="unknown rain preset"):
        synthesize_rain(u8, "drizzle", 0)


def test_streaks_only_brighten_and_veil_formula_holds():
    img = _smooth_image(64, 72).astype(np.float32) / 255
    streaks_only = RainParams(layers=HEAVY.layers, angle=(10, 10))
    out = synthesize_rain(img, streaks_only, 0)
    assert (out >= img - 1e-6).all() and (out - img).max() > 0.3

    # no streaks: I = B·(1 − α) + α·A with the drawn α map and A, evaluated here in float64
    veil_only = RainParams(layers=(), veil=(0.3, 0.3), veil_variation=(0.4, 0.4), veil_scale=20,
                           atmosphere=(0.9, 0.9), tint=0.02)
    rain = rain_components(64, 72, veil_only, 9)
    alpha, a = rain.alpha.astype(np.float64), rain.atmosphere.astype(np.float64)
    assert np.all(rain.streaks == 0)
    assert 0.2 < alpha.mean() < 0.4 and alpha.std() > 0.03          # spatially varying, moderate
    assert np.abs(np.diff(alpha, axis=1)).max() < 0.05               # smooth
    assert np.all(np.abs(a - 0.9) < 0.1) and len(set(a.tolist())) == 3
    expect = img * (1 - alpha[..., None]) + alpha[..., None] * a
    np.testing.assert_allclose(synthesize_rain(img, veil_only, 9), expect, atol=1e-5)

    # full model: screen of the streaks over the veiled image
    rain = rain_components(64, 72, "heavy", 4)
    v = img * (1 - rain.alpha[..., None].astype(np.float64)) + rain.alpha[..., None] * rain.atmosphere
    r = rain.streaks[..., None].astype(np.float64)
    np.testing.assert_allclose(compose_rain(img, rain), v + r - v * r, atol=1e-5)
    np.testing.assert_allclose(synthesize_rain(img, "heavy", 4), v + r - v * r, atol=1e-5)


@pytest.mark.parametrize("angle", [-30.0, 0.0, 25.0])
def test_streak_layer_angle_and_peak(angle):
    layer = streak_layer(160, 160, density=0.6, length=30, streak_width=2.5, brightness=0.6,
                         angle=angle, rng=1)
    assert layer.dtype == np.float32 and layer.shape == (160, 160)
    assert 0.3 < layer.max() <= 1.0
    est, ratio = _orientation(layer)
    assert abs((est - angle + 90) % 180 - 90) < 3, (angle, est)
    assert ratio > 5
    # a lone streak peaks at most at its brightness (intensity = brightness · U(0.6, 1))
    lone = [streak_layer(96, 96, density=0.05, length=30, streak_width=3, brightness=0.5, rng=s)
            for s in range(20)]
    peaks = [p.max() for p in lone if p.max() > 0]
    assert peaks and max(peaks) <= 0.5 * 1.08 and np.median(peaks) > 0.5 * 0.55
    # per-streak angle jitter spreads the orientations: weaker anisotropy
    jittered = streak_layer(160, 160, density=0.6, length=30, streak_width=2.5, brightness=0.6,
                            angle=angle, angle_spread=25, rng=1)
    assert _orientation(jittered)[1] < ratio / 2


def test_presets_and_interpolation():
    assert preset_params("light") is LIGHT and preset_params("heavy") is HEAVY
    assert interpolate_params(LIGHT, HEAVY, 0.0) == LIGHT
    assert interpolate_params(LIGHT, HEAVY, 1.0) == HEAVY
    half = interpolate_params(LIGHT, HEAVY, 0.5)
    for lh, ll, lm in zip(HEAVY.layers, LIGHT.layers, half.layers):
        assert ll.density[0] < lm.density[0] < lh.density[0]
    # mixed draws a different severity per rng
    drawn = {preset_params("mixed", np.random.default_rng(s)).veil for s in range(5)}
    assert len(drawn) == 5
    with pytest.raises(ValueError):
        LayerParams(brightness=(0.5, 1.5))
    with pytest.raises(ValueError):
        RainParams(veil=(0.4, 0.2))


def test_heavier_presets_lower_psnr():
    imgs = [_smooth_image(96, 128, seed=s) for s in range(4)]
    light = preset_statistics(imgs, "light", seed=1)
    heavy = preset_statistics(imgs, "heavy", seed=1)
    mixed = preset_statistics(imgs * 3, "mixed", seed=1)
    assert light["mean"] > mixed["median"] > heavy["mean"]
    assert light["mean"] - heavy["mean"] > 8
    # preset_statistics's PSNR-Y agrees with an independent computation
    rainy = synthesize_rain(imgs[0], "light", np.random.default_rng([1, 0]))
    assert abs(light["psnr"][0] - _psnr_y_oracle(rainy, imgs[0])) < 1e-3


def test_fast_enough_for_on_the_fly_crops():
    import time
    img = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    times = []
    for s in range(10):
        t = time.perf_counter()
        synthesize_rain(img, "heavy", s)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 0.02  # ~1 ms on one idle core; loose for loaded machines


def _clean208(shared_data, n):
    names = sorted(os.listdir(os.path.join(shared_data, "Clean208")))[:n]
    return [read_image(os.path.join(shared_data, "Clean208", name)).pixels() for name in names]


def test_presets_match_their_calibrated_psnr_on_real_photos(shared_data):
    imgs = _clean208(shared_data, 8)
    light = preset_statistics(imgs, "light")
    heavy = preset_statistics(imgs, "heavy")
    mixed = preset_statistics(imgs * 2, "mixed")
    # bands: mean of 8 images within ~2 std-errors of the 40-image calibration (27.2 / 14.1 dB);
    # Rain100L's rainy inputs score 26.90 dB, Rain100H's about 13.5 dB
    assert 25.0 < light["mean"] < 29.5, light
    assert 12.5 < heavy["mean"] < 16.0, heavy
    assert mixed["max"] - mixed["min"] > 9 and heavy["mean"] < mixed["median"] < light["mean"], mixed
    for i in range(2):  # per-image PSNR-Y as scikit-image computes it (Y rounding may differ by 1e-5)
        rainy = synthesize_rain(imgs[i], "light", np.random.default_rng([0, i]))
        assert abs(_psnr_y_oracle(rainy, imgs[i]) - light["psnr"][i]) < 1e-3


def test_cli_presets_and_holdout_set(tmp_path, capsys):
    from ddsa_model.pipeline.metrics import psnr_y
    from ddsa_model.pipeline.synthetic_data import split_holdout

    clean = _write_clean(tmp_path / "clean", 6)
    base = [str(tmp_path / "clean"), "--no-progress", "--seed", "2"]
    assert synth_main(base + ["--preset", "light", "-o", str(tmp_path / "l")]) == 0
    assert synth_main(base + ["--preset", "light", "-o", str(tmp_path / "l2")]) == 0
    assert synth_main(base + ["--preset", "heavy", "-o", str(tmp_path / "h")]) == 0
    light, heavy = [], []
    for p in clean:
        a = (tmp_path / "l" / "input" / p.name).read_bytes()
        assert a == (tmp_path / "l2" / "input" / p.name).read_bytes()
        src = read_image(p).pixels()
        light.append(psnr_y(read_image(tmp_path / "l" / "input" / p.name).pixels(), src))
        heavy.append(psnr_y(read_image(tmp_path / "h" / "input" / p.name).pixels(), src))
    assert np.mean(light) > np.mean(heavy) + 8
    assert json.loads((tmp_path / "h" / "synth.json").read_text())["preset"] == "heavy"
    # the rain of one image is the documented function of (seed, output name)
    import zlib
    expect = synthesize_rain(read_image(clean[0]).pixels(), "heavy", np.random.default_rng([2, zlib.crc32(b"clean0")]))
    np.testing.assert_array_equal(read_image(tmp_path / "h" / "input" / "clean0.png").pixels(), expect)

    # --holdout N: exactly the images split_holdout holds out, nothing else
    assert synth_main(base + ["--preset", "heavy", "--holdout", "2", "-o", str(tmp_path / "v")]) == 0
    held = split_holdout(clean, 2, 0)[1]
    assert sorted(p.name for p in (tmp_path / "v" / "input").iterdir()) == [p.name for p in held]
    assert sorted(p.name for p in (tmp_path / "v" / "target").iterdir()) == [p.name for p in held]
    assert [p.name for p in find_pairs(tmp_path / "v")] == [p.name for p in held]

    capsys.readouterr()
    assert synth_main(base + ["--preset", "heavy", "--density", "0.01", "-o", str(tmp_path / "x")]) == 2
    assert "--preset cannot be combined with --density" in capsys.readouterr().err
    assert synth_main(base + ["--holdout", "7", "-o", str(tmp_path / "y")]) == 2
    assert "only 6 input image(s)" in capsys.readouterr().err
