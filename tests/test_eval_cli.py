"""ddsa-eval run as a user would, checked against scikit-image / our NIQE on the saved outputs,
and the published Rain100L input figure reproduced from the CLI."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from image_oracles import skimage_y as _y
import torch
from PIL import Image

from ddsa_model.pipeline import iqa
from ddsa_model.cli import evaluate as cli

skm = pytest.importorskip("skimage.metrics")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def _small_set(shared_data, dst, names, size=64):
    """A paired set of crops of real Rain100L pairs (small, so the tiny model runs fast)."""
    for sub in ("input", "target"):
        os.makedirs(dst / sub, exist_ok=True)
        for n in names:
            im = Image.open(os.path.join(shared_data, "Rain100L", sub, n)).convert("RGB")
            im.crop((10, 20, 10 + size + 8, 20 + size)).save(dst / sub / n)


def test_paired_set_scores_match_skimage_on_saved_outputs(shared_data, tmp_path, tiny_ckpt):
    data = tmp_path / "Rain100L"
    _small_set(shared_data, data, ["1.png", "2.png", "3.png"])
    out_json, out_csv, saved = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "saved"
    proc = subprocess.run(
        [sys.executable, "-m", "ddsa_model.cli.evaluate", "--data", str(data), "--weights", tiny_ckpt,
         "--json", str(out_json), "--csv", str(out_csv), "--save-images", str(saved), "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Rain100L" in proc.stdout and "PSNR-Y" in proc.stdout
    report = json.loads(out_json.read_text())
    s = report["sets"]["Rain100L"]
    assert s["n"] == 3 and s["failed"] == []
    psnrs, ssims = [], []
    for row in s["images"]:
        out = np.asarray(Image.open(saved / "Rain100L" / row["image"]))
        tgt = np.asarray(Image.open(data / "target" / row["image"]).convert("RGB"))
        p = skm.peak_signal_noise_ratio(_y(tgt), _y(out), data_range=255)
        q = skm.structural_similarity(_y(out), _y(tgt), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255)
        assert abs(row["psnr"] - p) <= 1e-6 and abs(row["ssim"] - q) <= 1e-6
        psnrs.append(p)
        ssims.append(q)
    assert s["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert s["ssim"] == pytest.approx(np.mean(ssims), abs=1e-9)
    # the saved output is the model's output, quantised
    from ddsa_model import load_model
    model = load_model(tiny_ckpt)
    rain = np.asarray(Image.open(data / "input" / "2.png").convert("RGB")) / 255.0
    with torch.no_grad():
        y = model(torch.from_numpy(rain.astype(np.float32)).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    expect = np.round(y.clamp(0, 1).numpy() * 255)
    assert np.abs(np.asarray(Image.open(saved / "Rain100L" / "2.png")) - expect).max() <= 1
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["image"] for r in rows] == ["1.png", "2.png", "3.png", "MEAN"]
    assert float(rows[-1]["psnr"]) == pytest.approx(s["psnr"], rel=1e-12)


def test_input_only_reproduces_published_rain100l_figure(shared_data, capsys):
    out = cli.main(["--data", os.path.join(shared_data, "Rain100L"), "--input-only", "--quiet"])
    assert out == 0
    text = capsys.readouterr().out
    assert "26.90" in text and "0.8383" in text  # published: 26.90 dB / 0.838


def test_unpaired_set_gets_niqe_and_brisque(shared_data, tmp_path, tiny_ckpt, capsys):
    real = tmp_path / "RealRain"
    real.mkdir()
    for n in ("1.jpg", "71.jpg"):
        Image.open(os.path.join(shared_data, "RealRain", n)).convert("RGB").resize((200, 130)).save(real / n)
    iqa_dir = os.path.join(shared_data, "iqa")
    out_json = tmp_path / "r.json"
    args = ["--data", str(tmp_path), "--sets", "RealRain", "--weights", tiny_ckpt, "--iqa-dir", iqa_dir,
            "--json", str(out_json), "--save-images", str(tmp_path / "saved"), "--quiet"]
    assert cli.main(args) == 0
    s = json.loads(out_json.read_text())["sets"]["RealRain"]
    scorer = iqa.NIQE(os.path.join(iqa_dir, "niqe_pris_params.npz"))
    for row in s["images"]:
        saved = np.asarray(Image.open(tmp_path / "saved" / "RealRain" / (row["image"][:-4] + ".png")))
        assert row["niqe"] == pytest.approx(scorer(saved), rel=1e-12)
        if row["brisque"] is not None:  # OpenCV contrib installed
            assert row["brisque"] == pytest.approx(
                iqa.brisque(saved, os.path.join(iqa_dir, "brisque_model_live.yml"),
                            os.path.join(iqa_dir, "brisque_range_live.yml")), rel=1e-6)
    assert s["niqe"] == pytest.approx(np.mean([r["niqe"] for r in s["images"]]))
    # the same set without parameter files: a clear error before any work
    assert cli.main(["--data", str(real), "--input-only", "--quiet"]) == 2
    assert "--iqa-dir" in capsys.readouterr().err


def test_bad_data_is_reported_clearly(tmp_path, capsys):
    (tmp_path / "S" / "input").mkdir(parents=True)
    (tmp_path / "S" / "target").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "S" / "input" / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "S" / "target" / "b.png")
    assert cli.main(["--data", str(tmp_path / "S"), "--input-only", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "input/a.png" in err and "target/b.png" in err
    assert cli.main(["--data", str(tmp_path), "--sets", "Nope", "--input-only", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Nope" in err and "available: S" in err
    assert cli.main(["--data", str(tmp_path / "missing"), "--input-only"]) == 2


def test_shipped_default_weights_improve_rain100l(shared_data, tmp_path):
    """Without --weights ddsa-eval uses the shipped ddsa-small model; on crops of held-out Rain100L
    pairs it must beat the rainy input on every image."""
    from ddsa_model import pretrained
    assert os.path.isfile(pretrained.default_weights_path())  # shipped in the package: missing is a failure
    data = tmp_path / "Rain100L"
    _small_set(shared_data, data, ["11.png", "42.png", "77.png", "98.png"], size=128)
    base, derained = tmp_path / "in.json", tmp_path / "out.json"
    assert cli.main(["--data", str(data), "--input-only", "--json", str(base), "--quiet"]) == 0
    assert cli.main(["--data", str(data), "--json", str(derained), "--quiet", "--device", "cpu"]) == 0
    before = {r["image"]: r["psnr"] for r in json.loads(base.read_text())["sets"]["Rain100L"]["images"]}
    after = {r["image"]: r["psnr"] for r in json.loads(derained.read_text())["sets"]["Rain100L"]["images"]}
    assert all(after[k] > before[k] for k in before), (before, after)
    assert np.mean(list(after.values())) > np.mean(list(before.values())) + 3.0


def test_self_ensemble_is_applied_and_recorded(shared_data, tmp_path, tiny_ckpt, capsys):
    data = tmp_path / "Rain100L"
    _small_set(shared_data, data, ["5.png"], size=32)
    report_path, saved = tmp_path / "se.json", tmp_path / "saved"
    assert cli.main(["--data", str(data), "--weights", tiny_ckpt, "--self-ensemble", "--json", str(report_path),
                     "--save-images", str(saved), "--quiet", "--device", "cpu"]) == 0
    report = json.loads(report_path.read_text())
    assert report["protocol"]["self_ensemble"] is True
    # the saved output is the mean of the model's outputs over the 4 flips, flipped back
    from ddsa_model import load_model
    model = load_model(tiny_ckpt)
    rain = torch.from_numpy((np.asarray(Image.open(data / "input" / "5.png").convert("RGB")) / 255.0)
                            .astype(np.float32)).permute(2, 0, 1)[None]
    outs = []
    with torch.no_grad():
        for dims in ([], [3], [2], [2, 3]):
            outs.append(model(rain.flip(dims)).flip(dims) if dims else model(rain))
    expect = np.round(torch.stack(outs).mean(0)[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255)
    assert np.abs(np.asarray(Image.open(saved / "Rain100L" / "5.png")) - expect).max() <= 1
    assert cli.main(["--data", str(data), "--input-only", "--self-ensemble", "--quiet"]) == 2
    assert "--self-ensemble needs a model" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--attention-backend", "fastest"], "error: --attention-backend: backend='fastest' is not a known backend"),
    (["--attention-backend", "cuda"], "error: --attention-backend cuda on cpu (float32): backend='cuda'"),
])
def test_bad_attention_backend_is_one_clear_error_before_scoring(shared_data, tmp_path, tiny_ckpt, capsys,
                                                                  extra, message):
    data = tmp_path / "Rain100L"
    _small_set(shared_data, data, ["1.png"])
    rc = cli.main(["--data", str(data), "--weights", tiny_ckpt, "--json", str(tmp_path / "r.json"), "--quiet",
                   "--device", "cpu", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert not (tmp_path / "r.json").exists()


def test_cuda_device_without_a_gpu_is_a_clear_error(shared_data, tmp_path, tiny_ckpt, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    data = tmp_path / "Rain100L"
    _small_set(shared_data, data, ["1.png"])
    rc = cli.main(["--data", str(data), "--weights", tiny_ckpt, "--quiet", "--device", "cuda"])
    assert rc == 2 and "--device cuda: no CUDA device is available" in capsys.readouterr().err
