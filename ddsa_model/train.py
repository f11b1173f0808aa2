"""The trainer: L1 loss, AdamW, constant-then-cosine lr, AMP, grad clipping and accumulation,
DDP via torchrun (gloo on CPU, nccl on CUDA), atomic checkpoints and exact resume.

    from ddsa_model.train import train
    from ddsa_model.train_config import load_config
    summary = train(load_config("run.yaml", ["train.iterations=1000"]), resume="auto")

Exact resume: a checkpoint holds model, optimizer, scheduler, grad scaler, the RNG states and
the iteration; the training data of iteration t is a pure function of (seed, t) (see
:class:`ddsa_model.data.ResumableSampler`), so stopping at n and resuming reproduces the
uninterrupted run bit for bit on the same device and thread count.

Output folder: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one JSON record per log,
validation and checkpoint event), ``checkpoints/iter_XXXXXXX.pt``, ``model.safetensors`` (final
weights for ``ddsa-eval`` / ``ddsa-derain``) and TensorBoard events when tensorboard is installed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from .atomic import atomic_path, atomic_write
from .data import PairedImageDataset, ResumableSampler, crop_at
from .train_config import ConfigError, RunConfig

CHECKPOINT_RE = re.compile(r"^iter_(\d+)\.pt$")
CHECKPOINT_FORMAT = "ddsa-train-checkpoint-v1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------- lr schedule
class ConstantCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """lr = base for t < ``constant_steps``, then cosine from base to ``eta_min`` at ``total_steps``.

    The paper's schedule (constant 1e-4 for 92K of 300K iterations, then cosine annealing).
    ``t`` is the number of optimizer steps taken so far.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, constant_steps: int,
                 eta_min: float = 1e-6, last_epoch: int = -1) -> None:
        self.total_steps, self.constant_steps, self.eta_min = total_steps, constant_steps, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base: float) -> float:
        if step < self.constant_steps:
            return base
        span = max(1, self.total_steps - self.constant_steps)
        progress = min(1.0, (step - self.constant_steps) / span)
        return self.eta_min + (base - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]


# ----------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_pref: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available (use train.device=cpu)")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(world, rank, local_rank, device)


def _all_mean(values: list[float], info: DistInfo) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name and bytes (identical weights ⇔ identical digests)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    """Global RNG states in types that ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of the checkpoints in ``out_dir/checkpoints``, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def resolve_resume(resume: str | None, out_dir: str) -> Path | None:
    """``None`` → None; ``"auto"`` → latest checkpoint in out_dir or None; a path → that path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(out_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise ConfigError(f"--resume {resume}: no checkpoints (checkpoints/iter_*.pt) in that folder")
        return found[-1][1]
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: no such checkpoint file")
    return path


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any loading failure means an unusable file
        raise ConfigError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a ddsa-train checkpoint (for weights-only files use ddsa-eval/derain)")
    return ckpt


# ----------------------------------------------------------------------------- logging
class _Logger:
    """Rank-0 JSON-lines log, optional TensorBoard writer, optional tqdm bar."""

    def __init__(self, cfg: RunConfig, info: DistInfo, start: int) -> None:
        self.enabled = info.is_main
        self.bar = None
        self.tb = None
        self.path = Path(cfg.log.out_dir) / "metrics.jsonl"
        if not self.enabled:
            return
        if cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(log_dir=str(Path(cfg.log.out_dir) / "tensorboard"))
            except ImportError:
                self.tb = None
        if cfg.log.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=cfg.train.stop_at or cfg.train.iterations, initial=start,
                            desc="ddsa-train", unit="it", dynamic_ncols=True)

    def record(self, **values: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(values) + "\n")
        if self.tb is not None and "iteration" in values:
            for k, v in values.items():
                if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, values["iteration"])

    def progress(self, n: int, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def write(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------- validation
def _psnr_y(out: np.ndarray, ref: np.ndarray) -> float:
    try:
        from .metrics import psnr_y
    except ImportError:  # pragma: no cover - metrics.py ships with the package
        psnr_y = None
    if psnr_y is not None:
        return float(psnr_y(out, ref))
    # MATLAB rgb2ycbcr Y (BT.601, 8-bit), rounded as MATLAB does for uint8 input.
    def y(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return np.round(16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0)
    mse = float(np.mean((y(out) - y(ref)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) uint8, rounded."""
    return t.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def validate(model: torch.nn.Module, dataset: PairedImageDataset, info: DistInfo,
             autocast: contextlib.AbstractContextManager | None = None, max_images: int = 0) -> float:
    """Mean Y-channel PSNR (dB) of ``model`` over ``dataset`` (full images), sharded over ranks."""
    was_training = model.training
    model.eval()
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    total = 0.0
    for i in range(info.rank, n, info.world_size):
        inp, tgt, _name = dataset[i]
        with autocast if autocast is not None else contextlib.nullcontext():
            out = model(inp.unsqueeze(0).to(info.device))
        total += _psnr_y(_to_uint8(out[0]), _to_uint8(tgt))
    model.train(was_training)
    if info.enabled:
        t = torch.tensor([total], dtype=torch.float64, device=info.device)
        dist.all_reduce(t)
        total = float(t.item())
    return total / n


# ----------------------------------------------------------------------------- the loop
def _autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _build_model(cfg: RunConfig) -> torch.nn.Module:
    from . import build_model
    try:
        return build_model(cfg.model.preset, attention_backend=cfg.model.attention_backend, **cfg.model.overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from None


def _init_from(model: torch.nn.Module, path: str) -> None:
    """Copy weights from ``path`` (any file ``load_weights`` reads) into ``model``; every tensor must match."""
    from .pretrained import load_weights

    try:
        source = load_weights(path, attention_backend="reference")
        model.load_state_dict(source.state_dict(), strict=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"model.init_weights: cannot initialise the model from {path}: {exc}") from None


def _write_config(cfg: RunConfig, out_dir: Path) -> None:
    with atomic_write(out_dir / "config.yaml", "w") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)


def train(cfg: RunConfig, resume: str | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary dict (rank 0 and others).

    Under ``torchrun`` (WORLD_SIZE > 1) every rank calls this; rank 0 logs and checkpoints.
    ``resume``: None, "auto" (latest checkpoint in log.out_dir, or a fresh start) or a path.
    """
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    info = _setup_distributed(cfg.train.device)
    try:
        return _train(cfg, resume, info)
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """Everything a checkpoint captures, plus the DDP wrapper."""

    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ConstantCosineLR
    scaler: torch.amp.GradScaler
    iteration: int = 0


def _datasets(cfg: RunConfig) -> tuple[torch.utils.data.Dataset, PairedImageDataset | None]:
    """The training set (real pairs, synthetic rain on clean images, or a weighted mix) and the
    validation set."""
    from .synthetic_data import MixedDataset, SyntheticRainDataset, list_clean_images, split_holdout

    d = cfg.data
    max_crop = max([d.crop] + [c for _, c in d.progressive])
    parts, weights = [], []
    if d.train:
        parts.append(PairedImageDataset(d.train, train=True, flips=d.flips, rot90=d.rot90,
                                        small_images=d.small_images, max_crop=max_crop, cache=d.cache,
                                        max_items=d.max_train_pairs))
        weights.append(1.0 - d.synthetic_weight if d.synthetic else 1.0)
    if d.synthetic:
        # The hold-out comes from the first source alone: the same split as
        # `ddsa-synth FIRST --holdout N --split-seed S`, which writes the held-out check set.
        clean = list_clean_images(d.synthetic[0])
        if d.synthetic_holdout:
            clean, _ = split_holdout(clean, n_holdout=d.synthetic_holdout, seed=d.synthetic_split_seed)
        clean += [p for p in list_clean_images(d.synthetic[1:]) if p not in set(clean)] if d.synthetic[1:] else []
        parts.append(SyntheticRainDataset(clean, d.synthetic_preset, flips=d.flips, rot90=d.rot90, cache=d.cache))
        weights.append(d.synthetic_weight if d.train else 1.0)
    train_set = parts[0] if len(parts) == 1 else MixedDataset(parts, weights)
    val_set = (PairedImageDataset(d.val, train=False, cache=d.cache, max_items=d.val_max_images)
               if d.val else None)
    return train_set, val_set


def _new_run(cfg: RunConfig, info: DistInfo) -> _Run:
    t, o = cfg.train, cfg.optim
    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)
    model = _build_model(cfg)
    if cfg.model.init_weights:
        _init_from(model, cfg.model.init_weights)
    model = model.to(info.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scheduler = ConstantCosineLR(optimizer, t.iterations, round(o.constant_fraction * t.iterations), o.eta_min)
    scaler = torch.amp.GradScaler(info.device.type, enabled=t.amp == "fp16")
    return _Run(model, model, optimizer, scheduler, scaler)


def _restore(run: _Run, path: Path, cfg: RunConfig) -> None:
    ckpt = _load_checkpoint(path)
    stored, current = ckpt["model_config"], run.model.config.to_dict()
    if stored != current:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise ConfigError(f"checkpoint {path} holds a different model (fields differ: {', '.join(diff)}); "
                          "use the same model.preset / model.overrides or a new log.out_dir")
    if int(ckpt["iteration"]) > cfg.train.iterations:
        raise ConfigError(f"checkpoint {path} is at iteration {ckpt['iteration']}, beyond train.iterations="
                          f"{cfg.train.iterations}")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    # the schedule follows the current config (e.g. more iterations); an unchanged config resumes exactly
    run.scheduler.total_steps = cfg.train.iterations
    run.scheduler.constant_steps = round(cfg.optim.constant_fraction * cfg.train.iterations)
    run.scheduler.eta_min = cfg.optim.eta_min
    run.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    run.iteration = int(ckpt["iteration"])


def _save(run: _Run, cfg: RunConfig, info: DistInfo, log: _Logger) -> Path:
    """Checkpoint of ``run`` at ``run.iteration`` (rank 0 writes; every rank must call)."""
    path = Path(cfg.log.out_dir) / "checkpoints" / f"iter_{run.iteration:07d}.pt"
    _sync_buffers(run.model, info)
    digest = _check_ranks_agree(run.model, info)
    if info.is_main:
        t = cfg.train
        _atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "iteration": run.iteration, "model": run.model.state_dict(),
            "model_config": run.model.config.to_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "rng": _rng_state(),
            # the data position: the sampler restarts at this iteration (its order is a function of seed)
            "sampler": {"next_iteration": run.iteration, "seed": t.seed, "world_size": info.world_size,
                        "batch_size": t.batch_size, "grad_accum": t.grad_accum},
            "config": cfg.to_dict(), "weights_sha256": digest,
        }, path)
        if cfg.log.keep_checkpoints:
            for _, old in list_checkpoints(cfg.log.out_dir)[:-cfg.log.keep_checkpoints]:
                old.unlink(missing_ok=True)
        log.record(event="checkpoint", iteration=run.iteration, path=str(path), weights_sha256=digest)
    return path


def _step(run: _Run, batches: Iterator, cfg: RunConfig, info: DistInfo,
          autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean L1 loss (a device tensor)."""
    accum = cfg.train.grad_accum
    total = torch.zeros((), device=info.device)
    for micro in range(accum):
        inp, tgt = next(batches)
        inp = inp.to(info.device, non_blocking=True)
        tgt = tgt.to(info.device, non_blocking=True)
        last = micro == accum - 1
        with (run.net.no_sync() if info.enabled and not last else contextlib.nullcontext()):
            with autocast:
                out = run.net(inp)
            loss = F.l1_loss(out.float(), tgt) / accum
            run.scaler.scale(loss).backward()
        total += loss.detach()
    if cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.iteration += 1
    return total


def _train(cfg: RunConfig, resume: str | None, info: DistInfo) -> dict[str, Any]:
    t_cfg, d_cfg, l_cfg = cfg.train, cfg.data, cfg.log
    out_dir = Path(l_cfg.out_dir)
    autocast = _autocast(t_cfg.amp, info.device)
    ckpt_path = resolve_resume(resume, l_cfg.out_dir)
    if ckpt_path is None and list_checkpoints(out_dir):
        raise ConfigError(f"{out_dir} already holds checkpoints of an earlier run: continue it with --resume auto, "
                          "or choose a new log.out_dir")
    # Every input (data folders, model config, checkpoint) is checked before anything is written.
    train_set, val_set = _datasets(cfg)
    run = _new_run(cfg, info)
    if ckpt_path is not None:
        _restore(run, ckpt_path, cfg)
    start = run.iteration
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_config(cfg, out_dir)
    if info.enabled:
        run.net = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)

    sampler = ResumableSampler(len(train_set), batch_size=t_cfg.batch_size, seed=t_cfg.seed,
                               grad_accum=t_cfg.grad_accum, world_size=info.world_size, rank=info.rank,
                               crop=d_cfg.crop, progressive=d_cfg.progressive, start_iteration=start)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=t_cfg.batch_size, sampler=sampler, num_workers=d_cfg.num_workers,
        pin_memory=info.device.type == "cuda", generator=torch.Generator(),  # keeps the global RNG untouched
        prefetch_factor=2 if d_cfg.num_workers else None)
    batches = iter(loader)

    stop = t_cfg.stop_at or t_cfg.iterations
    log = _Logger(cfg, info, start)
    if ckpt_path is not None:
        log.write(f"resumed from {ckpt_path} at iteration {start}")
        log.record(event="resume", iteration=start, checkpoint=str(ckpt_path))
    else:
        log.record(event="start", iteration=0, world_size=info.world_size, device=str(info.device),
                   params=sum(p.numel() for p in run.model.parameters()), train_pairs=len(train_set))

    history: list[tuple[int, float]] = []
    val_history: list[tuple[int, float]] = []
    loss_sum, loss_count = torch.zeros((), dtype=torch.float64, device=info.device), 0
    t_last, it_last = time.perf_counter(), start
    while run.iteration < stop:
        lr = run.scheduler.get_last_lr()[0]
        crop = crop_at(run.iteration, d_cfg.crop, d_cfg.progressive)
        loss_sum += _step(run, batches, cfg, info, autocast)
        loss_count += 1
        done = run.iteration
        log.progress(1)
        if done % l_cfg.log_interval == 0 or done == stop:
            mean_loss = _all_mean([float(loss_sum) / loss_count], info)[0]  # one device sync per log
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(f"the loss became {mean_loss} at iteration {done} (lr {lr:.3g}); lower "
                                   "optim.lr, set train.amp=none or bf16, or enable train.grad_clip")
            now = time.perf_counter()
            ips = (done - it_last) / max(now - t_last, 1e-9)
            t_last, it_last = now, done
            history.append((done, mean_loss))
            log.record(iteration=done, loss=mean_loss, lr=lr, it_per_s=ips, crop=crop)
            if log.bar is not None:
                log.bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            loss_sum.zero_()
            loss_count = 0
        if val_set is not None and ((l_cfg.val_interval and done % l_cfg.val_interval == 0) or done == t_cfg.iterations):
            _sync_buffers(run.model, info)
            psnr = validate(run.model, val_set, info, autocast, d_cfg.val_max_images)
            val_history.append((done, psnr))
            log.record(iteration=done, val_psnr_y=psnr)
            log.write(f"iteration {done}: validation PSNR-Y {psnr:.2f} dB")
        if (l_cfg.ckpt_interval and done % l_cfg.ckpt_interval == 0) or done == stop:
            _save(run, cfg, info, log)

    _sync_buffers(run.model, info)
    digest = _check_ranks_agree(run.model, info)
    final = None
    if stop == t_cfg.iterations and info.is_main:
        from . import save_model
        final = out_dir / "model.safetensors"
        save_model(run.model, final, metadata={"iterations": str(stop), "train_config": json.dumps(cfg.to_dict())})
        log.record(event="finished", iteration=stop, weights=str(final), weights_sha256=digest)
        log.write(f"final weights: {final}")
    log.close()
    return {"iteration": stop, "start_iteration": start, "loss_history": history, "val_history": val_history,
            "weights_sha256": digest, "weights": str(final) if final else None, "out_dir": str(out_dir),
            "world_size": info.world_size, "model": run.model}


def _sync_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats). DDP broadcasts them before each
    forward, so after the last training step the other ranks still hold their own updates."""
    if info.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def _check_ranks_agree(model: torch.nn.Module, info: DistInfo) -> str:
    """Parameter digest of this rank; under DDP raises if any rank's weights differ."""
    digest = parameter_digest(model)
    if info.enabled:
        digests: list[str | None] = [None] * info.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights (digests {digests}); "
                               "this is a bug — please report it")
    return digest


def config_summary(cfg: RunConfig) -> str:
    """One-line description of a run for logs."""
    t = cfg.train
    return (f"{cfg.model.preset} on {', '.join(cfg.data.train)}: {t.iterations} it, batch {t.batch_size}"
            f"×{t.grad_accum}, crop {cfg.data.crop}, lr {cfg.optim.lr:g}→{cfg.optim.eta_min:g}, amp {t.amp}")


__all__ = ["train", "validate", "TrainingDiverged", "ConstantCosineLR", "parameter_digest", "list_checkpoints", "resolve_resume",
           "config_summary"]
