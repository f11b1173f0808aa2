"""Trainer: lr schedule, config parsing/errors, loss decrease + validation PSNR, bitwise resume,
2-process DDP (gloo) against gradient accumulation, AMP, and the CLI as a user runs it."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddsa_model import load_model
from ddsa_model.cli.train import main as train_main
from ddsa_model.pipeline.synth import add_rain
from ddsa_model.pipeline.train import (
    ConfigError, ConstantCosineLR, list_checkpoints, load_config, parameter_digest, train,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny shapes: one thread is fastest and makes results independent of the machine's core count.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """8 rainy/clean 32×40 pairs made with the synthetic rain generator."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "input").mkdir()
    (root / "target").mkdir()
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:32, 0:40] / 40.0
    for i in range(8):
        ph = rng.uniform(0, 6, 3)
        clean = np.stack([0.45 + 0.3 * np.sin(4 * xs + ph[c]) * np.cos(3 * ys + ph[c]) for c in range(3)], 2)
        clean = np.round(clean * 255).astype(np.uint8)
        rainy = add_rain(clean, density=0.03, length=8, angle=10, blur=0.8, brightness=0.8, rng=i)
        Image.fromarray(clean).save(root / "target" / f"{i}.png")
        Image.fromarray(rainy).save(root / "input" / f"{i}.png")
    return root


def _overrides(data: Path, out: Path, **kw) -> list[str]:
    base = {"data.train": str(data), "model.preset": "tiny", "train.iterations": 6, "train.batch_size": 2,
            "data.crop": 16, "log.out_dir": str(out), "log.progress": False, "log.tensorboard": False,
            "log.log_interval": 1, "log.ckpt_interval": 0, "optim.lr": 2e-3, "train.num_threads": 1,
            # CPU unless a test asks for CUDA: the bitwise stop-and-resume checks need deterministic
            # kernels, which cuDNN is not by default.
            "train.device": "cpu"}
    base.update({k.replace("__", "."): v for k, v in kw.items()})
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()]


def _run(data, out, resume=None, **kw):
    return train(load_config(None, _overrides(data, out, **kw)), resume=resume)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_constant_then_cosine_schedule():
    base, eta, total, const = 2e-4, 1e-6, 100, 30
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = ConstantCosineLR(opt, total, const, eta_min=eta)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for t, lr in enumerate(lrs):  # paper: constant, then cosine annealing to eta_min
        expected = base if t < const else eta + (base - eta) * (1 + math.cos(math.pi * (t - const) / (total - const))) / 2
        assert lr == pytest.approx(expected, rel=1e-12)
    assert lrs[const] == base and lrs[total] == pytest.approx(eta)
    assert lrs[65] == pytest.approx((base + eta) / 2)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_config_file_overrides_and_errors(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(textwrap.dedent("""
        model: {preset: tiny, overrides: {attention: dense}}
        data: {train: /some/where, crop: 64, progressive: [[0, 32], [100, 64]]}
        optim: {lr: 2e-4}
        train: {iterations: 1000}
    """))
    cfg = load_config(cfg_file, ["train.batch_size=4", "optim.betas=[0.8, 0.99]", "model.overrides.ffn=gdfn",
                                 "data.val=/val/set"])
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)   # YAML reads 2e-4 as a string
    assert cfg.train.batch_size == 4 and cfg.train.iterations == 1000 and cfg.data.crop == 64
    assert cfg.optim.betas == [0.8, 0.99] and cfg.optim.weight_decay == 1e-4
    assert cfg.model.overrides == {"attention": "dense", "ffn": "gdfn"}
    assert cfg.data.train == ["/some/where"] and cfg.data.val == ["/val/set"]

    bad = {
        "train.iteratons=5": "unknown key in section 'train': 'iteratons' (did you mean 'iterations'?)",
        "trian.iterations=5": "unknown config section 'trian' (did you mean 'train'?)",
        "train.batch_size=0": "train.batch_size must be >= 1",
        "train.batch_size=two": "train.batch_size must be an integer, got 'two'",
        "train.amp=fp8": "train.amp must be 'none', 'bf16' or 'fp16'",
        "data.progressive=[[0, 4]]": "data.progressive entries must be [start_iteration, crop]",
        "optim.betas=[0.9]": "optim.betas must be two numbers",
        "data.small_images=crop": "data.small_images must be 'pad' or 'reject'",
        "train.stop_at=5000": "train.stop_at must be in [0, train.iterations]",
        "train.iterations": "is not of the form section.key=value",
        "data.synthetic_preset=drizzle": "data.synthetic_preset must be 'light', 'heavy' or 'mixed'",
        "data.synthetic_weight=1.5": "data.synthetic_weight must be in [0, 1]",
        "data.synthetic_holdout=-1": "data.synthetic_holdout must be >= 0",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError) as exc:
            load_config(cfg_file, [override])
        assert message in str(exc.value), (override, str(exc.value))
    with pytest.raises(ConfigError, match="data.train .* or data.synthetic .* is required"):
        load_config(None, [])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def _independent_psnr(model: torch.nn.Module, root: Path, n: int) -> float:
    """Mean PSNR of the model's outputs on the first n pairs: skimage's BT.601 Y, rounded (MATLAB)."""
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio

    psnrs = []
    for name in sorted(os.listdir(root / "input"))[:n]:
        rainy = np.asarray(Image.open(root / "input" / name), dtype=np.float32) / 255
        clean = np.asarray(Image.open(root / "target" / name))
        with torch.no_grad():
            y = model(torch.from_numpy(rainy).permute(2, 0, 1)[None])[0]
        derained = y.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        ya, yb = (np.round(rgb2ycbcr(im)[..., 0]) for im in (derained, clean))
        psnrs.append(peak_signal_noise_ratio(yb, ya, data_range=255))
    return float(np.mean(psnrs))


def test_training_reduces_loss_and_reports_true_psnr(pairs, tmp_path):
    out = tmp_path / "run"
    summary = _run(pairs, out, train__iterations=40, optim__lr=3e-3, data__val=str(pairs), data__val_max_images=2,
                   data__progressive=[[0, 16], [20, 24]], log__val_interval=0)
    losses = [loss for _, loss in summary["loss_history"]]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-8:]) < 0.75 * np.mean(losses[:8])

    recs = _records(out)
    crops = {r["iteration"]: r["crop"] for r in recs if "crop" in r}
    assert crops[20] == 16 and crops[21] == 24 and crops[40] == 24
    (val,) = [r["val_psnr_y"] for r in recs if "val_psnr_y" in r]

    # independent PSNR: the saved weights, skimage's BT.601 Y (rounded, MATLAB-style) and PSNR
    model = load_model(out / "model.safetensors")
    assert parameter_digest(model) == summary["weights_sha256"]
    assert val == pytest.approx(_independent_psnr(model, pairs, 2), abs=1e-6)
    assert (out / "config.yaml").is_file() and list_checkpoints(out)[-1][0] == 40


@pytest.mark.parametrize("workers,accum", [(0, 1), (2, 2)])
def test_resume_is_bitwise_identical(pairs, tmp_path, workers, accum):
    common = dict(train__iterations=6, data__num_workers=workers, train__grad_accum=accum,
                  data__progressive=[[0, 16], [2, 24]], optim__constant_fraction=0.3, log__keep_checkpoints=2)
    full = _run(pairs, tmp_path / "full", **common)
    first = _run(pairs, tmp_path / "split", train__stop_at=3, **common)
    assert first["weights"] is None and [i for i, _ in list_checkpoints(tmp_path / "split")] == [3]
    assert first["weights_sha256"] != full["weights_sha256"]
    resumed = _run(pairs, tmp_path / "split", resume="auto", **common)
    assert resumed["start_iteration"] == 3

    assert resumed["weights_sha256"] == full["weights_sha256"]
    assert [v for i, v in resumed["loss_history"]] == [v for i, v in full["loss_history"] if i > 3]
    a = torch.load(list_checkpoints(tmp_path / "full")[-1][1], weights_only=True)
    b = torch.load(list_checkpoints(tmp_path / "split")[-1][1], weights_only=True)
    for name in a["model"]:  # parameters and BatchNorm buffers
        assert torch.equal(a["model"][name], b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert set(a) >= {"model", "optimizer", "scheduler", "scaler", "rng", "iteration", "sampler"}
    leftovers = [p.name for p in (tmp_path / "split" / "checkpoints").iterdir() if not p.name.startswith("iter_")]
    assert leftovers == []                                                  # no temporary files left
    assert [i for i, _ in list_checkpoints(tmp_path / "split")] == [3, 6]   # keep_checkpoints=2


def test_resume_errors(pairs, tmp_path):
    _run(pairs, tmp_path / "r", train__iterations=2)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        _run(pairs, tmp_path / "r", train__iterations=2)
    with pytest.raises(ConfigError, match="holds a different model"):
        _run(pairs, tmp_path / "r", resume="auto", train__iterations=4, model__overrides={"dim": 8})
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        _run(pairs, tmp_path / "r2", resume=str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        _run(pairs, tmp_path / "r3", resume=str(junk))


def test_ddp_two_processes_match_gradient_accumulation(pairs, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import os, sys, torch
        from ddsa_model.pipeline.train import load_config, train
        summary = train(load_config(None, sys.argv[2:]))
        state = {k: v.detach().clone() for k, v in summary["model"].state_dict().items()}
        torch.save(state, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    """))
    out = tmp_path / "ddp"
    args = _overrides(pairs, out, train__iterations=3, data__val=str(pairs), data__val_max_images=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), str(tmp_path)] + args
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in r0:  # parameters and (rank 0's, broadcast) BatchNorm buffers
        assert torch.equal(r0[name], r1[name]), name
    start = _records(out)[0]
    assert start["event"] == "start" and start["world_size"] == 2

    # 2 ranks × batch 2 see exactly the micro-batches of 1 process × batch 2 × 2 accumulation steps;
    # DDP's mean of the two gradients, (g0 + g1) / 2, equals the accumulated g0/2 + g1/2 bit for bit
    # (scaling by a power of two is exact), so the weights agree exactly.
    single = _run(pairs, tmp_path / "accum", train__iterations=3, train__grad_accum=2)
    params = dict(single["model"].named_parameters())   # buffers differ: BN stats see one micro-batch per rank
    for name, p in params.items():
        assert torch.equal(r0[name], p.detach()), name
    saved = load_model(out / "model.safetensors")
    for name, t in saved.state_dict().items():
        assert torch.equal(t, r0[name]), name
    # validation is sharded over the ranks (2 + 1 images) and all-reduced into the mean
    (val,) = [r["val_psnr_y"] for r in _records(out) if "val_psnr_y" in r]
    assert val == pytest.approx(_independent_psnr(saved, pairs, 3), abs=1e-6)


def test_bf16_autocast_on_cpu_and_fp16_needs_cuda(pairs, tmp_path):
    fp32 = _run(pairs, tmp_path / "fp32", train__iterations=3)
    bf16 = _run(pairs, tmp_path / "bf16", train__iterations=3, train__amp="bf16")
    a = dict(fp32["model"].named_parameters())
    diffs, norms = 0.0, 0.0
    for name, p in bf16["model"].named_parameters():
        diffs += float((p - a[name]).detach().pow(2).sum())
        norms += float(a[name].detach().pow(2).sum())
    assert 0 < math.sqrt(diffs / norms) < 0.05          # autocast ran, and trained the same model
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            _run(pairs, tmp_path / "fp16", train__amp="fp16")


def test_cli_reports_bad_data_without_writing(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "input").mkdir(parents=True)
    (root / "target").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "input" / "a.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "target" / "a.png")
    (root / "input" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "target" / "b.png")
    rc = train_main(_overrides(root, tmp_path / "out"))
    err = capsys.readouterr().err
    assert rc == 2 and "ddsa-train: error: 1 problem(s)" in err and "input/b.png: unreadable" in err
    assert not (tmp_path / "out").exists()


def test_cli_bad_config_as_a_user_runs_it(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {preset: tiny}\ndata: {train: /nowhere}\ntrain: {iteratons: 10}\n")
    res = subprocess.run([sys.executable, "-m", "ddsa_model.cli.train", "--config", str(cfg)],
                         capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert res.returncode == 2
    assert "ddsa-train: error:" in res.stderr and "did you mean 'iterations'" in res.stderr
    assert str(cfg) in res.stderr and "Traceback" not in res.stderr


def test_shipped_configs_load_and_example_documents_the_defaults():
    from ddsa_model.pipeline.train import RunConfig
    configs = REPO / "ddsa_model" / "configs"
    example = load_config(configs / "example.yaml").to_dict()
    defaults = RunConfig().to_dict()
    documented_changes = {("model", "preset"), ("data", "train"), ("data", "val")}
    for section, values in defaults.items():
        for key, default in values.items():
            if (section, key) in documented_changes:
                continue
            got = example[section][key]
            assert got == (pytest.approx(default, rel=1e-3) if isinstance(default, float) else default), (section, key)
    small = load_config(configs / "ddsa_small_rainl.yaml")
    assert small.model.preset == "ddsa-small" and small.train.batch_size == 8
    assert 64 <= small.data.crop and all(64 <= c <= 96 for _, c in small.data.progressive)
    assert small.optim.eta_min == 1e-6 and small.data.train == ["data/RainTrainL"]


def _checkpoint(out: Path, iteration: int) -> dict:
    (path,) = [p for i, p in list_checkpoints(out) if i == iteration]
    return torch.load(path, weights_only=True)


def _state_distance(a: dict, b: dict) -> float:
    """Largest |a − b| over the weights and the optimizer's moments and step counts."""
    worst = 0.0
    for name, t in a["model"].items():
        if t.is_floating_point():
            worst = max(worst, (t.double() - b["model"][name].double()).abs().max().item())
    for idx, state in a["optimizer"]["state"].items():
        other = b["optimizer"]["state"].get(idx)
        if other is None:
            return float("inf")
        for key, t in state.items():
            if torch.is_tensor(t):
                worst = max(worst, (t.double() - other[key].double()).abs().max().item())
    return worst


def _check_resume_against_a_broken_one(pairs: Path, tmp_path: Path, **common) -> tuple[float, float, float]:
    """Full run vs stop at 4 + resume vs the same resume with the optimizer's state dropped from the
    checkpoint (a realistic resume bug). Returns (noise, good, broken): the distance between two
    independent runs' iteration-4 states, and the full run's iteration-8 state's distance to the
    resumed one and to the broken one."""
    import shutil

    common = dict(train__iterations=8, log__ckpt_interval=4, log__keep_checkpoints=0, **common)
    _run(pairs, tmp_path / "full", **common)
    _run(pairs, tmp_path / "split", train__stop_at=4, **common)
    shutil.copytree(tmp_path / "split", tmp_path / "broken")
    (_, path), = list_checkpoints(tmp_path / "broken")
    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer"]["state"] = {}
    torch.save(ckpt, path)
    _run(pairs, tmp_path / "split", resume="auto", **common)
    _run(pairs, tmp_path / "broken", resume="auto", **common)
    full4, full8 = _checkpoint(tmp_path / "full", 4), _checkpoint(tmp_path / "full", 8)
    noise = _state_distance(full4, _checkpoint(tmp_path / "split", 4))
    good = _state_distance(full8, _checkpoint(tmp_path / "split", 8))
    broken = _state_distance(full8, _checkpoint(tmp_path / "broken", 8))
    assert _checkpoint(tmp_path / "split", 8)["scaler"] == full8["scaler"]
    return noise, good, broken


def test_a_resume_that_drops_the_optimizer_state_is_detected(pairs, tmp_path):
    """The check the GPU resume test relies on, on the CPU: an exact resume is at distance 0 and
    the broken one (fresh AdamW moments) far from it."""
    noise, good, broken = _check_resume_against_a_broken_one(pairs, tmp_path)
    assert noise == 0 and good == 0
    assert broken > 1e-4


@pytest.mark.gpu
def test_fp16_with_grad_scaler_on_cuda(pairs, tmp_path):
    out = tmp_path / "cuda"
    summary = _run(pairs, out, train__iterations=8, train__amp="fp16", train__device="cuda",
                   log__ckpt_interval=4)
    losses = [v for _, v in summary["loss_history"]]
    assert all(math.isfinite(v) for v in losses) and np.mean(losses[-3:]) < np.mean(losses[:3])
    ckpt = torch.load(list_checkpoints(out)[0][1], weights_only=True)
    assert ckpt["iteration"] == 4 and ckpt["scaler"]["scale"] > 0
    assert next(summary["model"].parameters()).is_cuda


@pytest.mark.gpu
def test_fp16_resume_on_cuda_matches_the_full_run(pairs, tmp_path):
    """Stop at 4 + resume against the uninterrupted run, weights and AdamW moments included, with
    cuDNN's deterministic algorithms: bitwise when two independent runs of the first 4 iterations
    agree bitwise (the kernels are deterministic), else within a tenth of the distance a resume
    without the optimizer's state ends at (the tolerance derived from a broken resume)."""
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        noise, good, broken = _check_resume_against_a_broken_one(pairs, tmp_path, train__amp="fp16",
                                                                 train__device="cuda")
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    assert broken > 1e-4, f"the broken resume must move the weights: {broken:.3e}"
    if noise == 0:
        assert good == 0, f"deterministic kernels, yet the resumed run is {good:.3e} from the full one"
    assert good <= 0.1 * broken, f"resumed {good:.3e} vs broken resume {broken:.3e} (run-to-run {noise:.3e})"


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["tiny", "ddsa-small"])
def test_model_output_on_cuda_matches_cpu(preset):
    """The same weights on CUDA (attention backend "auto") and on the CPU, both in fp32 with TF32
    off. Outputs are x + residual with |x| ≤ 1; every layer differs only in summation order
    (~1e-7 relative per fp32 sum), which some 100 layers grow to ~1e-5: atol 1e-4 leaves a margin
    and still fails on any real kernel error (those are ≥ 1e-3 at these sizes)."""
    from ddsa_model import build_model

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    model = build_model(preset).eval()
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            want = model(x)
            got = model.cuda()(x.cuda()).cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    assert not torch.equal(got, x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_tensorboard_scalars_when_installed(pairs, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    summary = _run(pairs, out, train__iterations=3, log__tensorboard=True)
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    loss = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert [s for s, _ in loss] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in loss], [v for _, v in summary["loss_history"]], rtol=1e-6)


def test_cli_print_config_with_resume_flag_before_overrides(capsys):
    import yaml

    assert train_main(["--resume", "train.iterations=5", "data.train=/x", "optim.lr=3e-4", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["iterations"] == 5 and cfg["optim"]["lr"] == 3e-4 and cfg["data"]["train"] == ["/x"]


def test_synthetic_mix_resumes_bitwise_and_never_draws_held_out_images(pairs, tmp_path):
    """data.synthetic renders rain on clean images per crop, mixed with the real pairs by weight;
    the hold-out of the first source is never drawn and a resumed run equals the full one."""
    from ddsa_model.pipeline.synthetic_data import list_clean_images, split_holdout

    common = dict(train__iterations=6, data__synthetic=[str(pairs / "target")], data__synthetic_weight=0.5,
                  data__synthetic_preset="heavy", data__synthetic_holdout=3, log__keep_checkpoints=2)
    full = _run(pairs, tmp_path / "full", **common)
    _run(pairs, tmp_path / "split", train__stop_at=3, **common)
    resumed = _run(pairs, tmp_path / "split", resume="auto", **common)
    assert resumed["weights_sha256"] == full["weights_sha256"]
    assert _records(tmp_path / "full")[0]["train_pairs"] == 8 + 5   # 8 real pairs + 8 − 3 clean images

    from ddsa_model.pipeline.train.loop import _datasets

    cfg = load_config(None, _overrides(pairs, tmp_path / "x", **common))
    train_set, _ = _datasets(cfg)
    synthetic = train_set.datasets[1]
    _, held = split_holdout(list_clean_images(pairs / "target"), n_holdout=3)
    assert set(synthetic.paths).isdisjoint(held) and len(synthetic.paths) == 5


def test_init_weights_starts_from_the_given_model(pairs, tmp_path):
    from ddsa_model import build_model, save_model

    torch.manual_seed(123)
    start = build_model("tiny")
    save_model(start, str(tmp_path / "start.safetensors"))
    summary = _run(pairs, tmp_path / "run", train__iterations=1, optim__lr=1e-12, optim__eta_min=0.0,
                   model__init_weights=str(tmp_path / "start.safetensors"))
    trained = load_model(summary["weights"])
    trained_params = dict(trained.named_parameters())
    for name, value in start.named_parameters():   # an lr of 1e-12 leaves the weights where they started
        assert torch.allclose(trained_params[name], value, atol=1e-6), name
    fresh = dict(build_model("tiny").named_parameters())
    assert any(not torch.allclose(fresh[n], v) for n, v in start.named_parameters())  # not a default init
    with pytest.raises(ConfigError, match="model.init_weights"):
        _run(pairs, tmp_path / "bad", model__init_weights=str(tmp_path / "missing.safetensors"))
