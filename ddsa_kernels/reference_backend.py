"""The "reference" backend: the two-sweep algorithm written with plain PyTorch matmuls.

It follows the fused algorithm (Gram sweep, C×C epilogue, output sweep; and the explicit
backward of DESIGN §2), so the custom op's autograd path is exercised on every device. The
autograd oracle in tests is :func:`ddsa_kernels.reference.reference_dual_attention`, which
shares no code with this file.
"""
from __future__ import annotations

import torch

from .backends import Backend, register_backend
from .epilogue import backward_epilogue, forward_epilogue
from .reference import accumulation_dtype


def forward(q, k, v, temperature, weights, keep, eps):
    acc = accumulation_dtype(q.dtype)
    qa, ka = q.to(acc), k.to(acc)
    qk = qa @ ka.transpose(-2, -1)
    attn, probs, gram, norms = forward_epilogue(
        qk, qa.square().sum(-1), ka.square().sum(-1), temperature, weights, keep, eps
    )
    out = (attn @ v.to(acc)).to(q.dtype)
    return out, probs, gram, norms


def backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps):
    acc = probs.dtype
    go = grad_out.to(acc)
    grad_attn = go @ v.to(acc).transpose(-2, -1)
    attn = (probs * weights.view(1, 1, -1, 1, 1)).sum(dim=2)
    p, scale_q, scale_k, d_temp, d_w = backward_epilogue(grad_attn, probs, gram, norms, temperature, weights, eps)
    qa, ka = q.to(acc), k.to(acc)
    dq = p @ ka - scale_q.unsqueeze(-1) * qa
    dk = p.transpose(-2, -1) @ qa - scale_k.unsqueeze(-1) * ka
    dv = attn.transpose(-2, -1) @ go
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), d_temp, d_w


register_backend(
    Backend(
        name="reference",
        forward=forward,
        backward=backward,
        device_types=("cpu", "cuda", "mps", "xpu", "meta"),
        dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
    )
)
