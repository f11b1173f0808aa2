"""Small forward + backward cases of one backend, to run under ``compute-sanitizer``.

    compute-sanitizer --tool memcheck python ddsa_bench/gpu/sanitize_case.py --backend triton
    python ddsa_bench/gpu/sanitize_case.py --backend cpu --device cpu     (dry run, no sanitizer)

Cases: C = 48 and 96, odd N (1001), q/k/v as views of one qkv tensor shifted by one element
(storage offset 1, so no row is 16-byte aligned), in fp16, bf16 and fp32. Each output and gradient
must be finite and within a loose bound of the float64 reference (a sanity check: the accuracy
tests live in tests/; here the sanitizer is the judge). Exit status 0 when every case passed;
the sanitizer's own error count is what gpu/run.sh records.
"""
from __future__ import annotations

import argparse
import sys

import torch


def shifted_views(batch: int, heads: int, channels: int, pixels: int, dtype: torch.dtype, device: str, seed: int):
    """q, k, v (B, H, C, N) as chunks of one (B, 3·H·C, N) tensor whose storage starts one element in."""
    gen = torch.Generator().manual_seed(seed)
    numel = batch * 3 * heads * channels * pixels
    flat = torch.randn(numel + 1, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    qkv = flat[1:].view(batch, 3 * heads * channels, pixels)
    return tuple(t.view(batch, heads, channels, pixels) for t in qkv.chunk(3, dim=1))


def run_case(backend: str, channels: int, dtype: torch.dtype, device: str, pixels: int = 1001) -> float:
    """Forward + backward of ``backend``; returns max |error| / max |reference| over out and grads."""
    from ddsa_kernels import ddsa_topk, dual_attention
    from ddsa_kernels.testing import naive_dual_attention

    q, k, v = shifted_views(1, 2, channels, pixels, dtype, device, seed=channels)
    assert q.storage_offset() % 2 == 1
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    # detach() keeps the storage offset: the kernels see the shifted pointers.
    assert leaves[0].storage_offset() == q.storage_offset()
    temperature = torch.tensor([0.7, 1.3], device=device, requires_grad=True)
    weights = torch.tensor([0.4, 0.6], device=device, requires_grad=True)
    topk = ddsa_topk(channels)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = dual_attention(*leaves, temperature, weights, topk, backend=backend)
    got = [out, *torch.autograd.grad(out, [*leaves, temperature, weights], grad_out.to(device, dtype))]
    ref_in = [t.detach().cpu().double().requires_grad_() for t in (*leaves, temperature, weights)]
    ref_out = naive_dual_attention(*ref_in, topk)
    want = [ref_out, *torch.autograd.grad(ref_out, ref_in, grad_out)]
    worst = 0.0
    for a, b in zip(got, want):
        a = a.detach().cpu().double()
        if not torch.isfinite(a).all():
            return float("inf")
        worst = max(worst, ((a - b.detach()).abs().max() / b.abs().max().clamp_min(1e-6)).item())
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float16,bfloat16,float32")
    parser.add_argument("--channels", default="48,96")
    args = parser.parse_args(argv)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    failed = 0
    for channels in (int(c) for c in args.channels.split(",")):
        for dtype in dtypes:
            if args.device == "cpu" and dtype != torch.float32 and args.backend == "reference":
                continue
            err = run_case(args.backend, channels, dtype, args.device)
            # Loose: a relative error of up to ~10 % is the edge of bf16 on dq/dk's cancellation.
            ok = err <= 0.1
            failed += not ok
            print(f"[sanitize_case] {args.backend} C={channels} {str(dtype)[6:]}: relative error {err:.2e} "
                  f"{'ok' if ok else 'FAILED'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
