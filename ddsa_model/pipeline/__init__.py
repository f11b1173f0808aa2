"""ddsa_model.pipeline: everything around the network that reads, writes, trains or scores.

    data         paired rainy/clean folders, random crops, the resumable training sampler
    imageio      image files in (any common format, 16-bit and alpha kept) and PNG out, atomically
    png16        the small 16-bit PNG codec imageio falls back to
    synth        synthetic rain streaks
    metrics      PSNR / SSIM on the Y channel, as deraining papers report them
    iqa          no-reference quality (NIQE, BRISQUE)
    inference    whole-image and tiled inference
    evaluate     evaluation sets, per-image scores and reports (what ddsa-eval runs)
    train        the trainer: config, lr schedule, DDP, checkpoints, loop

It builds on the network package :mod:`ddsa_model` and never the other way round; the
command-line tools in :mod:`ddsa_model.cli` are thin wrappers around it.
"""
