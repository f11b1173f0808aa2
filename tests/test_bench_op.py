"""pytest-benchmark suite of the op and a small model step, run only on request:

    pytest tests/test_bench_op.py -m bench                       # CPU, or CUDA when present
    pytest tests/test_bench_op.py -m bench --benchmark-json=out.json

Every implementation (eager, torch.compile(eager), each available package backend) at a few
shapes, forward and forward+backward. The committed figures come from ``ddsa-bench``; this suite is
for quick A/B checks with pytest-benchmark's statistics and ``--benchmark-compare``.
"""
from __future__ import annotations

import pytest
import torch

from ddsa_bench import common
from ddsa_bench.ops import dual_attention as op_bench

pytestmark = pytest.mark.bench

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.float16 if DEVICE.type == "cuda" else torch.float32
SHAPES = [
    op_bench.OpShape("infer-256", "inference", 1, 1, 48, 256),
    op_bench.OpShape("train-L1-b4", "training", 4, 1, 48, 128),
    op_bench.OpShape("train-L4-b4", "level", 4, 8, 48, 16),
]
IMPLS = ["eager", "compile(eager)", *op_bench.package_backends(DEVICE)]


def _sync(fn):
    def run():
        out = fn()
        common.synchronize(DEVICE)
        return out
    return run


@pytest.mark.parametrize("mode", op_bench.MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_op(benchmark, shape, impl, mode):
    from ddsa_kernels import dual_attention
    from ddsa_kernels.testing import eager_dual_attention

    inputs, grad_out = op_bench.make_inputs(shape, DTYPE, DEVICE, requires_grad=(mode == "fwd+bwd"))
    topk = shape.topk()
    if impl == "compile(eager)":
        torch._dynamo.reset()
        fn = torch.compile(eager_dual_attention, dynamic=False)
    else:
        def fn(q, k, v, t, w, topk):
            return dual_attention(q, k, v, t, w, topk, backend=impl)
    run = _sync(op_bench._step(fn, inputs, grad_out, topk, mode))
    reference = run()  # warm-up (and compile)
    benchmark.extra_info.update(
        shape=shape.label(), dtype=str(DTYPE), device=common.device_name(DEVICE),
        floor_bytes=common.dram_floor_bytes(shape.batch, shape.heads, shape.channels, shape.pixels,
                                            inputs[0].element_size(), mode),
    )
    out = benchmark(run)
    # a benchmark of a wrong result is worthless: compare with the warm-up's result
    first = reference if mode == "fwd" else reference[0]
    again = out if mode == "fwd" else out[0]
    torch.testing.assert_close(again, first)


@pytest.mark.parametrize("backend", ["eager", "auto"])
def test_model_train_step(benchmark, backend):
    ddsa_model = pytest.importorskip("ddsa_model")
    torch.manual_seed(0)
    model = ddsa_model.build_model("ddsa-small", attention_backend=backend).to(DEVICE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(2, 3, 64, 64, device=DEVICE)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(model(x), x)
        loss.backward()
        opt.step()
        return loss

    step()
    loss = benchmark.pedantic(_sync(step), rounds=5, warmup_rounds=1)
    assert torch.isfinite(loss)
