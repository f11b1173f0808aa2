"""The training loop: L1 loss, AdamW, constant-then-cosine lr, AMP, grad clipping and
accumulation, DDP via torchrun, periodic validation (PSNR-Y), logging and checkpoints.

    from ddsa_model.pipeline.train import load_config, train
    summary = train(load_config("run.yaml", ["train.iterations=1000"]), resume="auto")

Exact resume: a checkpoint holds model, optimizer, scheduler, grad scaler, the RNG states and
the iteration; the training data of iteration t is a pure function of (seed, t) (see
:class:`ddsa_model.pipeline.data.ResumableSampler`), so stopping at n and resuming reproduces the
uninterrupted run bit for bit on the same device and thread count.

Output folder: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one JSON record per log,
validation and checkpoint event), ``checkpoints/iter_XXXXXXX.pt``, ``model.safetensors`` (final
weights for ``ddsa-eval`` / ``ddsa-derain``) and TensorBoard events when tensorboard is installed.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from ddsa_model import build_model, save_model
from ddsa_model.atomic import atomic_write
from ddsa_model.pretrained import load_weights

from ..data import PairedImageDataset, ResumableSampler, crop_at
from ..inference import precision_context
from ..metrics import psnr_y, to_uint8
from ..synthetic_data import MixedDataset, SyntheticRainDataset, list_clean_images, split_holdout
from .checkpoints import (
    TrainState, checkpoint_path, list_checkpoints, prune_checkpoints, resolve_resume, restore, save_checkpoint,
)
from .config import ConfigError, RunConfig
from .distributed import (
    DistInfo, all_mean, check_ranks_agree, setup_distributed, sync_buffers, teardown_distributed,
)
from .schedule import ConstantCosineLR


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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
        total += psnr_y(to_uint8(out[0]), to_uint8(tgt))
    model.train(was_training)
    if info.enabled:
        t = torch.tensor([total], dtype=torch.float64, device=info.device)
        dist.all_reduce(t)
        total = float(t.item())
    return total / n


# ----------------------------------------------------------------------------- the loop
_AMP_DTYPES = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``train.amp`` ("none", "bf16", "fp16") on ``device``."""
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none on CPU")
    return precision_context(device, _AMP_DTYPES[amp])


def _build_model(cfg: RunConfig) -> torch.nn.Module:
    try:
        return build_model(cfg.model.preset, attention_backend=cfg.model.attention_backend, **cfg.model.overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from None


def _init_from(model: torch.nn.Module, path: str) -> None:
    """Copy weights from ``path`` (any file ``load_weights`` reads) into ``model``; every tensor must match."""
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
    info = setup_distributed(cfg.train.device)
    try:
        return _train(cfg, resume, info)
    finally:
        teardown_distributed(info)


def _datasets(cfg: RunConfig) -> tuple[torch.utils.data.Dataset, PairedImageDataset | None]:
    """The training set (real pairs, synthetic rain on clean images, or a weighted mix of both)
    and the validation set."""
    d = cfg.data
    max_crop = max([d.crop] + [c for _, c in d.progressive])
    parts: list[torch.utils.data.Dataset] = []
    weights: list[float] = []
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
        if d.synthetic[1:]:
            seen = set(clean)
            clean += [p for p in list_clean_images(d.synthetic[1:]) if p not in seen]
        parts.append(SyntheticRainDataset(clean, d.synthetic_preset, flips=d.flips, rot90=d.rot90, cache=d.cache))
        weights.append(d.synthetic_weight if d.train else 1.0)
    train_set = parts[0] if len(parts) == 1 else MixedDataset(parts, weights)
    val_set = (PairedImageDataset(d.val, train=False, cache=d.cache, max_items=d.val_max_images)
               if d.val else None)
    return train_set, val_set


def _new_state(cfg: RunConfig, info: DistInfo) -> TrainState:
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
    return TrainState(model, optimizer, scheduler, scaler)


def _save(run: TrainState, cfg: RunConfig, info: DistInfo, log: _Logger) -> Path:
    """Checkpoint of ``run`` at ``run.iteration`` (rank 0 writes; every rank must call)."""
    path = checkpoint_path(cfg.log.out_dir, run.iteration)
    sync_buffers(run.model, info)
    digest = check_ranks_agree(run.model, info)
    if info.is_main:
        t = cfg.train
        # the data position: the sampler restarts at this iteration (its order is a function of seed)
        sampler = {"next_iteration": run.iteration, "seed": t.seed, "world_size": info.world_size,
                   "batch_size": t.batch_size, "grad_accum": t.grad_accum}
        save_checkpoint(run, path, config=cfg.to_dict(), sampler=sampler, weights_sha256=digest)
        prune_checkpoints(cfg.log.out_dir, cfg.log.keep_checkpoints)
        log.record(event="checkpoint", iteration=run.iteration, path=str(path), weights_sha256=digest)
    return path


def _step(run: TrainState, net: torch.nn.Module, batches: Iterator, cfg: RunConfig, info: DistInfo,
          autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """One optimizer step over ``grad_accum`` micro-batches of ``net`` (``run.model`` or its DDP
    wrapper); returns the mean L1 loss (a device tensor)."""
    accum = cfg.train.grad_accum
    total = torch.zeros((), device=info.device)
    for micro in range(accum):
        inp, tgt = next(batches)
        inp = inp.to(info.device, non_blocking=True)
        tgt = tgt.to(info.device, non_blocking=True)
        last = micro == accum - 1
        with (net.no_sync() if info.enabled and not last else contextlib.nullcontext()):
            with autocast:
                out = net(inp)
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
    run = _new_state(cfg, info)
    if ckpt_path is not None:
        restore(run, ckpt_path, cfg)
    start = run.iteration
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_config(cfg, out_dir)
    net = run.model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
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
        loss_sum += _step(run, net, batches, cfg, info, autocast)
        loss_count += 1
        done = run.iteration
        log.progress(1)
        if done % l_cfg.log_interval == 0 or done == stop:
            mean_loss = all_mean([float(loss_sum) / loss_count], info)[0]  # one device sync per log
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
            sync_buffers(run.model, info)
            psnr = validate(run.model, val_set, info, autocast, d_cfg.val_max_images)
            val_history.append((done, psnr))
            log.record(iteration=done, val_psnr_y=psnr)
            log.write(f"iteration {done}: validation PSNR-Y {psnr:.2f} dB")
        if (l_cfg.ckpt_interval and done % l_cfg.ckpt_interval == 0) or done == stop:
            _save(run, cfg, info, log)

    sync_buffers(run.model, info)
    digest = check_ranks_agree(run.model, info)
    final = None
    if stop == t_cfg.iterations and info.is_main:
        final = out_dir / "model.safetensors"
        save_model(run.model, final, metadata={"iterations": str(stop), "train_config": json.dumps(cfg.to_dict())})
        log.record(event="finished", iteration=stop, weights=str(final), weights_sha256=digest)
        log.write(f"final weights: {final}")
    log.close()
    return {"iteration": stop, "start_iteration": start, "loss_history": history, "val_history": val_history,
            "weights_sha256": digest, "weights": str(final) if final else None, "out_dir": str(out_dir),
            "world_size": info.world_size, "model": run.model}


def config_summary(cfg: RunConfig) -> str:
    """One-line description of a run for logs."""
    t = cfg.train
    return (f"{cfg.model.preset} on {', '.join(cfg.data.train)}: {t.iterations} it, batch {t.batch_size}"
            f"×{t.grad_accum}, crop {cfg.data.crop}, lr {cfg.optim.lr:g}→{cfg.optim.eta_min:g}, amp {t.amp}")


__all__ = ["train", "validate", "TrainingDiverged", "config_summary"]
