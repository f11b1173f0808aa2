"""ddsa-train: train a DDSA model from a YAML config.

    ddsa-train --config ddsa_model/configs/ddsa_small_rainl.yaml
    ddsa-train --config run.yaml train.iterations=2000 data.crop=96 log.out_dir=runs/try2
    ddsa-train --config run.yaml --resume auto          # continue from the latest checkpoint
    torchrun --nproc_per_node 4 -m ddsa_model.cli.train --config run.yaml   # DDP

Overrides are ``section.key=value`` with YAML values (``data.train=[a, b]``, ``train.amp=bf16``).
"""
from __future__ import annotations

import argparse
import os
import sys

from ddsa_model.pipeline.data import DatasetError
from ddsa_model.pipeline.train import ConfigError, TrainingDiverged, config_summary, load_config, train

PROG = "ddsa-train"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Train a DDSA deraining model (L1 loss, AdamW, constant-then-cosine lr). "
                    "Multi-GPU / multi-node: launch with torchrun.",
        epilog="Config keys: model.{preset,attention_backend,overrides} data.{train,val,crop,progressive,"
               "flips,rot90,small_images,cache,num_workers,val_max_images,max_train_pairs} "
               "optim.{lr,betas,weight_decay,eta_min,constant_fraction} train.{iterations,batch_size,"
               "grad_accum,seed,amp,grad_clip,device,stop_at,num_threads} log.{out_dir,log_interval,val_interval,"
               "ckpt_interval,keep_checkpoints,tensorboard,progress}",
    )
    ap.add_argument("--config", "-c", help="YAML run config (see ddsa_model/configs/example.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    ap.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                    help="resume from a checkpoint file/folder, or 'auto' (default when given without a "
                         "value): the latest checkpoint in log.out_dir, else start fresh")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume and "=" in args.resume and not os.path.exists(args.resume):
        # "--resume train.iterations=10": argparse took an override as the optional value
        args.overrides.insert(0, args.resume)
        args.resume = "auto"
    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            import yaml
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        if rank == 0:
            print(f"{PROG}: {config_summary(cfg)} -> {cfg.log.out_dir}", file=sys.stderr, flush=True)
        summary = train(cfg, resume=args.resume)
    except (ConfigError, DatasetError, FileNotFoundError, TrainingDiverged) as exc:
        if rank == 0 or os.environ.get("WORLD_SIZE") is None:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue with --resume auto (from the last checkpoint)", file=sys.stderr)
        return 130
    if rank == 0:
        where = summary["weights"] or f"checkpoint at iteration {summary['iteration']}"
        print(f"{PROG}: done: {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
