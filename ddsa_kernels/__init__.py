"""ddsa_kernels: fused kernels for deraining transformers (DDSA, DRSformer, Restormer).

    from ddsa_kernels import dual_attention, available_backends
    out = dual_attention(q, k, v, temperature, weights, topk=(None, C * 7 // 10))

Layout: one folder per op under ``ops/`` (``ops/dual_attention/``: the public function and its autograd in
``__init__``, ``naive.py`` oracle and baseline, ``reference.py`` torch backend, ``triton.py``,
``extension.py`` for the compiled ``_C``), ``_registry.py`` the table of backends, ``module.py``
the nn.Modules.
"""
from ._registry import available_backends, build_info, check_backend_name, resolve_backend
from .ops.dual_attention import dual_attention, eager_dual_attention, reference_dual_attention
from .module import DualSelfAttentionCore, ddsa_topk, drsformer_topk, restormer_topk
from .patch import PatchReport, patch, unpatch

__all__ = [
    "dual_attention",
    "available_backends",
    "build_info",
    "check_backend_name",
    "resolve_backend",
    "reference_dual_attention",
    "eager_dual_attention",
    "DualSelfAttentionCore",
    "ddsa_topk",
    "drsformer_topk",
    "restormer_topk",
    "patch",
    "unpatch",
    "PatchReport",
]
__version__ = "0.1.0"
