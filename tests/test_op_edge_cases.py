"""The attention op's edge cases that tests/test_gpu_op.py gives the GPU backends, on every backend
this machine has: the "cpu" extension, Triton (compiled on a GPU, the interpreter on CPU), the
reference, and on a GPU the CUDA-capable ones too. Each against the float64 oracle with the
accuracy rule of tests/op_cases.py.

Cases: q, k, v views of one qkv tensor whose storage starts one element in (no row aligned) with an
odd N; rows with 0 < ‖row‖ < eps next to all-zero rows; the integer construction of exact score
ties at the top-k threshold (all ties kept).
"""
from __future__ import annotations

import pytest
import torch

from ddsa_kernels import _registry, ddsa_topk
from ddsa_kernels._registry import available_backends

import op_cases
from op_cases import make_inputs, params


def _backends() -> list[tuple[str, str]]:
    pairs = [(n, "cpu") for n in available_backends("cpu", op="dual_attention") if n != "eager"]
    if torch.cuda.is_available():
        pairs += [(n, "cuda") for n in available_backends("cuda", op="dual_attention") if n != "eager"]
    return pairs


BACKENDS = _backends()
IDS = [f"{n}-{d}" for n, d in BACKENDS]


def _interpreted(name: str, device: str) -> bool:
    return name == "triton" and device == "cpu"


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_qkv_views_at_storage_offset_one_and_odd_n(backend, device, dtype):
    if dtype not in _registry.backend_spec(backend, op="dual_attention").dtypes:
        pytest.skip(f"{backend} does not run {dtype}")
    channels, pixels = (16, 37) if _interpreted(backend, device) else (48, 1001)
    topk = ddsa_topk(channels)
    temperature, weights = params(2, len(topk))
    q64, k64, v64 = make_inputs(1, 2, channels, pixels, seed=21)
    q, _, _ = op_cases.lay_out(q64, k64, v64, dtype, device, "qkv_shifted")
    assert q.storage_offset() % 2 == 1  # not even 4-byte aligned in fp16: no vector loads
    op_cases.check_case(q64, k64, v64, temperature, weights, topk, backend=backend, device=device, dtype=dtype,
                        layout="qkv_shifted")


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
def test_zero_and_tiny_rows(backend, device):
    """All-zero rows and rows with 0 < ‖row‖ < eps follow F.normalize's max(‖x‖, eps) rule."""
    channels = 16 if _interpreted(backend, device) else 48
    q64, k64, v64 = make_inputs(1, 2, channels, 40, seed=9)
    q64[0, 0, 3] = 0.0
    q64[0, 0, 7] *= 1e-14
    k64[0, 0, 5] = 0.0
    k64[0, 1, 9] *= 1e-14
    assert 0 < q64[0, 0, 7].norm() < 1e-12 and 0 < k64[0, 1, 9].norm() < 1e-12
    topk = ddsa_topk(channels)
    temperature, weights = params(2, len(topk))
    got, _, _ = op_cases.check_case(q64, k64, v64, temperature, weights, topk, backend=backend, device=device)
    assert all(torch.isfinite(g).all() for g in got)


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
def test_exact_ties_at_the_threshold_are_all_kept(backend, device):
    """k rows drawn from a pool of 3 integer vectors: exact scores with 3 tie groups per row; the
    backend's own probabilities are non-zero on every tied column."""
    channels = 16 if _interpreted(backend, device) else 48
    q64, k64, v64 = op_cases.tie_inputs(1, 2, channels, 37)
    topk = (1, 5, 9, 13) if channels == 16 else (1, 5, 17, 33)
    temperature, weights = params(2, len(topk))
    op_cases.check_case(q64, k64, v64, temperature, weights, topk, backend=backend, device=device)
    impl = _registry.implementation("dual_attention", backend)
    probs = impl.forward(*(t.to(device, torch.float32) for t in (q64, k64, v64)), temperature.float().to(device),
                         weights.float().to(device), topk, 1e-12)[1].cpu()
    op_cases.assert_ties_kept(probs, q64, k64, temperature, topk)
