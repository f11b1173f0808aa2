"""ddsa-demo end to end on tiny images with a tiny checkpoint: the panels hold what they claim and
the printed PSNR is the PSNR of those panels (checked with scikit-image)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from image_oracles import skimage_y as _y
import torch
from PIL import Image

from ddsa_model import load_model
from ddsa_model.cli import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
skdata = pytest.importorskip("skimage.data")
skm = pytest.importorskip("skimage.metrics")



def test_demo_end_to_end_on_sample_images(tmp_path, tiny_ckpt):
    out = tmp_path / "demo"
    size = 40
    proc = subprocess.run([sys.executable, "-m", "ddsa_model.cli.demo", "--out", str(out), "--weights", tiny_ckpt,
                           "--size", str(size), "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["demo.png", "demo_astronaut.png", "demo_chelsea.png", "demo_coffee.png"]

    coffee = skdata.coffee()  # 400 x 600
    clean = np.asarray(Image.fromarray(coffee).resize((40, 27), Image.LANCZOS))
    h, w = clean.shape[:2]
    side = np.asarray(Image.open(out / "demo_coffee.png"))
    assert side.shape == (h + demo.CAPTION_H, 3 * w + 2 * demo.GAP, 3)
    panel = [side[demo.CAPTION_H:, i * (w + demo.GAP):i * (w + demo.GAP) + w] for i in range(3)]
    np.testing.assert_array_equal(panel[2], clean)
    assert np.abs(panel[0].astype(int) - clean).max() > 20  # rain was added
    model = load_model(tiny_ckpt)
    with torch.no_grad():
        y = model(torch.from_numpy(panel[0] / np.float32(255)).permute(2, 0, 1)[None].float())
    expect = np.round(y[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255)
    assert np.abs(panel[1] - expect).max() <= 1
    line = next(l for l in proc.stdout.splitlines() if l.startswith("coffee"))
    p_in, p_out = map(float, re.findall(r"(-?\d+\.\d+) dB", line))
    assert p_in == pytest.approx(skm.peak_signal_noise_ratio(_y(clean), _y(panel[0]), data_range=255), abs=0.006)
    assert p_out == pytest.approx(skm.peak_signal_noise_ratio(_y(clean), _y(panel[1]), data_range=255), abs=0.006)


def test_demo_on_user_rainy_folder(tmp_path, tiny_ckpt, capsys):
    src = tmp_path / "mine"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(src / "r.jpg")
    assert demo.main(["--images", str(src), "--rainy", "--out", str(tmp_path / "o"), "--weights", tiny_ckpt]) == 0
    side = np.asarray(Image.open(tmp_path / "o" / "demo_r.png"))
    assert side.shape == (30 + demo.CAPTION_H, 2 * 20 + demo.GAP, 3)  # rainy | derained
    assert demo.main(["--rainy", "--out", str(tmp_path / "o2"), "--weights", tiny_ckpt]) == 2
    assert "--rainy needs --images" in capsys.readouterr().err


def test_demo_without_default_weights_says_so(tmp_path, capsys, monkeypatch):
    from ddsa_model import pretrained
    monkeypatch.setattr(pretrained, "DEFAULT_WEIGHTS", "not_installed.safetensors")  # as in a broken install
    assert demo.main(["--out", str(tmp_path / "o"), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "default weights" in err and "--weights" in err
