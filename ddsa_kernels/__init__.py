"""ddsa_kernels: the fused dual self-attention op of DDSA (and DRSformer / Restormer).

    from ddsa_kernels import dual_attention, available_backends
    out = dual_attention(q, k, v, temperature, weights, topk=(None, C * 7 // 10))
"""
from .backends import available_backends, build_info, check_backend_name, register_backend
from .module import DualSelfAttentionCore, ddsa_topk, drsformer_topk, restormer_topk
from .eager import eager_dual_attention
from .op import dual_attention
from .reference import reference_dual_attention

__all__ = [
    "dual_attention",
    "available_backends",
    "build_info",
    "check_backend_name",
    "register_backend",
    "reference_dual_attention",
    "eager_dual_attention",
    "DualSelfAttentionCore",
    "ddsa_topk",
    "drsformer_topk",
    "restormer_topk",
]
__version__ = "0.1.0"
